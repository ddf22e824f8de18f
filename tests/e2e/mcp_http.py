"""Raw MCP Streamable HTTP over httpx, for tests that must see status codes and headers that the
real MCP clients hide."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

PROTOCOL_VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def rpc_body(method: str, params: dict | None = None, id: int | None = 1) -> dict:
    body = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if id is not None:
        body["id"] = id
    return body


def parse_rpc_response(response: httpx.Response) -> dict:
    """The JSON-RPC message of a POST answer, plain JSON or the first `data:` of an SSE stream."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:].strip())
        raise AssertionError(f"SSE answer without data: {response.text!r}")
    return response.json()


def initialize_body() -> dict:
    return rpc_body("initialize", {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcp-warden-e2e-raw", "version": "0"},
    })


def open_session(client: httpx.Client, url: str, token: str | None,
                 extra: dict | None = None) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    headers = {"Accept": ACCEPT, **bearer(token), **(extra or {})}
    r = client.post(url, json=initialize_body(), headers=headers)
    assert r.status_code == 200, (r.status_code, r.text)
    session = r.headers["mcp-session-id"]
    assert parse_rpc_response(r)["result"]["serverInfo"]
    headers.update({"Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION})
    r = client.post(url, json=rpc_body("notifications/initialized", id=None), headers=headers)
    assert r.status_code == 202, (r.status_code, r.text)
    return session


def call(client: httpx.Client, url: str, token: str | None, session: str, method: str,
         params: dict | None = None, id: int = 2, extra: dict | None = None) -> httpx.Response:
    """One JSON-RPC request inside a session; returns the raw response."""
    headers = {
        "Accept": ACCEPT,
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": PROTOCOL_VERSION,
        **bearer(token),
        **(extra or {}),
    }
    return client.post(url, json=rpc_body(method, params, id), headers=headers)


async def _python_client(url: str, token: str | None, tool: str, args: dict,
                         extra_headers: dict) -> dict:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {**bearer(token), **extra_headers}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool(tool, args)
                return {
                    "tools": sorted(t.name for t in tools.tools),
                    "is_error": bool(result.is_error),
                    "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
                    "structured": result.structured_content,
                }


def python_client_call(url: str, token: str | None, tool: str, args: dict | None = None,
                       extra_headers: dict | None = None, timeout: float = 30) -> dict:
    """The Python `mcp` SDK client: initialize, list tools, call `tool`. Raises on failure."""
    async def bounded():
        return await asyncio.wait_for(
            _python_client(url, token, tool, args or {}, extra_headers or {}), timeout)
    return asyncio.run(bounded())


PEERS = Path(__file__).resolve().parents[1] / "peers"


def sdk_client_argv(url: str, tool: str, args: dict | None = None) -> list[str]:
    """argv of the TypeScript SDK client script (token via MCP_TOKEN in the environment)."""
    return ["node", str(PEERS / "sdk-client.mjs"), url, tool, json.dumps(args or {})]


if __name__ == "__main__":
    print(python_client_call(sys.argv[1], None, sys.argv[2]))
