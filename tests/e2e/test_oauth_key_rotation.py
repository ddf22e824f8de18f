"""Key rotation in oauthProxy mode: the operator rotates the key Secret by putting a new key
first and keeping the old one after it. The sidecar must notice the changed Secret files (not
only policy edits), sign with the new key from then on, and keep accepting tokens and opening
stored sessions made with the old keys."""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

from oauth_support import Client, ProxyDeployment  # noqa: E402

MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "e2e", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def dep(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-rotation")


def kids(base: str) -> list[str]:
    return [k["kid"] for k in httpx.get(f"{base}/jwks", timeout=5).json()["keys"]]


def replace(path: Path, text: str):
    """Atomic replacement, as a Secret volume update is."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def mcp_status(base: str, token: str) -> int:
    return httpx.post(f"{base}/mcp", json=MCP_INIT, timeout=10,
                      headers={**MCP_HEADERS, "authorization": f"Bearer {token}"}).status_code


def test_rotated_keys_are_picked_up_without_a_restart(dep):
    base = dep.sidecar.base
    client = Client(base)
    before = client.full_login()
    (old_kid,) = kids(base)
    assert jwt.get_unverified_header(before["access_token"])["kid"] == old_kid

    keys = dep.sidecar.dir / "secrets" / "keys"
    new_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    replace(keys / "signing.pem", new_pem + dep.keys.signing_pem)
    replace(keys / "encryption.keys",
            f"k2:{base64.b64encode(os.urandom(32)).decode()}\n{dep.keys.encryption}")

    deadline = time.monotonic() + 15
    while len(kids(base)) < 2:
        assert time.monotonic() < deadline, "the rotated signing key was not picked up"
        time.sleep(0.2)
    new_kid, kept = kids(base)
    assert kept == old_kid and new_kid != old_kid

    # A token signed before the rotation still opens the MCP endpoint.
    assert mcp_status(base, before["access_token"]) == 200
    # The refresh token's session was sealed with the old encryption key and still opens;
    # the new access token is signed with the new key and works too.
    r = client.refresh(before["refresh_token"])
    assert r.status_code == 200, r.text
    after = r.json()
    assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid
    assert mcp_status(base, after["access_token"]) == 200

    reloads = dep.sidecar.metrics()
    assert reloads[("mcp_warden_policy_reloads_total", frozenset({("result", "success")}))] >= 1
