"""The Mahavishnu MCP server. Importing this package imports nothing heavy (no MCP SDK)."""

__version__ = "0.1.0"
