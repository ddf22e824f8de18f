#!/usr/bin/env python3
"""Latency of legitimate requests with and without 1,000 slowloris connections (not CI).

Starts the real IdP (tests/peers/idp.mjs), an in-process recording upstream and the sidecar
(./target/debug unless MCP_WARDEN_SIDECAR_BIN names another build), all on 127.0.0.1. Then, for
each phase, sends REQUESTS authenticated requests one after another on fresh connections and
reports p50/p99/max: first unloaded, then while SLOWLORIS connections hold half-sent headers
(one more header byte each every half second), and reports the sidecar's RSS in both phases.

Usage: .venv/bin/python bench/slowloris.py [REQUESTS] [SLOWLORIS]
"""

from __future__ import annotations

import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import Idp, Processes, Sidecar, jwt_policy  # noqa: E402
from recorder import Recorder  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(url: str, token: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.status_code
    return sorted(times)


def summary(name: str, times: list[float]) -> str:
    def pct(p):
        return times[min(len(times) - 1, int(p * len(times)))] * 1000

    return f"{name:>10}: p50 {pct(0.50):6.2f} ms  p99 {pct(0.99):6.2f} ms  max {times[-1] * 1000:6.2f} ms"


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    slowloris = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * slowloris + 256)), hard))
    work = Path(tempfile.mkdtemp(prefix="slowloris-bench-"))
    procs = Processes(work)
    recorder = Recorder()
    try:
        idp = Idp(procs, work)
        sidecar = Sidecar(procs, work, recorder.base,
                          lambda base: jwt_policy("bench", f"{base}/mcp", idp.issuer),
                          extra_args=["--max-connections", str(slowloris + 100)])
        token = idp.mint(sidecar.url)
        measure(sidecar.url, token, 20)  # warm-up
        pid = sidecar.proc.popen.pid
        quiet = measure(sidecar.url, token, requests)
        rss_quiet = rss_kib(pid)

        socks = []
        for _ in range(slowloris):
            s = socket.create_connection(("127.0.0.1", sidecar.port), timeout=5)
            s.sendall(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            s.setblocking(False)
            socks.append(s)
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.5):
                for s in socks:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        # Within the 10 s default header timeout, the slow connections are all still open.
        loaded = measure(sidecar.url, token, min(requests, 300))
        rss_loaded = rss_kib(pid)
        stop.set()
        t.join()
        for s in socks:
            s.close()
        print(summary("unloaded", quiet))
        print(summary(f"{slowloris} slow", loaded))
        print(f"sidecar RSS: {rss_quiet} KiB unloaded, {rss_loaded} KiB with {slowloris} slow "
              f"connections ({(rss_loaded - rss_quiet) / slowloris:.1f} KiB each)")
    finally:
        recorder.stop()
        procs.stop_all()


if __name__ == "__main__":
    main()
