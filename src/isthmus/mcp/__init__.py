"""MCP: the bridge's plugins as tools for AI agents, with the caller's identity and rights (docs/mcp.md)."""
