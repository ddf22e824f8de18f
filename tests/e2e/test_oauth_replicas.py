"""OAuth proxy state shared through a real Redis: two sidecar processes with one external URL,
the steps of one flow alternating between them, cross-replica races, Redis stopped and
restarted mid-test, and the rate limits."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import MCP_HEADERS, MCP_INIT, Client, ProxyDeployment, pkce  # noqa: E402


@pytest.fixture(scope="module")
def redis_for_replicas(start_redis):
    return start_redis()


@pytest.fixture(scope="module")
def pair(start_sidecar, start_idp, work, everything, redis_for_replicas):
    return ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-replicas",
                           replicas=2, redis_url=redis_for_replicas.url)


def bases(pair):
    return [s.base for s in pair.sidecars]


def test_flow_steps_alternate_between_replicas(pair):
    a, b = bases(pair)
    c = Client(a)  # registered on replica A ...
    verifier, final = c.login(bases=[a, b])  # ... browser steps alternate A, B, A, ...
    code, params = browser.code_of(final)
    assert code and params["iss"] == a, final
    r = c.exchange(code, verifier, base=b)  # ... code redeemed on replica B
    assert r.status_code == 200, r.text
    tokens = r.json()
    # Either replica accepts the access token and refreshes the family.
    for base in (a, b):
        r = httpx.post(f"{base}/mcp", json=MCP_INIT,
                       headers={**MCP_HEADERS, "authorization": f"Bearer {tokens['access_token']}"})
        assert r.status_code == 200, r.text
    r = c.refresh(tokens["refresh_token"], base=a)
    assert r.status_code == 200
    r = c.refresh(r.json()["refresh_token"], base=b)
    assert r.status_code == 200


def test_code_raced_across_replicas_has_one_winner(pair):
    a, b = bases(pair)
    c = Client(a)
    verifier, final = c.login()
    code, _ = browser.code_of(final)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(c.exchange(code, verifier, base=(a, b)[i % 2]).status_code))
               for i in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [200] + [400] * 9


def test_concurrent_refreshes_across_replicas_resolve_to_one_winner(pair):
    a, b = bases(pair)
    c = Client(a)
    tokens = c.full_login()
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(c.refresh(tokens["refresh_token"], base=(a, b)[i % 2])))
               for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
    assert len({r.json()["refresh_token"] for r in results}) == 1
    assert c.refresh(results[0].json()["refresh_token"], base=b).status_code == 200


def test_reuse_detected_on_the_other_replica(pair):
    a, b = bases(pair)
    c = Client(a)
    first = c.full_login()
    second = c.refresh(first["refresh_token"], base=a).json()
    time.sleep(11)
    assert c.refresh(first["refresh_token"], base=b).json()["error"] == "invalid_grant"
    assert c.refresh(second["refresh_token"], base=a).json()["error"] == "invalid_grant"


def mcp_status(base: str, access_token: str) -> httpx.Response:
    return httpx.post(f"{base}/mcp", json=MCP_INIT, timeout=10,
                      headers={**MCP_HEADERS, "authorization": f"Bearer {access_token}"})


def refused_within(base: str, access_token: str, bound: float) -> float:
    """Seconds until `base` refuses the token with 401 invalid_token, polling; fails after `bound`."""
    started = time.monotonic()
    while True:
        r = mcp_status(base, access_token)
        took = time.monotonic() - started
        if r.status_code == 401:
            assert 'error="invalid_token"' in r.headers["www-authenticate"], r.headers
            return took
        assert r.status_code == 200, r.text
        assert took < bound, f"{base} still accepts a revoked token after {took:.2f} s"
        time.sleep(0.01)


def revoke(c: Client, base: str, token: str) -> None:
    r = httpx.post(f"{base}/revoke", data={"token": token, "client_id": c.client_id}, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_revocation_reaches_the_other_replica_at_once(pair, which):
    a, b = bases(pair)
    c = Client(a)
    tokens = c.full_login()
    other = c.refresh(tokens["refresh_token"], base=b).json()  # a second token of the session
    for base in (a, b):
        assert mcp_status(base, tokens["access_token"]).status_code == 200
    revoke(c, a, tokens[which] if which == "access_token" else other["refresh_token"])
    assert mcp_status(a, other["access_token"]).status_code == 401, "at once where revoked"
    took = refused_within(b, tokens["access_token"], bound=5)
    print(f"\nrevocation of the {which} on replica A refused on replica B after {took * 1000:.0f} ms")
    assert mcp_status(b, other["access_token"]).status_code == 401, "every token of the session"
    assert c.refresh(other["refresh_token"], base=b).json()["error"] == "invalid_grant"
    # Other sessions are untouched.
    assert mcp_status(b, Client(a).full_login()["access_token"]).status_code == 200


def test_refresh_reuse_revokes_the_access_tokens_everywhere(pair):
    a, b = bases(pair)
    c = Client(a)
    first = c.full_login()
    second = c.refresh(first["refresh_token"], base=a).json()
    time.sleep(11)  # past the grace window for a duplicate refresh
    assert c.refresh(first["refresh_token"], base=a).json()["error"] == "invalid_grant"
    for base in (b, a):
        refused_within(base, second["access_token"], bound=5)


STALE = ("mcp_warden_oauth_revocation_sync_stale", frozenset())


def test_redis_stopped_mid_test_then_restarted(pair, redis_for_replicas):
    a, b = bases(pair)
    c = Client(a)
    tokens = c.full_login()
    redis_for_replicas.stop()
    try:
        started = time.monotonic()
        r = httpx.post(f"{a}/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"],
                                               "token_endpoint_auth_method": "none"}, timeout=10)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
        r = c.refresh(tokens["refresh_token"], base=b)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert time.monotonic() - started < 6, "answers promptly instead of hanging"
        # The resource-server path needs no Redis round trip, but a replica that cannot read the
        # revocation log for longer than its bound (5 s) fails closed: 503, not a stale answer.
        deadline = time.monotonic() + 20
        while True:
            r = mcp_status(b, tokens["access_token"])
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json()["error"] == "temporarily_unavailable"
        # The gauge is set by the replica's next failed read of the log.
        stale_until = time.monotonic() + 5
        while pair.sidecars[1].metrics()[STALE] != 1:
            assert time.monotonic() < stale_until, "revocation_sync_stale stayed 0"
            time.sleep(0.1)
    finally:
        redis_for_replicas.start()
    # An empty Redis after the restart (no persistence): the old client is gone and says so,
    # a fresh registration and flow work again without restarting the sidecars.
    for base in (a, b):
        deadline = time.monotonic() + 20
        while True:
            r = httpx.post(f"{base}/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"],
                                                     "token_endpoint_auth_method": "none"}, timeout=10)
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 201, f"{base} did not recover: {r.text}"
    r = c.refresh(tokens["refresh_token"], base=a)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # The revocation log is readable again: the access token is accepted again.
    wait_until_ok = time.monotonic() + 10
    while mcp_status(b, tokens["access_token"]).status_code != 200:
        assert time.monotonic() < wait_until_ok, "the replica did not resume after Redis came back"
        time.sleep(0.2)
    assert pair.sidecars[1].metrics()[STALE] == 0
    c2 = Client(a)
    assert c2.full_login(base=b)["access_token"]


def test_register_rate_limit(start_sidecar, start_idp, work, everything):
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-ratelimit")
    base = dep.sidecar.base
    body = {"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}
    codes = [httpx.post(f"{base}/register", json=body).status_code for _ in range(62)]
    assert codes[:60] == [201] * 60
    r = httpx.post(f"{base}/register", json=body)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # Other endpoints have their own budget.
    _, challenge = pkce()
    assert httpx.get(f"{base}/.well-known/oauth-authorization-server").status_code == 200


def test_rate_limits_from_the_policy(start_sidecar, start_idp, work, everything):
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "oauth-ratelimit-policy",
                          rateLimits={"register": {"requests": 4, "windowSeconds": 30},
                                      "token": {"requests": 2, "key": "clientId"},
                                      "revoke": {"requests": 1, "windowSeconds": 2}})
    base = dep.sidecar.base
    c1, c2 = Client(base), Client(base)
    body = {"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}
    assert [httpx.post(f"{base}/register", json=body).status_code for _ in range(2)] == [201, 201]
    r = httpx.post(f"{base}/register", json=body)
    assert r.status_code == 429 and r.headers["retry-after"] == "30", r.text
    # /token counted per client id: one client's budget does not spend another's.
    assert [c1.refresh("x.y").status_code for _ in range(2)] == [400, 400]
    r = c1.refresh("x.y")
    assert r.status_code == 429 and r.headers["retry-after"] == "60", r.text
    assert c2.refresh("x.y").status_code == 400
    # /revoke: 1 per 2 s window per address.
    revoke_once = lambda: httpx.post(f"{base}/revoke", data={"token": "x", "client_id": c2.client_id})  # noqa: E731
    assert revoke_once().status_code == 200
    r = revoke_once()
    assert r.status_code == 429 and r.headers["retry-after"] == "2", r.text
    time.sleep(2.5)
    assert revoke_once().status_code == 200, "a new window"
