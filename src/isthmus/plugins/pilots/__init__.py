"""pilots: pools of pilot jobs that run child edges inside batch allocations (docs/pilots.md)."""
