"""`access` and `scopeGrants` with GitHub's facts: organisation and team membership and the
primary verified email, read from the user API as GitHub serves them (paged lists, `read:org` /
`user:email` scopes). GitHub itself can't be reached from the tests, so a stand-in on loopback
answers GitHub's OAuth and REST endpoints with recorded-shape documents; the sidecar is the
real binary, pointed at it through `issuer` (discovery) with `provider: github`."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, KeyMaterial, pkce, proxy_policy  # noqa: E402

FILLER_ORGS = [{"login": f"org-{i}", "id": i} for i in range(100)]  # a full first page
USERS = {
    # login: (id, orgs, teams, emails)
    "octo": (1, FILLER_ORGS + [{"login": "Acme", "id": 500}],
             [{"slug": "platform", "name": "Platform", "organization": {"login": "acme"}}],
             [{"email": "octo@else.test", "primary": True, "verified": True}]),
    "dev": (2, [], [], [{"email": "old@corp.test", "primary": False, "verified": True},
                        {"email": "dev@corp.test", "primary": True, "verified": True}]),
    "stranger": (3, [{"login": "other", "id": 7}], [],
                 [{"email": "stranger@corp.test", "primary": True, "verified": False}]),
}


class FakeGitHub(BaseHTTPRequestHandler):
    base = ""
    next_user = "octo"
    seen_scopes: list[str] = []

    def _json(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _user(self):
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        return token.removeprefix("gho_") if token.startswith("gho_") else None

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/.well-known/openid-configuration":
            b = type(self).base
            return self._json({"issuer": b, "authorization_endpoint": f"{b}/login/oauth/authorize",
                               "token_endpoint": f"{b}/login/oauth/access_token",
                               "userinfo_endpoint": f"{b}/user"})
        if url.path == "/login/oauth/authorize":
            type(self).seen_scopes.append(q.get("scope", ""))
            back = f"{q['redirect_uri']}?{urlencode({'code': 'c-' + type(self).next_user, 'state': q['state']})}"
            self.send_response(302)
            self.send_header("location", back)
            self.end_headers()
            return None
        login = self._user()
        if login not in USERS:
            return self._json({"message": "Bad credentials"}, 401)
        uid, orgs, teams, emails = USERS[login]
        page = int(q.get("page", "1"))
        per = int(q.get("per_page", "30"))
        paged = lambda items: items[(page - 1) * per: page * per]  # noqa: E731
        if url.path == "/user":
            return self._json({"login": login, "id": uid, "name": login.title(), "email": None})
        if url.path == "/user/orgs":
            return self._json(paged(orgs))
        if url.path == "/user/teams":
            return self._json(paged(teams))
        if url.path == "/user/emails":
            return self._json(emails)
        return self._json({"message": "Not Found"}, 404)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        # GitHub answers token errors with status 200 and an `error` field.
        if not form.get("code", "").startswith("c-"):
            return self._json({"error": "bad_verification_code"})
        return self._json({"access_token": "gho_" + form["code"][2:], "token_type": "bearer",
                           "scope": "read:org,read:user,user:email"})

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def github():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    FakeGitHub.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeGitHub
    server.shutdown()


@pytest.fixture(scope="module")
def base(start_sidecar, work, everything, github):
    keys = KeyMaterial()

    def policy(base: str) -> dict:
        keys.write(work / f"sidecar-{base.rsplit(':', 1)[1]}" / "secrets")
        doc = proxy_policy("oauth-github", base, github.base, provider="github", scopes=[],
                           extraAuthorizeParams={},
                           access={"orgs": ["acme"], "emailDomains": ["corp.test"]},
                           scopeGrants={"mcp:tools": {"anyAuthenticatedUser": True},
                                        "mcp:admin": {"teams": ["acme/platform"]}})
        doc["spec"]["resource"]["scopesSupported"] = ["mcp:tools", "mcp:admin"]
        return doc

    return start_sidecar(everything.base, policy).base


def sign_in(base: str, github, login: str) -> tuple[str, Client, str]:
    github.next_user = login
    c = Client(base)
    verifier, challenge = pkce()
    final = browser.run(c.authorize_url(challenge, scope="mcp:tools mcp:admin"),
                        stop_at=c.redirect_uri)
    return final, c, verifier


def test_the_preset_asks_github_for_the_scopes_the_entries_read(base, github):
    sign_in(base, github, "dev")
    assert github.seen_scopes[-1] == "read:user read:org user:email"


def test_org_membership_found_on_a_later_page_and_team_grant(base, github):
    final, c, verifier = sign_in(base, github, "octo")
    code, _ = browser.code_of(final)
    assert code, final
    tokens = c.exchange(code, verifier).json()
    assert tokens["scope"] == "mcp:tools mcp:admin"
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"] == "1"


def test_primary_verified_email_domain_admits_without_team_grant(base, github):
    final, c, verifier = sign_in(base, github, "dev")
    code, _ = browser.code_of(final)
    assert code, final
    tokens = c.exchange(code, verifier).json()
    assert tokens["scope"] == "mcp:tools"
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["email"] == "dev@corp.test" and claims["email_verified"] is True


def test_other_org_and_unverified_email_are_refused(base, github):
    final, _, _ = sign_in(base, github, "stranger")
    assert final.startswith(f"{base}/callback"), final
    with httpx.Client(timeout=15) as user_agent:
        github.next_user = "stranger"
        c = Client(base)
        _, challenge = pkce()
        page = browser.until_page(c.authorize_url(challenge), lambda r: r.status_code == 403,
                                  client=user_agent)
    assert "Access denied" in page.text and "stranger" in page.text
