"""Secret rotation in oauthProxy mode. Keys: the operator rotates the key Secret by putting a
new key first and keeping the old one after it; the sidecar must notice the changed Secret files
(not only policy edits), sign with the new key from then on, and keep accepting tokens and
opening stored sessions made with the old keys. Redis password: after the password changes in
Redis and in the Secret, the sidecar reconnects with the new one. Generated keys (no key
Secrets) stay the same across policy reloads."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

from oauth_support import MCP_HEADERS, MCP_INIT, Client, ProxyDeployment  # noqa: E402


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


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout.strip()


def registers(base: str) -> int:
    return httpx.post(f"{base}/register", timeout=10, json={
        "client_name": "rotation", "redirect_uris": ["http://127.0.0.1:9/callback"],
        "token_endpoint_auth_method": "none"}).status_code


def test_rotated_redis_password_is_used_for_new_connections(start_sidecar, start_idp, work,
                                                             everything, start_redis):
    redis = start_redis()
    assert redis_cli(redis.port, "ACL", "SETUSER", "warden", "on", ">pass-one", "~*", "&*",
                     "+@all") == "OK"
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-redis-rotation",
                          redis_url=redis.url, redis_auth=("warden", "pass-one"))
    base = dep.sidecar.base
    assert registers(base) == 201

    # Rotate: Redis first (and drop the open connections), then the Secret.
    assert redis_cli(redis.port, "ACL", "SETUSER", "warden", "resetpass", ">pass-two") == "OK"
    redis_cli(redis.port, "CLIENT", "KILL", "USER", "warden")
    replace(dep.sidecar.dir / "secrets" / "redis-auth" / "password", "pass-two\n")

    deadline = time.monotonic() + 15
    while (status := registers(base)) != 201:
        assert status == 503, f"unexpected status {status} while Redis auth is rotating"
        assert time.monotonic() < deadline, "the sidecar never used the new Redis password"
        time.sleep(0.3)
    # The new connections really authenticate as warden with the new password.
    clients = redis_cli(redis.port, "CLIENT", "LIST")
    assert "user=warden" in clients, clients


def test_generated_local_keys_survive_a_policy_reload(start_sidecar, start_idp, work, everything):
    """Without key Secrets (a local run) the keys are generated once per process: editing the
    policy must not invalidate the tokens and sessions issued before the edit."""
    import json

    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-local-keys",
                          signingKeySecretRef=None, encryptionKeySecretRef=None)
    base = dep.sidecar.base
    client = Client(base)
    before = client.full_login()
    generated = kids(base)

    doc = json.loads(dep.sidecar.policy_path.read_text())
    doc["spec"]["resource"]["name"] = "Renamed tools"
    dep.sidecar.write_policy(doc)
    metadata = f"{base}/.well-known/oauth-protected-resource/mcp"
    deadline = time.monotonic() + 15
    while httpx.get(metadata, timeout=5).json().get("resource_name") != "Renamed tools":
        assert time.monotonic() < deadline, "the edited policy was not reloaded"
        time.sleep(0.2)

    assert kids(base) == generated
    assert mcp_status(base, before["access_token"]) == 200
    r = client.refresh(before["refresh_token"])
    assert r.status_code == 200, r.text


def wait_for_kids(base: str, n: int):
    deadline = time.monotonic() + 15
    while len(kids(base)) < n:
        assert time.monotonic() < deadline, f"{base} did not publish {n} signing keys"
        time.sleep(0.2)


def test_a_published_key_signs_only_once_active_so_no_replica_rejects_it(
        start_sidecar, start_idp, work, everything):
    """The operator's rotation: a new key is published with a future `# active-at:` time, and
    the replicas see the updated Secret at different moments. Until the time passes, the
    replica that has the new file keeps signing with the old key, so a replica still on the
    old file accepts its tokens; after it, both sign with the new key and accept both."""
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-staged-rotation",
                          replicas=2)
    a, b = dep.sidecars
    client = Client(a.base)
    before = client.full_login()
    (old_kid,) = kids(a.base)

    new_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    new_enc = f"k2:{base64.b64encode(os.urandom(32)).decode()}\n"

    def publish(sidecar, active_at: str):
        keys = sidecar.dir / "secrets" / "keys"
        replace(keys / "signing.pem", f"# active-at: {active_at}\n{new_pem}"
                f"# active-at: 2020-01-01T00:00:00Z\n{dep.keys.signing_pem}")
        replace(keys / "encryption.keys", f"# active-at: {active_at}\n{new_enc}"
                f"# active-at: 2020-01-01T00:00:00Z\n{dep.keys.encryption}")

    # Replica a sees the published key first; b still has the old Secret.
    publish(a, "2099-01-01T00:00:00Z")
    wait_for_kids(a.base, 2)
    new_kid = next(k for k in kids(a.base) if k != old_kid)
    r = client.refresh(before["refresh_token"])
    assert r.status_code == 200, r.text
    during = r.json()
    assert jwt.get_unverified_header(during["access_token"])["kid"] == old_kid, \
        "a key that is not active yet must not sign"
    assert mcp_status(b.base, during["access_token"]) == 200

    # Both replicas have the key and its time has passed: the new key signs and b accepts it.
    publish(b, "2099-01-01T00:00:00Z")
    wait_for_kids(b.base, 2)
    publish(a, "2021-01-01T00:00:00Z")
    deadline = time.monotonic() + 15
    while True:
        r = client.refresh(during["refresh_token"])
        assert r.status_code == 200, r.text
        during = r.json()
        if jwt.get_unverified_header(during["access_token"])["kid"] == new_kid:
            break
        assert time.monotonic() < deadline, "the active key never signed"
        time.sleep(0.3)
    assert mcp_status(b.base, during["access_token"]) == 200
    assert mcp_status(a.base, before["access_token"]) == 200
