"""OAuth proxy mode, hardening against the real oidc-provider, on the in-memory store and on a
real Redis: redirect URIs with user info are refused at authorize as at registration, and an
authorization code presented by the wrong client is refused without being used up."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402


@pytest.fixture(scope="module", params=["memory", "redis"])
def base(request, start_sidecar, start_idp, work, everything):
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis").url
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base,
                          f"oauth-hardening-{request.param}", redis_url=redis_url)
    return dep.sidecar.base


@pytest.mark.parametrize("uri", [
    "http://evil.example@127.0.0.1:9/callback",
    "http://evil.example:secret@127.0.0.1:9/callback",
    "http://evil.example@127.0.0.1:4444/callback",
])
def test_redirect_uri_with_user_info_is_refused_at_authorize(base, uri):
    c = Client(base)
    _, challenge = pkce()
    r = httpx.get(c.authorize_url(challenge, redirect_uri=uri), timeout=10)
    assert r.status_code == 400, r.text
    assert "location" not in r.headers
    assert "<form" not in r.text, "the consent page must not be shown"


def test_code_presented_by_another_client_is_not_used_up(base):
    owner, other = Client(base), Client(base, name="another client")
    verifier, final = owner.login()
    code, _ = browser.code_of(final)
    stolen = other.exchange(code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    r = owner.exchange(code, verifier)
    assert r.status_code == 200, r.text
    assert owner.exchange(code, verifier).status_code == 400  # and it is single-use still
