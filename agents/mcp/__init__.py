"""MCP (Model Context Protocol) servers' tools for agents: the schema a tool's arguments
are parsed with (schema), one server's connection (connection), every server (hub)."""
