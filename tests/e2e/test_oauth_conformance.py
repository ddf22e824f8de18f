"""The MCP conformance suite's `authorization` mode (pinned 0.2.0-alpha.12, Node 22) against the
sidecar's authorization-server facade: metadata endpoint and the authorization-code grant,
driven through consent and the real oidc-provider login by the scripted browser."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import conformance_oauth  # noqa: E402
from harness import free_port  # noqa: E402
from oauth_support import ProxyDeployment  # noqa: E402


@pytest.fixture(scope="module")
def deployment(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-conformance")


def test_conformance_authorization_mode(deployment, tmp_path):
    base = deployment.sidecar.base
    port = free_port()
    r = httpx.post(f"{base}/register", json={
        "client_name": "MCP conformance suite", "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]})
    assert r.status_code == 201, r.text
    status, output, checks = conformance_oauth.run(base, r.json()["client_id"], f"{base}/mcp", port,
                                                   tmp_path / "results")
    by_id = {c["id"]: c for c in checks}
    assert "authorization-code-grant" in by_id, output
    assert "authorization-server-metadata-endpoint: 2 passed, 0 failed" in output, output[-3000:]
    assert len(checks) >= 3
    not_passed = [c for c in checks if c["status"] != "SUCCESS"]
    assert not not_passed, f"{not_passed}\n{output[-3000:]}"
    assert status == 0, output[-3000:]
