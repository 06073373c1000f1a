"""Ask the spend data over the Model Context Protocol: a read-only MCP server over the host's store.

Needs the ``mcp`` extra (``pip install 'connector-host[mcp]'``); ``connector-host mcp`` serves it.
"""

from __future__ import annotations
