"""Real MCP clients log in through the OAuth proxy (real oidc-provider upstream, real
server-everything behind the sidecar), driven headless by the scripted browser, and end with
MCP calls through the sidecar: mcp-remote-client, the TypeScript SDK and the Python `mcp` SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import ProxyDeployment  # noqa: E402

PEERS = Path(__file__).resolve().parents[1] / "peers"


@pytest.fixture(scope="module")
def deployment(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-clients")


def grants(deployment) -> float:
    m = deployment.sidecar.metrics()
    return m[("mcp_warden_oauth_token_grants_total",
              frozenset({("grant_type", "authorization_code"), ("result", "success")}))]


def test_mcp_remote_client(deployment, tmp_path):
    env = {
        **os.environ,
        "PATH": f"{PEERS / 'browser'}:{os.environ['PATH']}",
        "BROWSER": str(PEERS / "browser" / "x-www-browser"),
        "BROWSER_LOG": str(tmp_path / "browser.log"),
        "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-remote"),
    }
    before = grants(deployment)
    started = time.monotonic()
    # stdin stays open (a pipe nobody closes): mcp-remote shuts down when its stdin ends.
    proc = subprocess.Popen(
        ["node", PEERS / "node_modules/mcp-remote/dist/client.js", deployment.sidecar.url,
         "--transport", "http-only"],
        env=env, cwd=PEERS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    timer = threading.Timer(120, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
        proc.stdin.close()
    elapsed = time.monotonic() - started
    browser_log = (tmp_path / "browser.log").read_text() if (tmp_path / "browser.log").exists() else ""
    assert proc.returncode == 0, f"{out[-4000:]}\n--- browser ---\n{browser_log}"
    assert "Connected successfully" in out
    assert '"name": "echo"' in out, "tools/list through the sidecar with the proxy's token"
    assert "code=yes" in browser_log
    assert grants(deployment) == before + 1
    print(f"mcp-remote-client full flow: {elapsed:.2f}s")


def test_typescript_sdk_client(deployment):
    started = time.monotonic()
    proc = subprocess.run(
        ["node", PEERS / "sdk-oauth-client.mjs", deployment.sidecar.url, "echo",
         json.dumps({"message": "hello through the proxy"})],
        cwd=PEERS, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "echo" in out["tools"]
    assert "hello through the proxy" in json.dumps(out["result"])
    assert out["hadRefreshToken"] is True
    print(f"TS SDK full flow + tool call: {elapsed:.2f}s")


async def _python_flow(url: str) -> dict:
    from mcp import ClientSession
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    redirect = "http://127.0.0.1:9/python/callback"

    class Memory:
        tokens = None
        client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, info):
            self.client = info

    landed: dict = {}

    async def redirect_handler(authorization_url: str):
        final = await asyncio.to_thread(browser.run, authorization_url, "approve", redirect)
        landed["url"] = final

    async def callback_handler():
        code, params = browser.code_of(landed["url"])
        return AuthorizationCodeResult(code=code, state=params.get("state"), iss=params.get("iss"))

    storage = Memory()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-warden e2e Python client", redirect_uris=[redirect],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    async with create_mcp_http_client(auth=auth) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("echo", {"message": "python via proxy"})
                return {"tools": [t.name for t in tools.tools], "error": bool(result.is_error),
                        "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
                        "refresh": bool(storage.tokens and storage.tokens.refresh_token)}


def test_python_sdk_client(deployment):
    started = time.monotonic()
    out = asyncio.run(asyncio.wait_for(_python_flow(deployment.sidecar.url), 90))
    elapsed = time.monotonic() - started
    assert "echo" in out["tools"] and not out["error"]
    assert any("python via proxy" in t for t in out["text"])
    assert out["refresh"]
    print(f"Python SDK full flow + tool call: {elapsed:.2f}s")


def test_mcp_remote_stdio_proxy_tool_call(deployment, tmp_path):
    """`mcp-remote` as the stdio bridge desktop clients run: log in, then a tools/call."""
    env = {
        **os.environ,
        "PATH": f"{PEERS / 'browser'}:{os.environ['PATH']}",
        "BROWSER": str(PEERS / "browser" / "x-www-browser"),
        "BROWSER_LOG": str(tmp_path / "browser.log"),
        "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-remote"),
    }
    proc = subprocess.Popen(
        ["node", PEERS / "node_modules/mcp-remote/dist/proxy.js", deployment.sidecar.url,
         "--transport", "http-only"],
        env=env, cwd=PEERS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    timer = threading.Timer(120, proc.kill)
    timer.start()

    def rpc(message: dict) -> dict | None:
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        if "id" not in message:
            return None
        for line in proc.stdout:
            reply = json.loads(line)
            if reply.get("id") == message["id"]:
                return reply
        raise AssertionError("mcp-remote closed its output")

    try:
        init = rpc({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "e2e-stdio", "version": "1"}}})
        assert "serverInfo" in init["result"], init
        rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
        result = rpc({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"message": "via mcp-remote"}}})
        assert "via mcp-remote" in json.dumps(result["result"]), result
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    assert "code=yes" in (tmp_path / "browser.log").read_text()
