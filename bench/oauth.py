"""The oauth mode of bench/run.sh: the sidecar in oauthProxy mode with a real Redis and the real
oidc-provider (tests/peers/idp.mjs), its token endpoint driven by bench/loadgen.

Per round: CODES authorization codes minted by scripted sign-ins (each a complete browser flow:
/authorize → the provider → /callback → consent), then exchanged by the load generator (16
connections); the first CHAINS refresh tokens of round 1 become the refresh chains, each rotating
its token as fast as the endpoint answers for SECONDS. For each phase: grants per second, the
sidecar's and Redis's CPU per grant (/proc), Redis commands per grant (`INFO commandstats`, script
bodies' commands included) and the sidecar's store round trips per grant (its
mcp_warden_store_operation_duration_seconds counts: one per store operation).

Prints one JSON line per phase and round (kind "oauth"). Usage (bench/run.sh does this):
  bench/oauth.py --loadgen PATH --work DIR [--rounds 3] [--seconds 8] [--codes 1000] [--chains 32]
(uses MCP_WARDEN_SIDECAR_BIN)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "peers"))

import browser  # noqa: E402
from bench import cpu_seconds  # noqa: E402
from harness import Idp, Processes, Redis, Sidecar  # noqa: E402
from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402

UNLIMITED = {"requests": 100_000_000, "windowSeconds": 60}
MINTERS = 8


def redis_commands(port: int) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while True:
            data += s.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    calls = {}
    for line in rest.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_"):].partition(":")
            fields = dict(kv.split("=") for kv in stats.split(","))
            calls[name] = int(fields["calls"])
    return calls


def store_operations(sidecar: Sidecar) -> dict[str, float]:
    """Store operations per `op` since the sidecar started."""
    ops = {}
    for (name, labels), value in sidecar.metrics().items():
        if name == "mcp_warden_store_operation_duration_seconds_count":
            ops[dict(labels)["op"]] = value
    return ops


class Measure:
    """CPU, Redis commands and store operations around one phase."""

    def __init__(self, sidecar: Sidecar, redis: Redis):
        self.sidecar, self.redis = sidecar, redis

    def __enter__(self):
        self.cpu = cpu_seconds(self.sidecar.proc.popen.pid)
        self.redis_cpu = cpu_seconds(self.redis.proc.popen.pid)
        self.cmds = redis_commands(self.redis.port)
        self.ops = store_operations(self.sidecar)
        return self

    def __exit__(self, *exc):
        self.cpu = cpu_seconds(self.sidecar.proc.popen.pid) - self.cpu
        self.redis_cpu = cpu_seconds(self.redis.proc.popen.pid) - self.redis_cpu
        after = redis_commands(self.redis.port)
        self.cmds = {k: v - self.cmds.get(k, 0) for k, v in after.items()
                     if k != "info" and v - self.cmds.get(k, 0)}
        after_ops = store_operations(self.sidecar)
        self.ops = {k: v - self.ops.get(k, 0) for k, v in after_ops.items()
                    if v - self.ops.get(k, 0)}

    def row(self, grant: str, rnd: int, load: dict) -> dict:
        n = max(1, load["ok"])
        return {
            "kind": "oauth", "grant": grant, "round": rnd,
            "ok": load["ok"], "errors": load["errors"], "first_error": load.get("first_error"),
            "per_second": load["per_second"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
            "cpu_ms_per_grant": self.cpu * 1000 / n,
            "redis_cpu_ms_per_grant": self.redis_cpu * 1000 / n,
            "redis_commands_per_grant": sum(self.cmds.values()) / n,
            "redis_commands": {k: round(v / n, 2) for k, v in sorted(self.cmds.items())},
            "round_trips_per_grant": sum(self.ops.values()) / n,
            "store_operations": {k: round(v / n, 2) for k, v in sorted(self.ops.items())},
        }


def mint(clients: list[Client], count: int) -> list[str]:
    """`count` authorization codes from complete sign-ins, as loadgen `code` lines."""
    lines: list[str] = []
    lock = threading.Lock()
    per = [count // len(clients) + (i < count % len(clients)) for i in range(len(clients))]

    def work(client: Client, n: int):
        with httpx.Client(timeout=15) as agent:  # one browser: the provider's session is kept
            for _ in range(n):
                verifier, challenge = pkce()
                final = browser.run(client.authorize_url(challenge), stop_at=client.redirect_uri,
                                    client=agent)
                code, _ = browser.code_of(final)
                assert code, f"no code in {final}"
                with lock:
                    lines.append(" ".join([client.client_id, code, verifier, client.redirect_uri,
                                           f"{client.base}/mcp"]))

    threads = [threading.Thread(target=work, args=(c, n)) for c, n in zip(clients, per)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return lines


def loadgen(path: str, mode: str, *flags: str) -> dict:
    out = subprocess.run([path, mode, *flags], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--codes", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=32)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work)
    try:
        redis = Redis(procs)
        dep = ProxyDeployment(
            lambda up, pol, **kw: Sidecar(procs, work, up, pol, env={"MCP_WARDEN_LOG": "warn"}, **kw),
            lambda **kw: Idp(procs, work, **kw), work, "http://127.0.0.1:9", "bench",
            redis_url=redis.url, idp_options={"access_token_ttl": 3600},
            extraAuthorizeParams={},
            rateLimits={k: UNLIMITED for k in ("register", "authorize", "token", "revoke")})
        sidecar = dep.sidecar
        token_url = f"{sidecar.base}/token"
        clients = [Client(sidecar.base, name=f"bench {i}") for i in range(MINTERS)]
        chains = work / "chains"
        for rnd in range(1, args.rounds + 1):
            print(f"[oauth.py] round {rnd}: minting {args.codes} codes", file=sys.stderr)
            codes = work / f"codes-{rnd}"
            codes.write_text("\n".join(mint(clients, args.codes)) + "\n")
            issued = work / f"issued-{rnd}"
            with Measure(sidecar, redis) as m:
                load = loadgen(args.loadgen, "code", "--url", token_url, "--codes", str(codes),
                               "--connections", "16", "--save", str(issued))
            print(json.dumps(m.row("code", rnd, load)), flush=True)
            if rnd == 1:
                chains.write_text("\n".join(issued.read_text().splitlines()[:args.chains]) + "\n")
            print(f"[oauth.py] round {rnd}: refresh chains", file=sys.stderr)
            with Measure(sidecar, redis) as m:
                load = loadgen(args.loadgen, "refresh", "--url", token_url, "--chains", str(chains),
                               "--seconds", str(args.seconds))
            print(json.dumps(m.row("refresh", rnd, load)), flush=True)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
