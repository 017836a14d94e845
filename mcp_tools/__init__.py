"""The trading API as Model Context Protocol tools (stdio and streamable HTTP)."""
