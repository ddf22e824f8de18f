"""Measures what `forward.upstreamTokenHeader` costs per request: two sidecars in oauthProxy mode
in front of the same app (tests/peers/wsgi_echo.py), one setting the header, one not, each
signed in once; sequential keep-alive requests in alternating rounds; the difference of the
medians is the injection cost (the cached path: no store read, no decryption).

Usage: .venv/bin/python tests/peers/bench_upstream_token.py [--requests 400] [--rounds 3]
(uses MCP_WARDEN_SIDECAR_BIN or target/debug/mcp-warden-sidecar). Prints a JSON summary."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE))

from harness import VENV_PYTHON, Idp, Processes, Sidecar, free_port, wait_until  # noqa: E402
from oauth_support import Client, ProxyDeployment  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcpw-upstream-token-bench-"))
    procs = Processes(work)
    try:
        port = free_port()
        echo = procs.start("wsgi-echo", [VENV_PYTHON, HERE / "wsgi_echo.py", str(port)])
        wait_until(lambda: "ready" in echo.log_text(), 30, "wsgi echo", echo)
        targets = {}
        claims = {"claimsToHeaders": {"sub": "X-Auth-Subject"}}
        for name, forward in (("with_header", {"upstreamTokenHeader": "X-Upstream-Token", **claims}),
                              ("without", claims)):
            dep = ProxyDeployment(lambda up, pol, **kw: Sidecar(procs, work, up, pol, **kw),
                                  lambda **kw: Idp(procs, work, **kw), work,
                                  f"http://127.0.0.1:{port}", f"bench-{name.replace('_', '-')}",
                                  spec_overrides={"forward": forward})
            base = dep.sidecar.base
            token = Client(base).full_login()["access_token"]
            targets[name] = (base, token)
        samples: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (base, token) in targets.items():
                with httpx.Client(headers={"authorization": f"Bearer {token}"}) as http:
                    http.post(f"{base}/mcp", content=b"{}")  # warm the connection and cache
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        r = http.post(f"{base}/mcp", content=b"{}")
                        samples[name].append((time.perf_counter() - started) * 1e6)
                        assert r.status_code == 200, r.text
                        if name == "with_header":
                            assert r.json().get("HTTP_X_UPSTREAM_TOKEN"), r.text
        medians = {name: statistics.median(v) for name, v in samples.items()}
        print(json.dumps({
            "requests_per_target": args.requests * args.rounds,
            "median_us": {k: round(v) for k, v in medians.items()},
            "injection_cost_us": round(medians["with_header"] - medians["without"]),
        }, indent=2))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
