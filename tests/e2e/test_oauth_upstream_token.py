"""`forward.upstreamTokenHeader`: the app receives the signed-in user's upstream access token
(the real oidc-provider introspects it as active for that user), client copies of the header
never arrive, the token is renewed upstream near expiry, and after `/revoke` the request is
refused. The app is tests/peers/wsgi_echo.py, which answers with the request headers it saw."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import UPSTREAM_CLIENT_ID, UPSTREAM_CLIENT_SECRET, Client, ProxyDeployment  # noqa: E402

HEADER = "X-Upstream-Token"
FORWARD = {"forward": {"upstreamTokenHeader": HEADER, "claimsToHeaders": {"sub": "X-Auth-Subject"}}}


@pytest.fixture(scope="module")
def deployment(start_sidecar, start_idp, work, echo):
    return ProxyDeployment(start_sidecar, start_idp, work, echo, "oauth-upstream-token",
                           spec_overrides=FORWARD)


def seen_by_app(base: str, access_token: str, headers=()) -> httpx.Response:
    return httpx.post(f"{base}/mcp", content=b"{}", timeout=15,
                      headers=[("authorization", f"Bearer {access_token}"), *headers])


def introspect(dep: ProxyDeployment, token: str) -> dict:
    r = httpx.post(f"{dep.idp_issuer}/token/introspection", data={"token": token},
                   auth=(UPSTREAM_CLIENT_ID, UPSTREAM_CLIENT_SECRET), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_app_gets_the_users_upstream_token_and_loses_it_on_revoke(deployment):
    base = deployment.sidecar.base
    c = Client(base)
    tokens = c.full_login()
    r = seen_by_app(base, tokens["access_token"],
                    [(HEADER, "forged"), ("X_Upstream_Token", "forged-too"), ("x-upstream-token", "3"),
                     ("X-Echo-Back", "1")])
    assert r.status_code == 200, r.text
    env = r.json()
    assert r.headers["x-auth-subject"] == "alice", "the app echoes headers back ..."
    assert HEADER.lower() not in {k.lower() for k in r.headers}, "... but not the upstream token"
    upstream = env["HTTP_X_UPSTREAM_TOKEN"]
    assert "forged" not in upstream and "," not in upstream, "client copies are removed"
    assert upstream != tokens["access_token"], "the provider's token, not ours"
    info = introspect(deployment, upstream)
    assert info["active"] is True and info["sub"] == env["HTTP_X_AUTH_SUBJECT"] == "alice", info
    assert info["client_id"] == UPSTREAM_CLIENT_ID, info
    # The same token on the next request (cached, no renewal while fresh).
    assert seen_by_app(base, tokens["access_token"]).json()["HTTP_X_UPSTREAM_TOKEN"] == upstream
    cached = ("mcp_warden_oauth_upstream_tokens_total", frozenset({("result", "cached")}))
    assert deployment.sidecar.metrics()[cached] >= 1

    r = httpx.post(f"{base}/revoke", data={"token": tokens["access_token"], "client_id": c.client_id})
    assert r.status_code == 200
    r = seen_by_app(base, tokens["access_token"])
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text
    print(f"\nupstream token after /revoke: active={introspect(deployment, upstream)['active']}")


def test_another_users_session_gets_its_own_token(deployment):
    base = deployment.sidecar.base
    c = Client(base)
    verifier, final = c.login(user="bob")
    code, _ = browser.code_of(final)
    bob = c.exchange(code, verifier).json()
    alice = Client(base).full_login()
    tokens = {}
    for who, t in (("bob", bob), ("alice", alice)):
        env = seen_by_app(base, t["access_token"]).json()
        tokens[who] = env["HTTP_X_UPSTREAM_TOKEN"]
        assert introspect(deployment, tokens[who])["sub"] == who
    assert tokens["bob"] != tokens["alice"]


def test_a_token_near_expiry_is_renewed_upstream(start_sidecar, start_idp, work, echo):
    # Upstream tokens live 33 s and are renewed within 30 s of expiry: fresh for 3 s.
    dep = ProxyDeployment(start_sidecar, start_idp, work, echo, "oauth-upstream-renew",
                          spec_overrides=FORWARD, idp_options={"access_token_ttl": 33})
    base = dep.sidecar.base
    tokens = Client(base).full_login()
    first = seen_by_app(base, tokens["access_token"]).json()["HTTP_X_UPSTREAM_TOKEN"]
    time.sleep(4)
    r = seen_by_app(base, tokens["access_token"])
    assert r.status_code == 200, r.text
    renewed = r.json()["HTTP_X_UPSTREAM_TOKEN"]
    assert renewed != first, "renewed upstream once near expiry"
    info = introspect(dep, renewed)
    assert info["active"] is True and info["sub"] == "alice", info
    assert info["exp"] - time.time() > 25, info
    samples = dep.sidecar.metrics()
    count = lambda result: samples[("mcp_warden_oauth_upstream_tokens_total", frozenset({("result", result)}))]  # noqa: E731
    assert count("renewed") >= 1 and count("loaded") >= 1, samples
