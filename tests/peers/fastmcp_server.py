"""A FastMCP server for mcp-warden's end-to-end tests.

Usage: python fastmcp_server.py PORT

Serves MCP Streamable HTTP at http://127.0.0.1:PORT/mcp. The `whoami` tool returns every
request header the server received (all of them, `Authorization` and `Cookie` included), so a
test can check what the sidecar forwards and what it must never forward.
"""

import sys

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_http_headers

mcp = FastMCP("mcp-warden-e2e")


@mcp.tool
def whoami() -> dict[str, str]:
    """Return the HTTP request headers this server received, names lower-cased."""
    return {name.lower(): value for name, value in get_http_headers(include_all=True).items()}


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool
def delete_everything() -> str:
    """A tool whose name matches `delete_*` policy rules; deletes nothing."""
    return "nothing deleted"


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False)
