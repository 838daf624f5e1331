"""Node-level cluster state, placed in the machine room, with health rolled up."""
