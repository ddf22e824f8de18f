"""`consent: remember` (an approval is kept per user, client, redirect URI and scopes) and client ID
metadata documents (a URL `client_id` fetched from a real HTTP server, allowed to be loopback
here only because the policy sets allowPrivateClientMetadata)."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, ProxyDeployment, consent_page, pkce  # noqa: E402

REDIRECT = "http://127.0.0.1:9/cimd/callback"


@pytest.fixture(scope="module")
def dep(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-remember",
                           consent="remember", allowPrivateClientMetadata=True)


def consents(dep, decision: str) -> float:
    return dep.sidecar.metrics().get(("mcp_warden_oauth_consents_total",
                                      frozenset({("decision", decision)})), 0)


def test_remembered_consent_skips_the_page_for_the_same_user_client_and_redirect(dep):
    base = dep.sidecar.base
    c = Client(base)
    with httpx.Client(timeout=15) as user_agent:  # one browser: its cookies persist
        steps: list[str] = []
        verifier, challenge = pkce()
        final = browser.run(c.authorize_url(challenge), stop_at=c.redirect_uri, client=user_agent,
                            log=steps.append)
        code, _ = browser.code_of(final)
        assert c.exchange(code, verifier).status_code == 200
        assert any("/consent" in s for s in steps), "first time: the consent page"
        approved, remembered = consents(dep, "approved"), consents(dep, "remembered")
        steps.clear()
        verifier, challenge = pkce()
        final = browser.run(c.authorize_url(challenge, state="st-2"), stop_at=c.redirect_uri,
                            client=user_agent, log=steps.append)
        code, params = browser.code_of(final)
        assert code and params["state"] == "st-2"
        assert c.exchange(code, verifier).status_code == 200
        assert not any("/consent" in s for s in steps), f"remembered: no consent page {steps}"
        assert consents(dep, "remembered") == remembered + 1
        assert consents(dep, "approved") == approved
    # The approval belongs to the user, not the browser: signed in elsewhere, not asked again.
    steps.clear()
    verifier, challenge = pkce()
    final = browser.run(c.authorize_url(challenge, state="st-3"), stop_at=c.redirect_uri, log=steps.append)
    code, _ = browser.code_of(final)
    assert c.exchange(code, verifier).status_code == 200
    assert not any("/consent" in s for s in steps), steps
    # Another client of the same user is asked again.
    other = Client(base)
    with httpx.Client(timeout=15) as user_agent:
        r = consent_page(other, user_agent)
        assert "Approve" in r.text


class _Documents(BaseHTTPRequestHandler):
    documents: dict[str, dict] = {}

    def do_GET(self):  # noqa: N802
        doc = self.documents.get(self.path)
        body = json.dumps(doc).encode() if doc else b"{}"
        self.send_response(200 if doc else 404)
        self.send_header("content-type", "application/json")
        self.send_header("cache-control", "max-age=120")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def documents():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Documents)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Documents.documents
    server.shutdown()


def test_client_id_metadata_document_flow(dep, documents):
    origin, docs = documents
    base = dep.sidecar.base
    client_id = f"{origin}/clients/e2e.json"
    docs["/clients/e2e.json"] = {"client_id": client_id, "client_name": "CIMD e2e client",
                                 "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    verifier, challenge = pkce()
    url = httpx.URL(f"{base}/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "state": "c1",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{base}/mcp"})
    with httpx.Client(timeout=15) as user_agent:
        page = browser.until_page(str(url), browser.is_consent_page, client=user_agent)
    assert "CIMD e2e client" in page.text and client_id in page.text
    final = browser.run(str(url), stop_at=REDIRECT)
    code, params = browser.code_of(final)
    assert code and params["iss"] == base
    r = httpx.post(f"{base}/token", data={"grant_type": "authorization_code", "code": code,
                                          "code_verifier": verifier, "redirect_uri": REDIRECT,
                                          "client_id": client_id})
    assert r.status_code == 200, r.text
    # A redirect URI the document does not list is refused without redirecting.
    bad = httpx.get(str(url).replace("cimd%2Fcallback", "elsewhere"))
    assert bad.status_code == 400 and "location" not in bad.headers


def test_client_id_metadata_document_must_name_itself(dep, documents):
    origin, docs = documents
    base = dep.sidecar.base
    client_id = f"{origin}/clients/liar.json"
    docs["/clients/liar.json"] = {"client_id": "https://someone-else.example/c.json",
                                  "redirect_uris": [REDIRECT]}
    _, challenge = pkce()
    r = httpx.get(f"{base}/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
