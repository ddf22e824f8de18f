"""What the app learns about the caller, seen by a WSGI app (wsgiref, which folds `-` and `_` in
header names): identity headers that cannot be spoofed by name variants, forwarding headers set
by the sidecar only, claims that cannot be headers refused, `email` only when verified."""

from __future__ import annotations

import httpx
import pytest

from harness import jwt_policy


@pytest.fixture(scope="module")
def sidecar(start_sidecar, idp, echo):
    return start_sidecar(echo, lambda base: jwt_policy(
        "e2e-forward", f"{base}/mcp", idp.issuer,
        forward={"claimsToHeaders": {"sub": "X-Auth-Subject", "email": "X-Auth-Email",
                                     "name": "X-Auth-Name"}}))


def environ(sidecar, token, headers=()):
    r = httpx.post(sidecar.url, content=b"{}",
                   headers=[("Authorization", f"Bearer {token}"), *headers], timeout=10)
    return r


def test_name_variants_of_identity_headers_do_not_reach_the_app(sidecar, idp):
    token = idp.mint(sidecar.url, sub="alice")
    r = environ(sidecar, token, [("X-Auth_Subject", "admin"), ("x_auth_subject", "root"),
                                 ("X-AUTH-NAME", "Mallory"), ("X_Auth_Email", "m@evil.test")])
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["HTTP_X_AUTH_SUBJECT"] == "alice"
    assert "HTTP_X_AUTH_NAME" not in env and "HTTP_X_AUTH_EMAIL" not in env


def test_forwarding_headers_are_set_by_the_sidecar(sidecar, idp):
    token = idp.mint(sidecar.url)
    r = environ(sidecar, token, [
        ("X-Forwarded-For", "203.0.113.9"), ("X_Forwarded_For", "203.0.113.10"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Prefix", "/admin"),
        ("X-Real-IP", "203.0.113.11"), ("Forwarded", "for=203.0.113.12;proto=https")])
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_PROTO"] == "http"  # the resource URL's scheme
    assert env["HTTP_X_FORWARDED_HOST"] == sidecar.base.removeprefix("http://")
    for gone in ["HTTP_X_FORWARDED_PREFIX", "HTTP_X_REAL_IP", "HTTP_FORWARDED"]:
        assert gone not in env, gone


@pytest.mark.parametrize("name", ["Alice\r\nX-Auth-Subject: admin", "Alice\nAdmin", "Alice\x00"])
def test_claim_that_cannot_be_a_header_refuses_the_request(sidecar, idp, name):
    token = idp.mint(sidecar.url, name=name)
    r = environ(sidecar, token)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert "name" in r.json()["error_description"]
    samples = sidecar.metrics()
    key = ("mcp_warden_requests_total",
           frozenset({("policy", "e2e-forward"), ("outcome", "forbidden"),
                      ("reason", "unforwardable_claim")}))
    assert samples.get(key, 0) >= 1, [k for k in samples if k[0] == key[0]]


def test_non_ascii_claims_travel_as_utf8(sidecar, idp):
    token = idp.mint(sidecar.url, name="José")
    r = environ(sidecar, token)
    assert r.status_code == 200, r.text
    # WSGI decodes header bytes as latin-1.
    assert r.json()["HTTP_X_AUTH_NAME"].encode("latin-1").decode() == "José"


@pytest.mark.parametrize("verified, forwarded", [(True, True), (False, False), (None, False),
                                                 ("true", False)])
def test_email_is_forwarded_only_when_verified(sidecar, idp, verified, forwarded):
    token = idp.mint(sidecar.url, email="alice@example.com", email_verified=verified)
    r = environ(sidecar, token, [("X-Auth-Email", "mallory@evil.test")])
    assert r.status_code == 200, r.text
    assert r.json().get("HTTP_X_AUTH_EMAIL") == ("alice@example.com" if forwarded else None)
