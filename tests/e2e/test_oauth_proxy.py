"""OAuth proxy mode against the real oidc-provider (no dynamic registration; one static
confidential client) and a real MCP server: the facade's documents, a complete flow by hand,
and every attack the requirements name."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import MCP_HEADERS, MCP_INIT, Client, ProxyDeployment, consent_page, pkce  # noqa: E402


@pytest.fixture(scope="module")
def deployment(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-basic")


@pytest.fixture(scope="module")
def base(deployment):
    return deployment.sidecar.base


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_metadata_documents(base):
    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
                 "/.well-known/oauth-authorization-server/mcp"]:
        r = httpx.get(base + path)
        assert r.status_code == 200, path
        doc = r.json()
        assert doc["issuer"] == base, "issuer is the MCP origin, no trailing slash"
        assert doc["authorization_endpoint"] == f"{base}/authorize"
        assert doc["token_endpoint"] == f"{base}/token"
        assert doc["registration_endpoint"] == f"{base}/register"
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["response_types_supported"] == ["code"]
        assert "none" in doc["token_endpoint_auth_methods_supported"]
        assert doc["client_id_metadata_document_supported"] is True
        assert doc["authorization_response_iss_parameter_supported"] is True
    prm = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == f"{base}/mcp"
    assert prm["authorization_servers"] == [base]
    jwks = httpx.get(f"{base}/jwks").json()
    assert [k["kty"] for k in jwks["keys"]] == ["EC"] and "d" not in jwks["keys"][0]


def test_unauthenticated_mcp_request_is_challenged(base):
    r = httpx.post(f"{base}/mcp", json=MCP_INIT, headers=MCP_HEADERS)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith(
        f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"')


def test_registration_echoes_and_omits_absent_fields(base):
    r = httpx.post(f"{base}/register", json={
        "redirect_uris": ["http://127.0.0.1:33418/"], "token_endpoint_auth_method": "none",
        "application_type": "native", "grant_types": ["authorization_code", "refresh_token"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["redirect_uris"] == ["http://127.0.0.1:33418/"]
    assert body["application_type"] == "native"
    assert "client_secret" not in body and "client_name" not in body
    assert None not in body.values()
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("uri", [
    "https://evil.example/callback", "http://evil.example/cb", "http://127.0.0.1:5/a/../b",
    "http://user@127.0.0.1:5/cb", "http://127.0.0.1:5/cb#frag", "javascript:alert(1)"])
def test_hostile_redirect_uri_is_refused_at_registration(base, uri):
    r = httpx.post(f"{base}/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_redirect_uri"


def test_unregistered_redirect_uri_at_authorize_is_not_followed(base):
    c = Client(base)
    _, challenge = pkce()
    url = c.authorize_url(challenge, redirect_uri="http://127.0.0.1:9/other")
    r = httpx.get(url)
    assert r.status_code == 400
    assert "location" not in r.headers, "never redirect to an unregistered URI"
    assert "not registered" in r.text


def test_full_flow_then_mcp_call_with_our_token(deployment, base):
    c = Client(base)
    verifier, final = c.login()
    code, params = browser.code_of(final)
    assert code and params["state"] == "st-1" and params["iss"] == base, final
    r = c.exchange(code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mcp:tools"
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "ES256" and header["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["iss"] == base and claims["aud"] == f"{base}/mcp"
    assert claims["sub"] == "alice" and claims["client_id"] == c.client_id
    assert claims["exp"] - claims["iat"] == 900
    # The upstream's tokens never reach the client.
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert deployment.idp.issuer not in str(claims)
    r = httpx.post(f"{base}/mcp", json=MCP_INIT,
                   headers={**MCP_HEADERS, "authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 200, r.text
    assert "serverInfo" in r.text


def test_code_replay_is_refused(base):
    c = Client(base)
    verifier, final = c.login()
    code, _ = browser.code_of(final)
    assert c.exchange(code, verifier).status_code == 200
    again = c.exchange(code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_concurrent_code_redemption_has_one_winner(base):
    c = Client(base)
    verifier, final = c.login()
    code, _ = browser.code_of(final)
    results = []
    threads = [threading.Thread(target=lambda: results.append(c.exchange(code, verifier).status_code))
               for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [200] + [400] * 7


def test_wrong_pkce_verifier_is_refused(base):
    c = Client(base)
    _, final = c.login()
    code, _ = browser.code_of(final)
    other_verifier, _ = pkce()
    r = c.exchange(code, other_verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_plain_pkce_and_missing_pkce_are_refused(base):
    c = Client(base)
    for extra in [{"code_challenge_method": "plain"}, {"code_challenge": ""}]:
        _, challenge = pkce()
        r = httpx.get(c.authorize_url(challenge, **extra))
        assert r.status_code == 303, r.text
        q = query(r.headers["location"])
        assert q["error"] == "invalid_request" and q["iss"] == base and q["state"] == "st-1"


def test_foreign_resource_is_invalid_target(deployment, base):
    c = Client(base)
    _, challenge = pkce()
    r = httpx.get(c.authorize_url(challenge, resource="https://other.example/mcp"))
    q = query(r.headers["location"])
    assert q["error"] == "invalid_target" and q["iss"] == base
    # Trailing slash variant of our own resource is accepted: on to the sign-in.
    r = httpx.get(c.authorize_url(challenge, resource=f"{base}/mcp/"))
    assert r.status_code == 303 and r.headers["location"].startswith(deployment.idp.issuer)


def test_stale_client_id_gets_401_invalid_client(base):
    c = Client(base)
    c.client_id = "no-such-client-0123456789"
    _, challenge = pkce()
    r = httpx.get(c.authorize_url(challenge))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = c.token(grant_type="refresh_token", refresh_token="x.y")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_consent_page_is_protected(base):
    c = Client(base, name="<b>Evil</b> Corp")
    with httpx.Client(timeout=15) as user_agent:
        r = consent_page(c, user_agent)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert "&lt;b&gt;Evil&lt;/b&gt; Corp" in r.text and "<b>Evil</b>" not in r.text
    assert "<strong>127.0.0.1</strong>" in r.text, "the redirect host is shown"
    assert "mcp:tools" in r.text
    assert "<dt>Signed in as</dt><dd>alice</dd>" in r.text, "the signed-in user is named"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("mcpw-tx="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie


def test_consent_csrf(base):
    c = Client(base)
    with httpx.Client(timeout=15) as user_agent:
        page = consent_page(c, user_agent)
        cookie_name, cookie_value = "mcpw-tx", user_agent.cookies["mcpw-tx"]
    form = browser.forms(page.text)[0]
    fields = {n: v for n, v, _ in form["inputs"]}
    # A cross-site POST carries no cookie (SameSite=Lax): refused.
    r = httpx.post(f"{base}/consent", data={**fields, "decision": "approve"})
    assert r.status_code == 403
    # The cookie of this flow with a forged CSRF value: refused.
    r = httpx.post(f"{base}/consent", data={**fields, "csrf": fields["csrf"][:-2] + "AA", "decision": "approve"},
                   cookies={cookie_name: cookie_value})
    assert r.status_code == 403
    # Another flow's cookie with this flow's form: refused.
    with httpx.Client(timeout=15) as user_agent:
        consent_page(c, user_agent)
        other_cookie = user_agent.cookies["mcpw-tx"]
    r = httpx.post(f"{base}/consent", data={**fields, "decision": "approve"}, cookies={cookie_name: other_cookie})
    assert r.status_code == 403
    # The genuine pair works, once.
    r = httpx.post(f"{base}/consent", data={**fields, "decision": "approve"}, cookies={cookie_name: cookie_value})
    assert r.status_code == 303 and "state=" in r.headers["location"]
    r = httpx.post(f"{base}/consent", data={**fields, "decision": "approve"}, cookies={cookie_name: cookie_value})
    assert r.status_code == 400


def test_denied_consent_returns_access_denied_with_iss(base):
    c = Client(base)
    _, final = c.login(decision="deny")
    q = query(final)
    assert q["error"] == "access_denied" and q["iss"] == base and q["state"] == "st-1"
    assert "code" not in q


def test_forged_upstream_state_is_refused(base):
    r = httpx.get(f"{base}/callback", params={"code": "x", "state": "forged-state"})
    assert r.status_code == 400 and "location" not in r.headers


def test_refresh_rotates_and_reuse_revokes_the_family(deployment, base):
    c = Client(base)
    first = c.full_login()
    r1 = c.refresh(first["refresh_token"])
    assert r1.status_code == 200, r1.text
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"]
    time.sleep(11)  # beyond the grace window
    r2 = c.refresh(second["refresh_token"])
    assert r2.status_code == 200
    third = r2.json()
    before = deployment.sidecar.metrics()
    reuse = c.refresh(first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # The whole family is gone, including the newest token.
    dead = c.refresh(third["refresh_token"])
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    after = deployment.sidecar.metrics()
    key = ("mcp_warden_oauth_refresh_reuse_total", frozenset())
    assert after[key] == before.get(key, 0) + 1


def test_concurrent_refreshes_of_one_family_keep_the_user_signed_in(base):
    c = Client(base)
    tokens = c.full_login()
    results = []
    threads = [threading.Thread(target=lambda: results.append(c.refresh(tokens["refresh_token"])))
               for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
    new_tokens = {r.json()["refresh_token"] for r in results}
    assert len(new_tokens) == 1, "every duplicate gets the winner's token"
    r = c.refresh(new_tokens.pop())
    assert r.status_code == 200, "the family survived"


def test_revocation_ends_the_family(base):
    c = Client(base)
    tokens = c.full_login()
    r = httpx.post(f"{base}/revoke", data={"token": tokens["refresh_token"], "client_id": c.client_id})
    assert r.status_code == 200
    assert c.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    # The session's access token is refused at once (in-memory store: one process).
    r = httpx.post(f"{base}/mcp", json=MCP_INIT,
                   headers={**MCP_HEADERS, "authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    # Unknown tokens are fine (RFC 7009).
    r = httpx.post(f"{base}/revoke", data={"token": "nothing", "client_id": c.client_id})
    assert r.status_code == 200


def test_confidential_client_must_authenticate(base):
    c = Client(base, auth_method="client_secret_basic")
    assert c.secret
    tokens = c.full_login()
    r = httpx.post(f"{base}/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                          "client_id": c.client_id})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.post(f"{base}/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                   auth=(c.client_id, "wrong"))
    assert r.status_code == 401


def test_cimd_pointing_at_private_address_is_rejected(base):
    _, challenge = pkce()
    for client_id in ["https://127.0.0.1:8443/client.json", "https://10.0.0.5/client.json",
                      "https://169.254.169.254/latest/meta-data", "http://example.com/client.json"]:
        r = httpx.get(f"{base}/authorize", params={
            "response_type": "code", "client_id": client_id, "redirect_uri": "http://127.0.0.1:9/cb",
            "code_challenge": challenge, "code_challenge_method": "S256"})
        assert r.status_code == 401, client_id
        assert r.json()["error"] == "invalid_client"


def test_bodies_are_bounded(base):
    r = httpx.post(f"{base}/register", content=b"{" + b" " * 70_000 + b"}",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_metrics_are_exported(deployment):
    m = deployment.sidecar.metrics()
    names = {name for name, _ in m}
    for family in ["mcp_warden_oauth_registrations_total", "mcp_warden_oauth_authorizations_total",
                   "mcp_warden_oauth_consents_total", "mcp_warden_oauth_token_grants_total",
                   "mcp_warden_oauth_refresh_reuse_total", "mcp_warden_oauth_revocations_total"]:
        assert family in names, family
    assert m[("mcp_warden_oauth_token_grants_total",
              frozenset({("grant_type", "authorization_code"), ("result", "success")}))] >= 1
    assert m[("mcp_warden_oauth_consents_total", frozenset({("decision", "csrf_failed")}))] >= 1
