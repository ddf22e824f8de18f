"""The README's first command: `scripts/demo` brings up the IdP, an MCP server and the sidecar
with the demo policy. Its `--smoke` mode checks a refused call and a tool call through the
sidecar with a real token, then stops everything; this runs it on free ports."""

from __future__ import annotations

import os
import subprocess

from harness import REPO, SIDECAR_BIN, free_port


def test_demo_smoke_run_passes():
    env = {
        **os.environ,
        "DEMO_IDP_PORT": str(free_port()),
        "DEMO_MCP_PORT": str(free_port()),
        "DEMO_PORT": str(free_port()),
        "DEMO_ADMIN_PORT": str(free_port()),
        "MCP_WARDEN_SIDECAR_BIN": str(SIDECAR_BIN),
    }
    run = subprocess.run([REPO / "scripts" / "demo", "--smoke"], env=env, capture_output=True,
                         text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert f"MCP URL (protected):  http://127.0.0.1:{env['DEMO_PORT']}/mcp" in output, output
    assert "smoke test passed" in output, output


def test_demo_proxy_smoke_run_signs_in_with_mcp_remote():
    """`scripts/demo --proxy --smoke`: the sidecar in oauthProxy mode in front of the local
    provider; mcp-remote signs in through the login and consent pages (scripted browser) and
    lists server-everything's tools."""
    env = {
        **os.environ,
        "DEMO_IDP_PORT": str(free_port()),
        "DEMO_MCP_PORT": str(free_port()),
        "DEMO_PORT": str(free_port()),
        "DEMO_ADMIN_PORT": str(free_port()),
        "MCP_WARDEN_SIDECAR_BIN": str(SIDECAR_BIN),
    }
    run = subprocess.run([REPO / "scripts" / "demo", "--proxy", "--smoke"], env=env,
                         capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    mcp_url = f"http://127.0.0.1:{env['DEMO_PORT']}/mcp"
    assert f"MCP URL (protected):   {mcp_url}" in output, output
    assert "npx @modelcontextprotocol/inspector" in output
    assert f"npx mcp-remote {mcp_url}" in output
    assert "smoke test passed: mcp-remote signed in" in output, output
