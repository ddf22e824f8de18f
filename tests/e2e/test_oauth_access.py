"""Who may sign in through the OAuth proxy and which scopes they get (`spec.oauthProxy.access`
and `scopeGrants`), against the real oidc-provider (accounts with chosen claims) and a real MCP
server whose `get-env` tool a rule reserves for `mcp:admin`.

Before these fields existed any account got a token, with whatever scopes it asked for:
`scope=mcp:admin mcp:tools` for an arbitrary account gave `mcp:admin`, and the guarded tool
answered 200."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from mcp_http import ACCEPT, PROTOCOL_VERSION, bearer, open_session, rpc_body  # noqa: E402
from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402

ACCOUNTS = {
    "ann": {"email": "ann@corp.test"},                                  # allowed by email domain
    "root": {"email": "root@corp.test", "groups": ["admins"]},          # allowed, and an admin
    "gus": {"email": "gus@elsewhere.test", "groups": ["mcp-users"]},    # allowed by group
    "eve": {"email": "eve@corp.test", "email_verified": False},         # unverified: refused
    # any other account id (e.g. "mallory", mallory@example.test): refused
}
ADMIN_RULE = [{"method": "tools/call", "tools": ["get-env"], "scopes": ["mcp:admin"]}]


@pytest.fixture(scope="module")
def dep(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(
        start_sidecar, start_idp, work, everything.base, "oauth-access", accounts=ACCOUNTS,
        access={"emailDomains": ["corp.test"], "groups": ["mcp-users"]},
        scopeGrants={"mcp:tools": {"anyAuthenticatedUser": True}, "mcp:admin": {"groups": ["admins"]}},
        spec_overrides={"resource": {"scopesSupported": ["mcp:tools", "mcp:admin"]}, "rules": ADMIN_RULE},
    )


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def sign_in(c: Client, user: str, scope: str = "mcp:tools") -> tuple[str, list[str], str]:
    """The browser leg as `user`; returns (final URL, steps, verifier)."""
    steps: list[str] = []
    verifier, challenge = pkce()
    final = browser.run(c.authorize_url(challenge, scope=scope), stop_at=c.redirect_uri, user=user,
                        log=steps.append)
    return final, steps, verifier


def token_for(c: Client, user: str, scope: str) -> dict:
    final, steps, verifier = sign_in(c, user, scope)
    code, _ = browser.code_of(final)
    assert code, f"{user}: no code ({final}; {steps})"
    r = c.exchange(code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def call_tool(base: str, token: str, name: str, arguments: dict) -> httpx.Response:
    url = f"{base}/mcp"
    with httpx.Client(timeout=15) as http:
        session = open_session(http, url, token)
        headers = {"Accept": ACCEPT, **bearer(token), "Mcp-Session-Id": session,
                   "MCP-Protocol-Version": PROTOCOL_VERSION}
        return http.post(url, json=rpc_body("tools/call", {"name": name, "arguments": arguments}, id=2),
                         headers=headers)


def denials(dep, reason: str) -> float:
    return dep.sidecar.metrics().get(("mcp_warden_oauth_access_denied_total",
                                      frozenset({("policy", "oauth-access"), ("reason", reason)})), 0)


@pytest.mark.parametrize("user", ["mallory", "eve"])
def test_an_account_the_policy_does_not_name_is_refused(dep, user):
    base = dep.sidecar.base
    c = Client(base)
    before = denials(dep, "not_allowed")
    with httpx.Client(timeout=15) as user_agent:
        steps: list[str] = []
        _, challenge = pkce()
        stopped = browser.run(c.authorize_url(challenge, scope="mcp:admin mcp:tools"),
                              stop_at=c.redirect_uri, user=user, client=user_agent, log=steps.append)
        assert not stopped.startswith(c.redirect_uri), f"{user} got to the client: {stopped}"
        # A clear page for the user at the callback ...
        assert stopped.startswith(f"{base}/callback"), stopped
        assert steps[-1].startswith("stopped at 403"), steps
    # ... whose link hands the client an RFC 6749 access_denied with state and iss.
    with httpx.Client(timeout=15) as user_agent:
        _, challenge = pkce()
        r = browser.until_page(c.authorize_url(challenge), lambda r: r.status_code == 403,
                               user=user, client=user_agent)
    assert "Access denied" in r.text and "not allowed to use" in r.text
    assert r.headers["x-frame-options"] == "DENY"
    href = r.text.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    q = query(href)
    assert href.startswith(c.redirect_uri)
    assert q["error"] == "access_denied" and q["state"] == "st-1" and q["iss"] == base
    assert "code" not in q
    assert denials(dep, "not_allowed") == before + 2
    # The audit event names the policy and the reason, never a token.
    events = [line for line in dep.sidecar.proc.log_text().splitlines() if "sign-in refused" in line]
    assert events and all("oauth-access" in e and "not_allowed" in e for e in events), events


@pytest.mark.parametrize("user", ["ann", "gus"])
def test_an_allowed_account_gets_a_token(dep, user):
    c = Client(dep.sidecar.base)
    tokens = token_for(c, user, "mcp:tools")
    assert tokens["scope"] == "mcp:tools"
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user


def test_a_scope_is_granted_only_to_whom_scope_grants_names(dep):
    base = dep.sidecar.base
    c = Client(base)
    # ann asks for mcp:admin too; she is not in the admins group: the token lacks it ...
    tokens = token_for(c, "ann", "mcp:admin mcp:tools")
    assert tokens["scope"] == "mcp:tools"
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "mcp:tools"
    # ... so the tool the rule reserves for mcp:admin is refused, and others work.
    assert call_tool(base, tokens["access_token"], "get-env", {}).status_code == 403
    assert call_tool(base, tokens["access_token"], "echo", {"message": "hi"}).status_code == 200
    # A refresh does not widen it either.
    refreshed = c.refresh(tokens["refresh_token"]).json()
    assert refreshed["scope"] == "mcp:tools"
    # root is in the admins group: granted, and the tool answers.
    admin = token_for(c, "root", "mcp:admin mcp:tools")
    assert admin["scope"].split() == ["mcp:admin", "mcp:tools"]
    assert call_tool(base, admin["access_token"], "get-env", {}).status_code == 200


def test_without_scopes_supported_no_scope_is_granted(start_sidecar, start_idp, work, everything):
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-noscopes",
                          scopeGrants={}, spec_overrides={"resource": {"scopesSupported": []},
                                                          "rules": ADMIN_RULE})
    base = dep.sidecar.base
    c = Client(base)
    tokens = token_for(c, "mallory", "mcp:admin mcp:tools anything")
    assert "scope" not in tokens, tokens
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims.get("scope", "") == ""
    assert call_tool(base, tokens["access_token"], "get-env", {}).status_code == 403



def test_a_refresh_follows_the_current_policy(start_sidecar, start_idp, work, everything):
    """Tightening the policy takes effect at the next refresh: a scope no longer granted is
    dropped, and a user no longer admitted loses the session."""
    dep = ProxyDeployment(
        start_sidecar, start_idp, work, everything.base, "oauth-tighten", accounts=ACCOUNTS,
        access={"emailDomains": ["corp.test"]},
        scopeGrants={"mcp:tools": {"anyAuthenticatedUser": True}, "mcp:admin": {"groups": ["admins"]}},
        spec_overrides={"resource": {"scopesSupported": ["mcp:tools", "mcp:admin"]}})
    c = Client(dep.sidecar.base)
    ann = token_for(c, "ann", "mcp:tools")
    root = token_for(c, "root", "mcp:admin mcp:tools")
    assert root["scope"] == "mcp:admin mcp:tools"

    def reloads() -> float:
        return dep.sidecar.metrics().get(("mcp_warden_policy_reloads_total",
                                          frozenset({("result", "success")})), 0)

    before = reloads()
    doc = json.loads(dep.sidecar.policy_path.read_text())
    doc["spec"]["oauthProxy"]["access"] = {"emails": ["root@corp.test"]}
    doc["spec"]["oauthProxy"]["scopeGrants"]["mcp:admin"] = {"subjects": ["nobody"]}
    dep.sidecar.write_policy(doc)
    deadline = time.monotonic() + 15
    while reloads() <= before:
        assert time.monotonic() < deadline, "the policy was not reloaded"
        time.sleep(0.2)

    denied_before = dep.sidecar.metrics().get(("mcp_warden_oauth_access_denied_total", frozenset(
        {("policy", "oauth-tighten"), ("reason", "not_allowed")})), 0)
    r = c.refresh(ann["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert dep.sidecar.metrics()[("mcp_warden_oauth_access_denied_total", frozenset(
        {("policy", "oauth-tighten"), ("reason", "not_allowed")}))] == denied_before + 1
    r = c.refresh(root["refresh_token"])
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "mcp:tools"
