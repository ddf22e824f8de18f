"""`spec.jwt.introspection`: opaque access tokens from the real oidc-provider are checked at its
RFC 7662 endpoint (found in its metadata), `active: false` is a 401, `aud`/scope/`exp` are checked
as for JWTs, answers are cached (the IdP is asked once per token), and with the IdP down an
uncached token gets 503 while a cached one keeps working."""

from __future__ import annotations

import httpx
import pytest

from harness import Idp, jwt_policy

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "e2e", "version": "0"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INTROSPECTOR = {
    "client_id": "warden-introspect",
    "client_secret": "warden-introspect-secret",
    "grant_types": ["client_credentials"],
    "redirect_uris": [],
    "response_types": [],
    "token_endpoint_auth_method": "client_secret_basic",
}


def start(start_idp, start_sidecar, work, upstream: str, sidecar_env=None, **introspection):
    idp = start_idp(clients=[INTROSPECTOR], access_token_format="opaque")

    def policy(base: str) -> dict:
        port = int(base.rsplit(":", 1)[1])
        secret = work / f"sidecar-{port}" / "secrets" / "introspection"
        secret.mkdir(parents=True, exist_ok=True)
        (secret / "secret").write_text(INTROSPECTOR["client_secret"] + "\n")
        doc = jwt_policy("introspect", f"{base}/mcp", idp.issuer)
        doc["spec"]["jwt"]["introspection"] = {
            "clientId": INTROSPECTOR["client_id"],
            "clientSecretRef": {"name": "introspection", "key": "secret"},
            **introspection,
        }
        return doc

    return idp, start_sidecar(upstream, policy, env=sidecar_env)


def call(sidecar, token: str) -> httpx.Response:
    return httpx.post(sidecar.url, json=INIT, headers={**HEADERS, "authorization": f"Bearer {token}"},
                      timeout=15)


def sample(sidecar, name: str, **labels) -> float:
    want = frozenset({"policy": "introspect", **labels}.items())
    return sum(v for (n, l), v in sidecar.metrics().items() if n == name and want <= l)


@pytest.fixture(scope="module")
def setup(start_idp, start_sidecar, work, everything):
    return start(start_idp, start_sidecar, work, everything.base)


def test_opaque_token_is_introspected_and_cached(setup):
    idp, sidecar = setup
    token = idp.token(sidecar.url)
    assert "." not in token, "the IdP issues opaque tokens"
    before = sample(sidecar, "mcp_warden_introspections_total", result="active")
    for _ in range(3):
        r = call(sidecar, token)
        assert r.status_code == 200, r.text
        assert "serverInfo" in r.text
    assert sample(sidecar, "mcp_warden_introspections_total", result="active") == before + 1, \
        "one introspection, then the cache"


def test_revoked_token_is_inactive(setup):
    idp, sidecar = setup
    token = idp.token(sidecar.url)
    r = httpx.post(f"{idp.issuer}/token/revocation", data={"token": token},
                   auth=(Idp.SERVICE_CLIENT["client_id"], Idp.SERVICE_CLIENT["client_secret"]))
    assert r.status_code == 200, r.text
    r = call(sidecar, token)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "not active" in r.headers["www-authenticate"]
    assert sample(sidecar, "mcp_warden_requests_total", outcome="unauthorized", reason="inactive") >= 1


def test_unknown_opaque_token_is_refused(setup):
    _, sidecar = setup
    r = call(sidecar, "made-up-opaque-token")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_audience_and_scope_are_checked(setup):
    idp, sidecar = setup
    r = call(sidecar, idp.token("http://127.0.0.1:9/other-resource"))
    assert r.status_code == 401
    assert "not intended for this resource" in r.headers["www-authenticate"]
    r = call(sidecar, idp.token(sidecar.url, scope="mcp:read"))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_jwts_are_verified_locally_unless_always(setup, start_idp, start_sidecar, work, everything):
    idp, sidecar = setup
    # A JWT signed with the IdP's key that the IdP never issued: verified locally, accepted.
    minted = idp.mint(sidecar.url)
    assert call(sidecar, minted).status_code == 200
    # With `always`, every token is introspected: this IdP vouches only for its opaque tokens
    # (it answers `unsupported_token_type` for JWTs), so the JWT is refused.
    idp2, strict = start(start_idp, start_sidecar, work, everything.base, always=True)
    r = call(strict, idp2.mint(strict.url))
    assert r.status_code == 401 and "not active" in r.headers["www-authenticate"]
    assert call(strict, idp2.token(strict.url)).status_code == 200


def test_idp_down_uncached_503_cached_keeps_working(start_idp, start_sidecar, work, everything):
    idp, sidecar = start(start_idp, start_sidecar, work, everything.base, cacheSeconds=300)
    used = idp.token(sidecar.url)
    unused = idp.token(sidecar.url)
    assert call(sidecar, used).status_code == 200
    idp.stop()
    assert call(sidecar, used).status_code == 200, "a cached answer keeps working"
    r = call(sidecar, unused)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"] == "temporarily_unavailable"
    assert sample(sidecar, "mcp_warden_introspections_total", result="error") >= 1
