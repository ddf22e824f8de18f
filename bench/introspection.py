#!/usr/bin/env python3
"""What an opaque token costs per request (not CI): the sidecar in jwt mode with
`jwt.introspection` in front of the real IdP (tests/peers/idp.mjs issuing opaque tokens) and an
in-process upstream, all on 127.0.0.1 (./target/debug unless MCP_WARDEN_SIDECAR_BIN names another
build). The policy requires a scope the tokens lack, so every request ends with a 403 right after
the token check and the upstream plays no part: the numbers are the sidecar's own. Sends, one after another on one keep-alive connection, requests with
  - a JWT already in the verified-token cache (the baseline),
  - an opaque token already in the introspection cache (a cache hit),
  - fresh opaque tokens, each seen for the first time (an introspection request each),
interleaved, and reports p50/p99 of each and the p50 differences.

Usage: .venv/bin/python bench/introspection.py [REQUESTS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import Idp, Processes, Sidecar, jwt_policy  # noqa: E402
from recorder import Recorder  # noqa: E402

INTROSPECTOR = {"client_id": "bench-introspect", "client_secret": "bench-introspect-secret",
                "grant_types": ["client_credentials"], "redirect_uris": [], "response_types": [],
                "token_endpoint_auth_method": "client_secret_basic"}


def pct(times: list[float], p: float) -> float:
    s = sorted(times)
    return s[min(len(s) - 1, int(p * len(s)))] * 1e6


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    work = Path(tempfile.mkdtemp(prefix="introspection-bench-"))
    procs = Processes(work)
    recorder = Recorder()
    try:
        idp = Idp(procs, work, clients=[INTROSPECTOR], access_token_format="opaque")

        def policy(base: str) -> dict:
            port = int(base.rsplit(":", 1)[1])
            secret = work / f"sidecar-{port}" / "secrets" / "introspection"
            secret.mkdir(parents=True, exist_ok=True)
            (secret / "secret").write_text(INTROSPECTOR["client_secret"])
            doc = jwt_policy("bench", f"{base}/mcp", idp.issuer)
            doc["spec"]["jwt"]["requiredScopes"] = ["mcp:admin"]
            doc["spec"]["jwt"]["introspection"] = {
                "clientId": INTROSPECTOR["client_id"],
                "clientSecretRef": {"name": "introspection", "key": "secret"},
                "cacheSeconds": 3600}
            return doc

        sidecar = Sidecar(procs, work, recorder.base, policy)
        jwt = idp.mint(sidecar.url)
        opaque = idp.token(sidecar.url)
        fresh = [idp.token(sidecar.url) for _ in range(min(n, 300))]
        times = {"jwt (cached)": [], "opaque (cached)": [], "opaque (first use)": []}
        with httpx.Client(timeout=30) as client:
            def timed(token: str) -> float:
                started = time.perf_counter()
                r = client.get(sidecar.url, headers={"Authorization": f"Bearer {token}"})
                elapsed = time.perf_counter() - started
                assert r.status_code == 403, (r.status_code, r.text)
                return elapsed

            for _ in range(50):  # warm-up
                timed(jwt), timed(opaque)
            for i in range(n):
                times["jwt (cached)"].append(timed(jwt))
                times["opaque (cached)"].append(timed(opaque))
                if i < len(fresh):
                    times["opaque (first use)"].append(timed(fresh[i]))
        for name, t in times.items():
            print(f"{name:>20}: p50 {pct(t, 0.5):8.1f} µs  p99 {pct(t, 0.99):8.1f} µs  (n={len(t)})")
        base = statistics.median(times["jwt (cached)"])
        for name in ["opaque (cached)", "opaque (first use)"]:
            delta = (statistics.median(times[name]) - base) * 1e6
            print(f"{name} vs jwt (cached): p50 {delta:+.1f} µs")
    finally:
        recorder.stop()
        procs.stop_all()


if __name__ == "__main__":
    main()
