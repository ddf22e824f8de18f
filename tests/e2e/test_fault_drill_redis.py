"""Fault drill: Redis is killed (SIGKILL) in the middle of sign-ins and restarted on the same
port, once with its data (an append-only file synced on every write) and once empty; and, a
third way, frozen (SIGSTOP, connections open but nothing answers) and resumed.

Threads run complete sign-ins against an oauthProxy sidecar (registration, the browser leg
through the real oidc-provider, the code exchange, a refresh grant, an MCP call with the new
token) and a chain of refresh grants, in a loop. Every answer of the sidecar during the drill
must be a proper one: a success, an OAuth JSON error (503 with `Retry-After` while Redis is
away), an error redirect to the client, or an error page on the browser leg; never a 5xx other
than 503, a reset connection or a request that hangs past the client timeout. Every thread whose
sign-in failed signs in again from the start once Redis is back, and succeeds."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import CALLBACK, MCP_HEADERS, MCP_INIT, ProxyDeployment, pkce  # noqa: E402

# A bound on every request: a request that takes longer counts as a hang.
REQUEST_TIMEOUT = 15
# Redis stays away longer than the revocation log's staleness bound (5 s), so the resource side
# goes through its fail-closed 503 too.
OUTAGE_SECONDS = 7


class Unclean(Exception):
    """The sidecar answered in a way a client cannot act on."""


@dataclass
class Flow:
    """One attempt of a thread, and how it ended."""

    thread: str
    started: float
    ended: float = 0.0
    result: str = ""  # "ok", "clean" (refused properly) or "unclean"
    detail: str = ""


@dataclass
class Drill:
    base: str
    flows: list[Flow] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    killed_at: float = 0.0
    back_at: float = 0.0
    sidecar_answers: int = 0
    slowest: float = 0.0  # seconds, the slowest answer of the sidecar

    def record(self, flow: Flow):
        with self.lock:
            self.flows.append(flow)

    def judge(self, r: httpx.Response):
        """Event hook: checks every answer of the sidecar (other hosts are the IdP's)."""
        if r.request.url.port != urlsplit(self.base).port:
            return
        r.read()
        with self.lock:
            self.sidecar_answers += 1
            self.slowest = max(self.slowest, r.elapsed.total_seconds())
        where = f"{r.request.method} {r.request.url.path}"
        if r.status_code < 400:
            return
        kind = r.headers.get("content-type", "")
        if r.status_code in (400, 401, 403, 429, 503) and kind.startswith("application/json"):
            error = r.json().get("error")
            if not isinstance(error, str):
                raise Unclean(f"{where}: {r.status_code} without an OAuth error: {r.text[:200]}")
            if r.status_code in (429, 503) and not r.headers.get("retry-after"):
                raise Unclean(f"{where}: {r.status_code} without Retry-After")
            return
        if 400 <= r.status_code < 500 and kind.startswith("text/html"):
            return  # an error page on the browser leg (the flow cannot go back to the client)
        raise Unclean(f"{where}: {r.status_code} {kind} {r.text[:200]}")


def refused(step: str, r: httpx.Response) -> str:
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return f"{step}: {r.status_code} {body.get('error', '')}".rstrip()


def sign_in(drill: Drill, http: httpx.Client) -> tuple[str, str]:
    """One sign-in from the start; ("ok", "") or ("clean", why it was refused)."""
    base = drill.base
    r = http.post(f"{base}/register", json={
        "client_name": "drill", "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]})
    if r.status_code != 201:
        return "clean", refused("register", r)
    client_id = r.json()["client_id"]
    verifier, challenge = pkce()
    url = f"{base}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "drill",
        "scope": "mcp:tools", "resource": f"{base}/mcp"})
    final = browser.run(url, stop_at=CALLBACK, client=http)
    code, params = browser.code_of(final)
    if not code:
        return "clean", f"authorize: {params.get('error') or final.split('?')[0]}"
    r = http.post(f"{base}/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": CALLBACK, "client_id": client_id, "resource": f"{base}/mcp"})
    if r.status_code != 200:
        return "clean", refused("code exchange", r)
    r = http.post(f"{base}/token", data={
        "grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"],
        "client_id": client_id})
    if r.status_code != 200:
        return "clean", refused("refresh", r)
    r = http.post(f"{base}/mcp", json=MCP_INIT, headers={
        **MCP_HEADERS, "authorization": f"Bearer {r.json()['access_token']}"})
    if r.status_code != 200:
        return "clean", refused("mcp", r)
    return "ok", ""


def attempt(drill: Drill, name: str, body) -> Flow:
    flow = Flow(name, time.monotonic())
    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT, event_hooks={"response": [drill.judge]}) as http:
            flow.result, flow.detail = body(http)
    except Unclean as e:
        flow.result, flow.detail = "unclean", str(e)
    except httpx.HTTPError as e:
        flow.result, flow.detail = "unclean", f"{type(e).__name__}: {e}"
    flow.ended = time.monotonic()
    drill.record(flow)
    return flow


def sign_ins(drill: Drill, name: str):
    while not drill.stop.is_set():
        if attempt(drill, name, lambda http: sign_in(drill, http)).result != "ok":
            time.sleep(0.5)  # then from the start again


def refreshes(drill: Drill, name: str, client_id: str, refresh_token: str):
    """A chain of refresh grants; a family that is gone (Redis came back empty) is replaced by
    a new sign-in, which this thread then refreshes."""
    state = {"client_id": client_id, "refresh": refresh_token}

    def refresh(http: httpx.Client) -> tuple[str, str]:
        r = http.post(f"{drill.base}/token", data={
            "grant_type": "refresh_token", "refresh_token": state["refresh"],
            "client_id": state["client_id"]})
        if r.status_code == 200:
            state["refresh"] = r.json()["refresh_token"]
            return "ok", ""
        return "clean", refused("refresh", r)

    while not drill.stop.is_set():
        flow = attempt(drill, name, refresh)
        if flow.result == "ok":
            time.sleep(0.1)
            continue
        time.sleep(0.5)
        if "invalid_grant" in flow.detail or "invalid_client" in flow.detail:
            login = attempt(drill, name, lambda http: signed_in_session(drill, http, state))
            if login.result != "ok":
                time.sleep(0.5)


def signed_in_session(drill: Drill, http: httpx.Client, state: dict) -> tuple[str, str]:
    tokens = full_sign_in(drill.base, http)
    if isinstance(tokens, str):
        return "clean", tokens
    state["client_id"], state["refresh"] = tokens["client_id"], tokens["refresh_token"]
    return "ok", ""


def full_sign_in(base: str, http: httpx.Client) -> dict | str:
    """A sign-in up to the tokens (plus the client id), or why it was refused."""
    r = http.post(f"{base}/register", json={
        "client_name": "drill", "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"})
    if r.status_code != 201:
        return refused("register", r)
    client_id = r.json()["client_id"]
    verifier, challenge = pkce()
    url = f"{base}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "drill",
        "scope": "mcp:tools", "resource": f"{base}/mcp"})
    code, _ = browser.code_of(browser.run(url, stop_at=CALLBACK, client=http))
    if not code:
        return "authorize refused"
    r = http.post(f"{base}/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": CALLBACK, "client_id": client_id, "resource": f"{base}/mcp"})
    if r.status_code != 200:
        return refused("code exchange", r)
    return {**r.json(), "client_id": client_id}


def mcp(base: str, access_token: str) -> httpx.Response:
    return httpx.post(f"{base}/mcp", json=MCP_INIT, timeout=REQUEST_TIMEOUT,
                      headers={**MCP_HEADERS, "authorization": f"Bearer {access_token}"})


def wait_for(check, bound: float, what: str):
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.parametrize("fault", ["killed-with-data", "killed-empty", "frozen"])
def test_redis_killed_and_restarted_during_sign_ins(fault, start_sidecar, start_idp,
                                                     start_redis, work, everything):
    """`killed-*`: SIGKILL, then a restart on the same port with or without its data;
    `frozen`: SIGSTOP then SIGCONT (connections stay open, nothing answers)."""
    persistent = fault != "killed-empty"
    data = work / f"redis-drill-{time.monotonic_ns()}" if fault == "killed-with-data" else None
    redis = start_redis(data_dir=data)
    dep = ProxyDeployment(start_sidecar, start_idp, work, everything.base, f"drill-{fault}",
                          redis_url=redis.url)
    base = dep.sidecar.base
    drill = Drill(base)
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        before = full_sign_in(base, http)
        chain = full_sign_in(base, http)
    assert isinstance(before, dict) and isinstance(chain, dict), (before, chain)

    threads = [threading.Thread(target=sign_ins, args=(drill, f"sign-in-{i}"), daemon=True)
               for i in range(3)]
    threads.append(threading.Thread(
        target=refreshes, args=(drill, "refresh", chain["client_id"], chain["refresh_token"]),
        daemon=True))
    during: list[int] = []  # statuses of the token issued before, while Redis is away
    try:
        [t.start() for t in threads]
        wait_for(lambda: sum(f.result == "ok" for f in drill.flows) >= 6, 120, "no progress")
        drill.killed_at = time.monotonic()
        if fault == "frozen":
            os.killpg(redis.proc.popen.pid, signal.SIGSTOP)
        else:
            redis.kill()
        while time.monotonic() - drill.killed_at < OUTAGE_SECONDS:
            r = mcp(base, before["access_token"])
            assert r.status_code == 200 or (
                r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
                and r.headers["retry-after"]), r.text
            during.append(r.status_code)
            time.sleep(0.25)
        if fault == "frozen":
            os.killpg(redis.proc.popen.pid, signal.SIGCONT)
        else:
            redis.start()
        drill.back_at = time.monotonic()
        # Every thread completes an attempt that started after Redis was back.
        names = {f.thread for f in drill.flows}
        wait_for(lambda: all(any(f.thread == n and f.result == "ok" and f.started > drill.back_at
                                 for f in drill.flows) for n in names),
                 90, "a thread did not succeed again after Redis came back")
    finally:
        drill.stop.set()
        [t.join(REQUEST_TIMEOUT * 3) for t in threads]
        if fault == "frozen":
            os.killpg(redis.proc.popen.pid, signal.SIGCONT)
        elif not redis.proc.alive():
            redis.start()

    flows = list(drill.flows)
    unclean = [f for f in flows if f.result == "unclean"]
    spanning = [f for f in flows if f.started < drill.killed_at < f.ended]
    refused_flows = [f for f in flows if f.result == "clean"]
    print(f"\nredis drill ({fault}): {len(flows)} attempts, "
          f"{drill.sidecar_answers} sidecar answers (slowest {drill.slowest:.2f} s), "
          f"{len(spanning)} in progress at the kill, "
          f"{len(refused_flows)} refused cleanly ({sorted({f.detail for f in refused_flows})}), "
          f"{len(unclean)} unclean; token issued before: {during.count(200)}x 200, "
          f"{during.count(503)}x 503 during the outage")
    assert not unclean, [f"{f.thread}: {f.detail}" for f in unclean]
    assert spanning, "no attempt was in progress when Redis was killed"
    assert refused_flows, "nothing was refused while Redis was away"
    assert 503 in during, "the revocation log's staleness bound was not reached"
    # Each thread whose attempt was refused succeeded again, from the start, after Redis was back.
    for f in refused_flows:
        assert any(g.thread == f.thread and g.result == "ok" and g.started > f.ended
                   for g in flows), f"{f.thread} never recovered after: {f.detail}"
    if persistent:
        # Nothing was lost: the refresh chain never had to sign in again.
        assert not [f for f in refused_flows if "invalid_" in f.detail], refused_flows

    # The token issued before the drill is accepted again once the log is readable again.
    wait_for(lambda: mcp(base, before["access_token"]).status_code == 200, 20,
             "the access token issued before the drill is not accepted again")
    r = httpx.post(f"{base}/token", timeout=REQUEST_TIMEOUT, data={
        "grant_type": "refresh_token", "refresh_token": before["refresh_token"],
        "client_id": before["client_id"]})
    if persistent:
        assert r.status_code == 200, r.text
    else:
        # An empty Redis forgot the registration: the client is told to register again.
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
