"""A FastMCP server for mcp-warden's end-to-end tests.

Usage: python fastmcp_server.py PORT [--jwt ISSUER]

Serves MCP Streamable HTTP at http://127.0.0.1:PORT/mcp. With `--jwt ISSUER` the server
protects itself, FastMCP's own way (no mcp-warden): its JWT verifier checks ES256 tokens
from ISSUER's JWKS (`aud` = the MCP URL, scope `mcp:tools`) and it serves its own
protected-resource metadata naming ISSUER. The `whoami` tool returns every
request header the server received (all of them, `Authorization` and `Cookie` included), so a
test can check what the sidecar forwards and what it must never forward.
"""

import sys

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_http_headers

def auth_provider(port: int, issuer: str):
    from fastmcp.server.auth import RemoteAuthProvider
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    base = f"http://127.0.0.1:{port}"
    verifier = JWTVerifier(jwks_uri=f"{issuer}/jwks", issuer=issuer, audience=f"{base}/mcp",
                           algorithm="ES256", required_scopes=["mcp:tools"])
    return RemoteAuthProvider(token_verifier=verifier, authorization_servers=[issuer],
                              base_url=base)


PORT = int(sys.argv[1])
JWT_ISSUER = sys.argv[3] if sys.argv[2:3] == ["--jwt"] else None
mcp = FastMCP("mcp-warden-e2e", auth=auth_provider(PORT, JWT_ISSUER) if JWT_ISSUER else None)


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
    mcp.run(transport="http", host="127.0.0.1", port=PORT, show_banner=False)
