"""The wire between bridge and edge: frames (protocol), one peer per link, one call per request."""
