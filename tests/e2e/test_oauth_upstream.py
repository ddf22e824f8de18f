"""Upstream token lifecycle with the real oidc-provider: upstream access tokens that expire are
renewed with the upstream refresh token during our refresh grant (and only then), an
unreachable provider gives 503 without consuming the client's refresh token, and a provider
that no longer knows the grant ends the family."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

from harness import PEERS, START_TIMEOUT, Idp, wait_until  # noqa: E402
from oauth_support import Client, ProxyDeployment  # noqa: E402

UPSTREAM_TTL = 35  # the proxy renews upstream tokens 30 s before expiry: stale after ~5 s


class ShortLivedIdp(Idp):
    """The shared IdP peer, with upstream access tokens that live UPSTREAM_TTL seconds."""

    def start(self):
        self.jwks_file.write_text(json.dumps({"keys": [k.private_jwk for k in self.keys]}))
        config = self.work / f"idp-{self.port}.json"
        config.write_text(json.dumps({
            "port": self.port, "jwksFile": str(self.jwks_file), "accessTokenAlg": "ES256",
            "accessTokenTtl": UPSTREAM_TTL, "resourceScopes": "mcp:tools", "clients": self.clients,
        }))
        self.proc = self.procs.start("idp-short", ["node", PEERS / "idp.mjs", config], cwd=PEERS)
        wait_until(lambda: "ready http://" in self.proc.log_text(), START_TIMEOUT, "idp", self.proc)


@pytest.fixture(scope="module")
def dep(start_sidecar, procs, work, everything):
    return ProxyDeployment(start_sidecar, lambda **kw: ShortLivedIdp(procs, work, **kw), work,
                           everything.base, "oauth-upstream")


def test_expired_upstream_token_is_renewed(dep):
    c = Client(dep.sidecar.base)
    tokens = c.full_login()
    time.sleep(UPSTREAM_TTL - 30 + 1.5)
    r = c.refresh(tokens["refresh_token"])  # upstream token stale: renewed at the IdP
    assert r.status_code == 200, r.text
    dep.idp.stop()
    try:
        # The renewed upstream token is fresh, so this refresh needs no IdP.
        r = c.refresh(r.json()["refresh_token"])
        assert r.status_code == 200, r.text
    finally:
        dep.idp.start()


def test_unreachable_then_forgetful_provider(dep):
    c = Client(dep.sidecar.base)
    tokens = c.full_login()
    started = time.monotonic()
    dep.idp.stop()
    r = c.refresh(tokens["refresh_token"])  # upstream still fresh: no IdP call
    assert r.status_code == 200, r.text
    token = r.json()["refresh_token"]
    time.sleep(max(0, started + UPSTREAM_TTL - 30 + 1.5 - time.monotonic()))
    for _ in range(2):  # the provider is down: 503, and the client's token is not used up
        r = c.refresh(token)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
    dep.idp.start()  # a fresh provider process: it no longer knows the upstream grant
    r = c.refresh(token)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "upstream" not in r.text.lower() or "identity provider" in r.text
    r = c.refresh(token)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", "the family is gone"
