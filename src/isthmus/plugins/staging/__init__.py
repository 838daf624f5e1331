"""File staging between clients and the edge: streamed, checksummed, resumable, sandboxed."""
