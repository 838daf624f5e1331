"""The plugin runtime: the host that loads plugins, its /_edge routes, and request dispatch into them."""
