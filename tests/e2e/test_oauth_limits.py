"""Bounded OAuth state against the real sidecar and oidc-provider: the in-memory store's byte
budget refuses new registrations before flows of registered clients, `/token` is rate-limited by
address before any client metadata document is fetched, and failed fetches are remembered and
never echo the target's answer."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402

BUDGET = 1024 * 1024


class Documents(ThreadingHTTPServer):
    """Client metadata document host on 127.0.0.1 that answers every GET with 418 and counts."""

    def __init__(self):
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                self.send_response(418)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def documents():
    server = Documents()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def dep(start_sidecar, start_idp, work, everything):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-limits",
                           allowPrivateClientMetadata=True,
                           sidecar_args=["--memory-store-bytes", str(BUDGET)])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def token_request(base: str, client_id: str, http: httpx.Client) -> httpx.Response:
    return http.post(f"{base}/token", data={
        "grant_type": "authorization_code", "code": "nope", "code_verifier": "v" * 43,
        "client_id": client_id, "redirect_uri": "http://127.0.0.1:9/cb"})


def test_failed_metadata_fetch_is_remembered_and_not_echoed(dep, documents):
    client_id = documents.url("/clients/teapot.json")
    with httpx.Client(timeout=10) as http:
        for _ in range(5):
            r = token_request(dep.sidecar.base, client_id, http)
            assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
            assert "418" not in r.text
    assert documents.hits.count("/clients/teapot.json") == 1


def test_token_requests_are_limited_by_address_before_metadata_fetches(dep, documents):
    before = len(documents.hits)
    statuses = []
    with httpx.Client(timeout=10) as http:
        for i in range(640):
            r = token_request(dep.sidecar.base, documents.url(f"/clients/c{i}.json"), http)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["retry-after"]
                break
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} token requests"
    assert len(documents.hits) - before <= 600


def test_registrations_stop_within_the_budget_and_registered_clients_keep_working(dep):
    base = dep.sidecar.base
    first = Client(base)
    rss_before = rss_kb(dep.sidecar.proc.popen.pid)
    uris = [f"http://127.0.0.1:9/cb{i}/{'a' * 1970}" for i in range(10)]
    refused = None
    with httpx.Client(timeout=10) as http:
        for n in range(60):  # the per-address registration limit is 60 a minute
            r = http.post(f"{base}/register", json={
                "redirect_uris": uris, "client_name": "n" * 200,
                "token_endpoint_auth_method": "none"})
            if r.status_code != 201:
                refused = (n, r)
                break
    assert refused, "60 registrations of ~21 KB must not fit a 1 MiB budget"
    n, r = refused
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable", r.text
    assert r.headers["retry-after"]
    # A client registered before the store filled up still starts a flow: to the provider.
    _, challenge = pkce()
    r = httpx.get(first.authorize_url(challenge), timeout=10)
    assert r.is_redirect and r.headers["location"].startswith(dep.idp_issuer), r.text[:300]
    print(f"\n{n} large registrations accepted; sidecar RSS {rss_before} kB -> "
          f"{rss_kb(dep.sidecar.proc.popen.pid)} kB")


def test_oversized_registration_and_state_are_refused(dep):
    base = dep.sidecar.base
    r = httpx.post(f"{base}/register", json={
        "redirect_uris": [f"http://127.0.0.1:9/{'a' * 63 * 1024}"],
        "token_endpoint_auth_method": "none"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"
    c = Client(base)
    _, challenge = pkce()
    r = httpx.get(c.authorize_url(challenge, state="s" * 1025), timeout=10)
    assert r.status_code == 400 and "location" not in r.headers
