"""Fault drill: two sidecar replicas behind a round-robin balancer that follows their readiness
the way an endpoints controller and kube-proxy do (each replica's /readyz polled every 100 ms,
a replica dropped from the rotation a while after it reports not ready), load through both, a
few SSE streams open on one replica, and that replica gets SIGTERM in the middle of the load.

No request may fail (requests the balancer still sends to the replica after SIGTERM are
served), every SSE stream must end with a complete response (the last chunk, no reset) so the
client can reconnect to the other replica, a tool call still running when the replica stops
accepting must finish, and the process must exit within the shutdown delay plus the drain
period."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter

import httpx
from harness import jwt_policy, wait_until
from mcp_http import ACCEPT, PROTOCOL_VERSION, initialize_body, open_session, rpc_body

# One external URL for both replicas (as behind one Service).
RESOURCE = "https://drill.example/mcp"
DELAY = 3  # --shutdown-delay of the replicas
DRAIN = 10  # the sidecar's drain bound once it stops accepting
POLL = 0.1  # how often the balancer reads each replica's readiness
PROPAGATION = 1.0  # how long after "not ready" the balancer still sends new requests
LOAD_THREADS = 4
SSE_STREAMS = 3


class Balancer:
    """Round-robin over the replicas currently in rotation."""

    def __init__(self, replicas):
        self.replicas = replicas
        self.in_rotation = [True] * len(replicas)
        self.readyz: list[Counter] = [Counter() for _ in replicas]
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        not_ready_since: list[float | None] = [None] * len(self.replicas)
        with httpx.Client(timeout=1) as http:
            while not self._stop.is_set():
                for i, replica in enumerate(self.replicas):
                    try:
                        status = http.get(f"{replica.admin}/readyz").status_code
                    except httpx.HTTPError:
                        status = 0  # refused: not ready either
                    self.readyz[i][status] += 1
                    if status == 200:
                        not_ready_since[i] = None
                        self.in_rotation[i] = True
                    else:
                        since = not_ready_since[i] = not_ready_since[i] or time.monotonic()
                        self.in_rotation[i] = time.monotonic() - since < PROPAGATION
                time.sleep(POLL)

    def pick(self) -> int:
        while True:
            i = next(self._turn) % len(self.replicas)
            if self.in_rotation[i]:
                return i

    def __enter__(self):
        self._poller.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._poller.join(5)


class Load:
    """Threads sending `tools/list` in one MCP session through the balancer, each with its own
    keep-alive connections, until stopped."""

    def __init__(self, balancer: Balancer, token: str, session: str):
        self.balancer = balancer
        self.headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}",
                        "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
        self.sent: list[tuple[float, int, int | str]] = []  # (when, replica, status or error)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(LOAD_THREADS)]

    def _run(self):
        with httpx.Client(timeout=30) as http:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                i = self.balancer.pick()
                url = f"{self.balancer.replicas[i].base}/mcp"
                started = time.monotonic()
                try:
                    r = http.post(url, json=rpc_body("tools/list", {}, id=n + 10),
                                  headers=self.headers)
                    outcome: int | str = r.status_code
                    if r.status_code == 200 and "tools" not in r.text:
                        outcome = f"200 without tools: {r.text[:100]}"
                except httpx.HTTPError as e:
                    outcome = f"{type(e).__name__}: {e}"
                with self._lock:
                    self.sent.append((started, i, outcome))

    def failures(self) -> list:
        return [s for s in self.sent if s[2] != 200]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(40)


class Stream:
    """A GET SSE stream of its own MCP session, read to its end in a thread."""

    def __init__(self, url: str, token: str, session: str):
        self.url = url
        self.headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}",
                        "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
        self.status: int | None = None
        self.ended_at: float | None = None
        self.error: str | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            with httpx.stream("GET", self.url, headers=self.headers,
                              timeout=httpx.Timeout(10, read=DELAY + DRAIN + 30)) as r:
                self.status = r.status_code
                self.opened.set()
                for _ in r.iter_raw():
                    pass
            self.ended_at = time.monotonic()
        except httpx.HTTPError as e:
            self.error = f"{type(e).__name__}: {e}"
            self.ended_at = time.monotonic()
        finally:
            self.opened.set()


def long_operation(url: str, headers: dict, seconds: int) -> httpx.Response | str:
    """server-everything's long-running tool, answered as an SSE stream with progress."""
    body = rpc_body("tools/call", {"name": "trigger-long-running-operation",
                                   "arguments": {"duration": seconds, "steps": seconds},
                                   "_meta": {"progressToken": "drill"}}, id=9)
    try:
        return httpx.post(url, json=body, headers=headers, timeout=DELAY + DRAIN + 30)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"


def test_sigterm_to_one_of_two_replicas_under_load(idp, start_sidecar, everything):
    policy = lambda base: jwt_policy("drill-sigterm", RESOURCE, idp.issuer)  # noqa: E731
    args = ["--shutdown-delay", str(DELAY)]
    replicas = [start_sidecar(everything.base, policy, extra_args=args) for _ in range(2)]
    a, b = replicas
    token = idp.mint(RESOURCE, exp=int(time.time()) + 600)
    with httpx.Client(timeout=10) as http:
        session = open_session(http, f"{a.base}/mcp", token)
        stream_sessions = [open_session(http, f"{b.base}/mcp", token) for _ in range(SSE_STREAMS)]

    streams = []
    long_call: dict = {}
    with Balancer(replicas) as balancer, Load(balancer, token, session) as load:
        wait_until(lambda: len(load.sent) >= 100, 60, "load before the drill")
        streams = [Stream(f"{b.base}/mcp", token, s) for s in stream_sessions]
        for s in streams:
            assert s.opened.wait(10)
            assert s.status == 200 and s.error is None, (s.status, s.error)
        # A tool call that is still running when the replica stops accepting: it must finish.
        slow = threading.Thread(target=lambda: long_call.update(
            r=long_operation(f"{b.base}/mcp", load.headers, DELAY + 1)), daemon=True)
        slow.start()
        time.sleep(0.5)  # the streams are open on the replica, load is running
        term_at = time.monotonic()
        b.proc.popen.send_signal(signal.SIGTERM)
        code = b.proc.popen.wait(DELAY + DRAIN + 20)
        exited_in = time.monotonic() - term_at
        time.sleep(0.5)  # a little load after the exit: all of it on the other replica

    during = [s for s in load.sent if s[0] >= term_at]
    to_b = [s for s in during if s[1] == 1]
    failures = load.failures()
    print(f"\nSIGTERM drill: {len(load.sent)} requests in all, {len(during)} during the drill "
          f"({len(to_b)} of them sent to the stopping replica), {len(failures)} failed; "
          f"exit {exited_in:.1f} s after SIGTERM (code {code}); readiness of the stopping "
          f"replica {dict(balancer.readyz[1])}; SSE streams ended "
          f"{[round(s.ended_at - term_at, 1) if s.ended_at else None for s in streams]} s "
          f"after SIGTERM, errors {[s.error for s in streams if s.error]}")
    assert failures == [], failures[:10]
    assert to_b, "the balancer sent nothing to the stopping replica after SIGTERM"
    assert balancer.readyz[1][503] > 0, "/readyz did not report the replica as not ready"
    assert code == 0, b.proc.log_tail()
    assert exited_in < DELAY + DRAIN + 5, f"exited {exited_in:.1f} s after SIGTERM"
    for s in streams:
        s.thread.join(5)
        assert s.error is None, s.error
        assert s.ended_at is not None and s.ended_at > term_at + DELAY - 0.5, \
            "the stream ended before the shutdown delay was over"
    slow.join(DELAY + DRAIN)
    r = long_call.get("r")
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 200 and "Long running operation completed" in r.text, r.text
    # The clients reconnect their streams to the other replica.
    with httpx.stream("GET", f"{a.base}/mcp", headers=streams[0].headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")


def test_told_to_stop_it_fails_readiness_keeps_serving_and_a_second_signal_ends_the_delay(
        idp, start_sidecar, everything):
    sidecar = start_sidecar(everything.base,
                            lambda base: jwt_policy("drill-sigterm-twice", RESOURCE, idp.issuer),
                            extra_args=["--shutdown-delay", "120"])
    token = idp.mint(RESOURCE)
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10) as http:
        sidecar.proc.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: http.get(f"{sidecar.admin}/readyz").status_code == 503, 10,
                   "/readyz failing after SIGTERM", sidecar.proc)
        assert http.get(f"{sidecar.admin}/readyz").text == "shutting down"
        # Still serving, on new connections too; HTTP/1.1 answers close their connection.
        for _ in range(3):
            with httpx.Client(timeout=10) as fresh:
                r = fresh.post(f"{sidecar.base}/mcp", json=initialize_body(), headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["connection"] == "close"
        sidecar.proc.popen.send_signal(signal.SIGTERM)
        assert sidecar.proc.popen.wait(30) == 0, "a second signal ends the 120 s delay"
    assert "the shutdown delay is cut short" in sidecar.proc.log_text()
