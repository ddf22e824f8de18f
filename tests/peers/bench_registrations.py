"""Reports what a registration flood does to the OAuth proxy's memory (in-memory store): many
registrations as large as the limits allow (ten 2,000-byte redirect URIs and a 200-byte name),
sent from many loopback source addresses so the per-address limit (60 a minute) does not stop
them first, until the store's byte budget refuses them (503). Prints a JSON summary with the
sidecar's RSS before and after; asserts nothing.

Usage: .venv/bin/python tests/peers/bench_registrations.py [--max 3000] [--budget BYTES]
(uses MCP_WARDEN_SIDECAR_BIN or target/debug/mcp-warden-sidecar)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE))

from harness import Idp, McpServer, Processes, Sidecar  # noqa: E402
from oauth_support import ProxyDeployment  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=3000)
    ap.add_argument("--budget", type=int, default=None, help="--memory-store-bytes")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcpw-registration-bench-"))
    procs = Processes(work)
    try:
        server = McpServer(procs, "everything")
        extra = ["--memory-store-bytes", str(args.budget)] if args.budget else None
        dep = ProxyDeployment(lambda up, pol, **kw: Sidecar(procs, work, up, pol, **kw),
                              lambda **kw: Idp(procs, work, **kw), work, server.base, "bench",
                              sidecar_args=extra)
        base, pid = dep.sidecar.base, dep.sidecar.proc.popen.pid
        body = {"redirect_uris": [f"http://127.0.0.1:9/cb{i}/{'a' * 1970}" for i in range(10)],
                "client_name": "n" * 200, "token_endpoint_auth_method": "none"}
        rss_before = rss_kb(pid)
        statuses: dict[int, int] = {}
        started = time.perf_counter()
        sent = 0
        for source in range(1, 255):
            if sent >= args.max or statuses.get(503, 0) >= 20:
                break
            transport = httpx.HTTPTransport(local_address=f"127.0.1.{source}")
            with httpx.Client(transport=transport, timeout=10) as http:
                for _ in range(60):
                    status = http.post(f"{base}/register", json=body).status_code
                    statuses[status] = statuses.get(status, 0) + 1
                    sent += 1
                    if sent >= args.max:
                        break
        print(json.dumps({
            "registrations_sent": sent,
            "by_status": statuses,
            "seconds": round(time.perf_counter() - started, 1),
            "request_bytes": len(json.dumps(body)),
            "sidecar_rss_kb": {"before": rss_before, "after": rss_kb(pid)},
        }, indent=2))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
