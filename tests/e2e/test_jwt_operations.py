"""jwt mode over time: JWKS outages and key rotation at a real IdP, policy hot reload, metrics and
health endpoints. Each test starts its own IdP and/or sidecar, since it changes them."""

from __future__ import annotations

import time

import httpx
import pytest

from harness import SigningKey, jwt_policy, wait_until
from mcp_http import ACCEPT, initialize_body


def status(sidecar, token, origin=None) -> int:
    headers = {"Accept": ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if origin:
        headers["Origin"] = origin
    return httpx.post(sidecar.url, json=initialize_body(), headers=headers, timeout=10).status_code


@pytest.fixture
def own_idp(start_idp):
    idp = start_idp()
    yield idp
    idp.stop()


def test_cached_keys_keep_working_while_the_idp_is_down(own_idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-outage", f"{base}/mcp", own_idp.issuer))
    try:
        real = own_idp.token(sidecar.url)
        assert status(sidecar, real) == 200
        own_idp.stop()
        # the same token, and a fresh one signed with a known key, still pass
        assert status(sidecar, real) == 200
        assert status(sidecar, own_idp.mint(sidecar.url, sub="fresh")) == 200
        # an unknown kid cannot be resolved while the IdP is down: refused, not a crash
        assert status(sidecar, own_idp.mint(sidecar.url, SigningKey("ghost", "ES256"))) == 401
        assert status(sidecar, own_idp.mint(sidecar.url, sub="again")) == 200
        assert httpx.get(f"{sidecar.admin}/healthz", timeout=5).status_code == 200
    finally:
        sidecar.stop()


def test_unknown_kid_after_rotation_triggers_a_refetch(own_idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-rotate", f"{base}/mcp", own_idp.issuer))
    try:
        old = own_idp.token(sidecar.url)
        assert status(sidecar, old) == 200
        new_key = SigningKey("e2e-ec-2", "ES256")
        own_idp.rotate(new_key)
        rotated = own_idp.token(sidecar.url)
        assert _kid(rotated) == "e2e-ec-2"
        assert status(sidecar, rotated) == 200
        assert status(sidecar, old) == 200  # the old key is still published
        refreshes = sidecar.metrics()
        assert _sum(refreshes, "mcp_warden_jwks_refresh_total", result="success") >= 2
    finally:
        sidecar.stop()


def test_cached_token_stops_working_when_its_key_leaves_the_jwks(start_idp, start_sidecar,
                                                                  fastmcp):
    """A verified token is cached; once its key is gone from the IdP's JWKS (seen by the refetch
    a token with the new kid triggers) the cached token is refused like an uncached one."""
    idp = start_idp(keys=[SigningKey("e2e-leaving", "ES256")])
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-removed", f"{base}/mcp", idp.issuer))
    try:
        cached = idp.token(sidecar.url)
        assert status(sidecar, cached) == 200
        assert status(sidecar, cached) == 200  # now from the cache
        uncached = idp.mint(sidecar.url, sub="uncached")
        idp.stop()
        idp.keys = [SigningKey("e2e-staying", "ES256")]
        idp.start()
        fresh = idp.token(sidecar.url)
        assert _kid(fresh) == "e2e-staying"
        assert status(sidecar, fresh) == 200  # unknown kid: the JWKS is refetched
        assert status(sidecar, uncached) == 401
        assert status(sidecar, cached) == 401
    finally:
        sidecar.stop()
        idp.stop()


def _kid(token: str) -> str:
    import jwt
    return jwt.get_unverified_header(token)["kid"]


def _sum(samples, name, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_policy_hot_reload_changes_behaviour_and_bad_policy_keeps_the_old(
        idp, start_sidecar, fastmcp):
    docs = {}

    def policy(base):
        docs["base"] = base
        return jwt_policy("e2e-reload", f"{base}/mcp", idp.issuer)

    sidecar = start_sidecar(fastmcp.base, policy)
    try:
        tools = idp.token(sidecar.url, "mcp:tools")
        admin = idp.token(sidecar.url, "mcp:tools mcp:admin")
        assert status(sidecar, tools) == 200

        stricter = jwt_policy("e2e-reload", sidecar.url, idp.issuer)
        stricter["spec"]["jwt"]["requiredScopes"] = ["mcp:admin"]
        sidecar.write_policy(stricter)
        wait_until(lambda: status(sidecar, tools) == 403, 10, "reload to mcp:admin")
        assert status(sidecar, admin) == 200
        r = httpx.get(sidecar.url, timeout=5)
        assert 'scope="mcp:admin"' in r.headers["www-authenticate"]

        # invalid documents are refused and the last good policy keeps serving
        for bad in ["spec: [unclosed", _invalid_issuer(sidecar, idp), ""]:
            sidecar.write_policy(bad)
            time.sleep(2.5)  # > the 1 s reload interval, twice
            assert sidecar.proc.alive()
            assert status(sidecar, tools) == 403
            assert status(sidecar, admin) == 200

        sidecar.write_policy(jwt_policy("e2e-reload", sidecar.url, idp.issuer))
        wait_until(lambda: status(sidecar, tools) == 200, 10, "reload back to mcp:tools")
        metrics = sidecar.metrics()
        assert _sum(metrics, "mcp_warden_policy_reloads_total", result="error") >= 3
        assert _sum(metrics, "mcp_warden_policy_reloads_total", result="success") >= 2
    finally:
        sidecar.stop()


def _invalid_issuer(sidecar, idp) -> dict:
    doc = jwt_policy("e2e-reload", sidecar.url, idp.issuer)
    doc["spec"]["jwt"]["issuer"] = "http://idp.example.com"  # plain http off loopback
    doc["spec"]["jwt"]["requiredScopes"] = ["mcp:tools"]
    return doc


@pytest.mark.parametrize("text, message", [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "spec"),
    ("spec: [unclosed", "parse"),
])
def test_invalid_policy_at_start_is_a_clear_error(start_sidecar, fastmcp, text, message):
    sidecar = start_sidecar(fastmcp.base, lambda base: text, wait_ready=False)
    sidecar.proc.popen.wait(15)
    assert sidecar.proc.popen.returncode != 0
    log = sidecar.proc.log_text()
    last = log.strip().splitlines()[-1]
    assert str(sidecar.policy_path) in last, last
    assert message in last, last


def test_metric_families_are_exported_before_any_traffic(idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-fresh", f"{base}/mcp", idp.issuer))
    try:
        r = httpx.get(f"{sidecar.admin}/metrics", timeout=5)
        assert r.status_code == 200
        ctype = r.headers["content-type"]
        assert ctype.startswith("text/plain") or ctype.startswith("application/openmetrics-text")
        missing = [family for family in ["mcp_warden_requests", "mcp_warden_request_duration_seconds",
                                         "mcp_warden_jwks_refresh", "mcp_warden_token_cache_hits"]
                   if f"# TYPE {family} " not in r.text]
        assert missing == [], r.text
    finally:
        sidecar.stop()


def test_metrics_count_each_outcome_and_reason(idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base, lambda base: jwt_policy(
        "e2e-metrics", f"{base}/mcp", idp.issuer,
        cors={"allowedOrigins": ["http://app.example.test"]}))
    try:
        now = int(time.time())
        assert status(sidecar, None) == 401
        assert status(sidecar, None) == 401
        assert status(sidecar, idp.mint(sidecar.url, exp=now - 600, iat=now - 900)) == 401
        assert status(sidecar, idp.mint("https://other.example.com/mcp")) == 401
        assert status(sidecar, "garbage") == 401
        assert status(sidecar, idp.token(sidecar.url, "mcp:read")) == 403
        good = idp.token(sidecar.url)
        assert status(sidecar, good) == 200
        assert status(sidecar, good) == 200
        assert status(sidecar, good, origin="http://evil.example") == 403
        assert httpx.get(f"{sidecar.base}/.well-known/oauth-protected-resource/mcp").status_code == 200

        m = sidecar.metrics()
        expected = {
            ("unauthorized", "missing_token"): 2,
            ("unauthorized", "expired"): 1,
            ("unauthorized", "wrong_audience"): 1,
            ("unauthorized", "malformed"): 1,
            ("forbidden", "insufficient_scope"): 1,
            ("forbidden", "origin"): 1,
            ("allowed", "none"): 2,
            ("metadata", "none"): 1,
        }
        got = {
            (dict(ls)["outcome"], dict(ls)["reason"]): v
            for (n, ls), v in m.items()
            if n == "mcp_warden_requests_total" and dict(ls).get("policy") == "e2e-metrics"
        }
        assert {k: v for k, v in got.items() if v} == expected
        assert _sum(m, "mcp_warden_request_duration_seconds_count", policy="e2e-metrics") == 10
        assert _sum(m, "mcp_warden_jwks_refresh_total", policy="e2e-metrics",
                    result="success") >= 1
        assert _sum(m, "mcp_warden_token_cache_hits_total") >= 1
    finally:
        sidecar.stop()


def test_health_and_readiness(idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-health", f"{base}/mcp", idp.issuer))
    try:
        r = httpx.get(f"{sidecar.admin}/healthz", timeout=5)
        assert r.status_code == 200
        r = httpx.get(f"{sidecar.admin}/readyz", timeout=5)
        assert r.status_code == 200
        # the admin endpoints are not on the public port (they would bypass auth)
        assert httpx.get(f"{sidecar.base}/metrics", timeout=5).status_code == 401
    finally:
        sidecar.stop()


def test_workers_flag_serves_connections_on_every_thread(idp, start_sidecar, fastmcp):
    """Connections are handed out in turn to the serving threads; with three threads, six
    connections of their own (no keep-alive sharing) must all be served."""
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-workers", f"{base}/mcp", idp.issuer),
                            extra_args=["--workers", "3"])
    try:
        token = idp.token(sidecar.url)
        for _ in range(6):
            with httpx.Client(timeout=10) as fresh:
                r = fresh.post(sidecar.url, json=initialize_body(), headers={
                    "Accept": ACCEPT, "Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
        assert '"workers":3' in sidecar.proc.log_text().replace(" ", "")
    finally:
        sidecar.stop()


def test_zero_workers_is_refused_at_start(idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-workers", f"{base}/mcp", idp.issuer),
                            extra_args=["--workers", "0"], wait_ready=False)
    sidecar.proc.popen.wait(15)
    assert sidecar.proc.popen.returncode != 0
    assert "--workers" in sidecar.proc.log_text()


def test_sigterm_stops_promptly_after_in_flight_requests(idp, start_sidecar, fastmcp):
    import signal

    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-stop", f"{base}/mcp", idp.issuer))
    assert status(sidecar, idp.token(sidecar.url)) == 200
    started = time.monotonic()
    sidecar.proc.popen.send_signal(signal.SIGTERM)
    assert sidecar.proc.popen.wait(8) == 0, sidecar.proc.log_text()
    # Nothing was in flight: no need to sit out the 10 s drain period.
    assert time.monotonic() - started < 5
    assert "shutting down" in sidecar.proc.log_text()


def test_start_up_fetches_the_keys_once(idp, start_sidecar, fastmcp):
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-one-fetch", f"{base}/mcp", idp.issuer))
    try:
        time.sleep(1.5)  # the refresh loop has started by now
        m = sidecar.metrics()
        assert _sum(m, "mcp_warden_jwks_refresh_total", result="success") == 1
        assert _sum(m, "mcp_warden_jwks_refresh_total", result="error") == 0
    finally:
        sidecar.stop()
