"""Consent that cannot be skipped for someone else: `/callback` completes only in the browser
that started the flow, and a remembered approval (`consent: remember`) counts only for the user
who actually signed in upstream and for exactly the client, redirect URI and scopes approved.

Before: the callback completed in any browser (an attacker could start a flow, approve it on
their own screen and have a victim's browser finish it with the victim's upstream session), the
skip was decided from a cookie before anyone signed in, and approvals ignored scopes."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402


@pytest.fixture(scope="module")
def dep(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(
        start_sidecar, start_idp, work, everything.base, "oauth-binding", consent="remember",
        scopeGrants={"mcp:tools": {"anyAuthenticatedUser": True},
                     "mcp:admin": {"anyAuthenticatedUser": True}},
        spec_overrides={"resource": {"scopesSupported": ["mcp:tools", "mcp:admin"]}},
    )


def flow(c: Client, user_agent: httpx.Client, user: str, scope: str = "mcp:tools",
         state: str = "st-1") -> tuple[str, list[str], str]:
    """One flow in `user_agent`; returns (where it stopped, steps, verifier)."""
    steps: list[str] = []
    verifier, challenge = pkce()
    final = browser.run(c.authorize_url(challenge, scope=scope, state=state), stop_at=c.redirect_uri,
                        user=user, client=user_agent, log=steps.append)
    return final, steps, verifier


def consent_shown(steps: list[str]) -> bool:
    return any(s.startswith("POST ") and s.endswith("/consent") for s in steps)


def sign_out_upstream(user_agent: httpx.Client, dep):
    """Drops the IdP's session cookies (same host as the sidecar, other port), so the next flow
    signs in afresh, possibly as someone else; mcp-warden's own cookies stay."""
    for cookie in list(user_agent.cookies.jar):
        if not cookie.name.startswith("mcpw"):
            user_agent.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)


def denials(dep, reason: str) -> float:
    return dep.sidecar.metrics().get(("mcp_warden_oauth_access_denied_total",
                                      frozenset({("policy", "oauth-binding"), ("reason", reason)})), 0)


def test_callback_opened_in_another_browser_is_refused(dep):
    c = Client(dep.sidecar.base)
    before = denials(dep, "other_browser")
    with httpx.Client(timeout=15) as attacker, httpx.Client(timeout=15) as victim:
        # The attacker does everything up to the identity provider in their own browser ...
        _, challenge = pkce()
        upstream_url = browser.run(c.authorize_url(challenge), stop_at=f"{dep.idp.issuer}/", user="mallory",
                                   client=attacker)
        assert upstream_url.startswith(dep.idp.issuer), upstream_url
        # ... and gets the victim to open the provider's link: the victim signs in there.
        steps: list[str] = []
        final = browser.run(upstream_url, stop_at=c.redirect_uri, user="victim", client=victim,
                            log=steps.append)
        assert not final.startswith(c.redirect_uri), f"the flow finished for the attacker: {final}"
        assert final.startswith(f"{dep.sidecar.base}/callback") and steps[-1].startswith("stopped at 403"), steps
        page = victim.get(final)  # what the victim saw (the flow is spent now)
        assert page.status_code == 400
    assert denials(dep, "other_browser") == before + 1


def test_the_other_browser_page_explains_itself(dep):
    c = Client(dep.sidecar.base)
    with httpx.Client(timeout=15) as starter, httpx.Client(timeout=15) as other:
        _, challenge = pkce()
        upstream_url = browser.run(c.authorize_url(challenge), stop_at=f"{dep.idp.issuer}/", client=starter)
        page = browser.until_page(upstream_url, lambda r: r.status_code == 403, user="alice", client=other)
    assert "different browser" in page.text and "location" not in page.headers
    assert page.headers["x-frame-options"] == "DENY"


def test_a_remembered_approval_is_not_used_for_another_signed_in_user(dep):
    c = Client(dep.sidecar.base)
    with httpx.Client(timeout=15) as user_agent:
        final, steps, verifier = flow(c, user_agent, "alice")
        assert browser.code_of(final)[0] and consent_shown(steps), steps
        # Same browser, same client: alice is remembered.
        final, steps, _ = flow(c, user_agent, "alice", state="st-2")
        assert browser.code_of(final)[0] and not consent_shown(steps), steps
        # Now bob signs in upstream in this browser: he has approved nothing, so he is asked.
        sign_out_upstream(user_agent, dep)
        final, steps, _ = flow(c, user_agent, "bob", state="st-3")
        assert consent_shown(steps), f"bob was not asked: {steps}"
        assert browser.code_of(final)[0]


def test_a_remembered_approval_covers_only_the_scopes_approved(dep):
    c = Client(dep.sidecar.base)
    with httpx.Client(timeout=15) as user_agent:
        final, steps, _ = flow(c, user_agent, "carol", scope="mcp:tools")
        assert consent_shown(steps)
        # Asking for more than was approved brings the consent page back, listing it.
        _, challenge = pkce()
        page = browser.until_page(c.authorize_url(challenge, scope="mcp:tools mcp:admin"),
                                  browser.is_consent_page, user="carol", client=user_agent)
        assert "<code>mcp:admin</code>" in page.text
        # The approved set itself stays remembered.
        final, steps, _ = flow(c, user_agent, "carol", scope="mcp:tools", state="st-4")
        assert browser.code_of(final)[0] and not consent_shown(steps), steps
