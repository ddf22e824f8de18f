"""Helpers for bench/run.sh: key material, process accounting and the report.

  bench.py keys DIR RESOURCE             writes DIR/jwks.json (public) and DIR/token (ES256 JWT)
  bench.py procstat PID...               prints "<cpu seconds> <VmRSS kB> <VmHWM kB>" summed
  bench.py report RESULTS.jsonl          prints the table of medians and ratios
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ISSUER = "https://bench.mcp-warden.invalid"


def keys(out: Path, resource: str) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public.update(kid="bench-1", alg="ES256", use="sig")
    (out / "jwks.json").write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": resource, "sub": "bench", "scope": "mcp:tools",
              "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex}
    token = jwt.encode(claims, private, algorithm="ES256",
                       headers={"kid": "bench-1", "typ": "at+jwt"})
    (out / "token").write_text(token)


def procstat(pids: list[int]) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = rss = hwm = 0.0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    print(f"{cpu:.3f} {rss:.0f} {hwm:.0f}")


def report(path: Path) -> None:
    rows: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["target"], []).append(r)

    def med(target: str, key: str) -> float | None:
        values = [r[key] for r in rows.get(target, []) if r.get(key) is not None]
        return statistics.median(values) if values else None

    order = [t for t in ["direct", "nginx", "sidecar"] if t in rows]
    rounds = max(len(v) for v in rows.values())
    print(f"\nmedians of {rounds} alternating rounds (loopback, 16 connections; "
          f"latency at a fixed 1000 requests/s)\n")
    head = (f"{'target':<8} {'rps @16c':>9} {'x direct':>8} {'x nginx':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'CPU ms/1k':>9} {'sat ms/1k':>9} {'RSS MB':>7} {'peak MB':>7} {'errors':>6}")
    print(head)
    print("-" * len(head))
    direct_rps, nginx_rps = med("direct", "rps"), med("nginx", "rps")
    for t in order:
        rps = med(t, "rps")

        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"

        print(f"{t:<8} {fmt(rps, '9.0f')} "
              f"{fmt(rps / direct_rps if direct_rps else None, '8.2f')} "
              f"{fmt(rps / nginx_rps if nginx_rps else None, '8.2f')} "
              f"{fmt(med(t, 'p50_ms'), '7.2f')} {fmt(med(t, 'p99_ms'), '7.2f')} "
              f"{fmt(med(t, 'cpu_ms_per_1k'), '9.1f')} {fmt(med(t, 'cpu_sat_ms_per_1k'), '9.1f')} "
              f"{fmt(med(t, 'rss_mb'), '7.1f')} "
              f"{fmt(med(t, 'hwm_mb'), '7.1f')} {fmt(med(t, 'errors'), '6.0f')}")
    print("\nCPU and memory: the proxy's processes only (for direct: the upstream nginx). "
          "'CPU ms/1k': over the 1000 rps phase; 'sat ms/1k': over the 16-connection phase.")
    if "sidecar" in rows and "nginx" in rows:
        s, n = "sidecar", "nginx"
        print(f"sidecar vs nginx: throughput {med(s, 'rps') / med(n, 'rps'):.2f}x, "
              f"p99 {med(s, 'p99_ms') - med(n, 'p99_ms'):+.2f} ms, "
              f"CPU per request {med(s, 'cpu_ms_per_1k') / med(n, 'cpu_ms_per_1k'):.2f}x")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "keys":
        keys(Path(args[0]), args[1])
    elif cmd == "procstat":
        procstat([int(a) for a in args])
    elif cmd == "report":
        report(Path(args[0]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
