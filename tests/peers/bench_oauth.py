"""Measures the OAuth proxy on loopback with real peers: the latency of a complete interactive
flow (authorize → oidc-provider login → callback → consent → code exchange) and the token
endpoint's refresh-grant throughput against a real Redis.

Usage: .venv/bin/python tests/peers/bench_oauth.py [--flows 20] [--clients 40] [--seconds 10]
(uses MCP_WARDEN_SIDECAR_BIN or target/debug/mcp-warden-sidecar). Prints a JSON summary.
Single-machine numbers: the load generator (Python threads), the sidecar, Redis and the IdP
share the CPU, so throughput is a lower bound for the sidecar alone."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE))

import browser  # noqa: E402
from harness import Idp, McpServer, Processes, Redis, Sidecar  # noqa: E402
from oauth_support import Client, ProxyDeployment  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=20)
    ap.add_argument("--clients", type=int, default=40)  # 600/min each: keep the limit out of the way
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcpw-oauth-bench-"))
    procs = Processes(work)
    try:
        redis = Redis(procs)
        server = McpServer(procs, "everything")
        dep = ProxyDeployment(lambda up, pol, **kw: Sidecar(procs, work, up, pol, **kw),
                              lambda **kw: Idp(procs, work, **kw), work, server.base, "bench",
                              redis_url=redis.url)
        base = dep.sidecar.base

        # 1. Interactive flow latency, sequential.
        client = Client(base)
        flow_ms = []
        for _ in range(args.flows):
            started = time.perf_counter()
            verifier, final = client.login()
            code, _ = browser.code_of(final)
            r = client.exchange(code, verifier)
            assert r.status_code == 200, r.text
            flow_ms.append((time.perf_counter() - started) * 1000)

        # 2. Refresh-grant throughput: one family per client, one thread per family, each
        # thread rotating its own refresh token as fast as the endpoint answers.
        families = []
        for _ in range(args.clients):
            c = Client(base)
            families.append((c, c.full_login()["refresh_token"]))
        counts = [0] * len(families)
        errors = [0] * len(families)
        latencies: list[list[float]] = [[] for _ in families]
        stop = time.perf_counter() + args.seconds

        def worker(i: int):
            c, token = families[i]
            with httpx.Client(timeout=10) as http:
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    r = http.post(f"{base}/token", data={"grant_type": "refresh_token",
                                                         "refresh_token": token, "client_id": c.client_id})
                    latencies[i].append((time.perf_counter() - t0) * 1000)
                    if r.status_code == 200:
                        token = r.json()["refresh_token"]
                        counts[i] += 1
                    else:
                        errors[i] += 1

        cpu_before = cpu_seconds(dep.sidecar.proc.popen.pid)
        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(families))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(dep.sidecar.proc.popen.pid) - cpu_before
        all_lat = [x for lat in latencies for x in lat]
        print(json.dumps({
            "sidecar_binary": str(Path(Sidecar.__init__.__globals__["SIDECAR_BIN"])),
            "flow_latency_ms": {"n": len(flow_ms), "median": round(statistics.median(flow_ms), 1),
                                "p95": round(percentile(flow_ms, 95), 1)},
            "refresh_grants": {"threads": len(families), "seconds": round(elapsed, 2),
                               "ok": sum(counts), "errors": sum(errors),
                               "per_second": round(sum(counts) / elapsed, 1),
                               "latency_ms_median": round(statistics.median(all_lat), 2),
                               "latency_ms_p99": round(percentile(all_lat, 99), 2),
                               "sidecar_cpu_ms_per_1k": round(cpu * 1000 / max(1, sum(counts)) * 1000, 1)},
        }, indent=2))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
