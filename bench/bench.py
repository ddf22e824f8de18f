"""Helpers for bench/run.sh: key material, process accounting and the report.

  bench.py keys DIR RESOURCE [N [SETS]]  writes DIR/jwks.json (public: an ES256 and an RS256 key),
                                         DIR/token (one ES256 JWT) and, with N, SETS files
                                         DIR/tokens-{ES256,RS256}-{1..SETS} of N distinct valid
                                         tokens each, one a line
  bench.py openssl ALG                   prints openssl's single-core verifications per second
  bench.py procstat PID...               prints "<cpu seconds> <VmRSS kB> <VmHWM kB>" summed (CPU
                                         from the threads' schedstat, nanoseconds)
  bench.py turn-row|memory-row|cold-row|sse-row …  prints one result line of a mode (see bench/run.sh)
  bench.py report RESULTS.jsonl          prints the table of medians and ratios
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ISSUER = "https://bench.mcp-warden.invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict, kid: str, alg: str, sign) -> str:
    """A compact JWS signed by `sign(bytes) -> signature` (fast enough for thousands)."""
    head = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "at+jwt"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{_b64(sign(signing_input))}"


def keys(out: Path, resource: str, count: int = 0, sets: int = 1) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_pub, rsa_pub = ec_key.public_key().public_numbers(), rsa_key.public_key().public_numbers()
    n_bytes = (rsa_pub.n.bit_length() + 7) // 8
    jwks = {"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "bench-1", "alg": "ES256", "use": "sig",
         "x": _b64(ec_pub.x.to_bytes(32, "big")), "y": _b64(ec_pub.y.to_bytes(32, "big"))},
        {"kty": "RSA", "kid": "bench-rsa", "alg": "RS256", "use": "sig",
         "n": _b64(rsa_pub.n.to_bytes(n_bytes, "big")), "e": _b64(rsa_pub.e.to_bytes(3, "big"))},
    ]}
    (out / "jwks.json").write_text(json.dumps(jwks))

    def es256(data: bytes) -> bytes:
        r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def rs256(data: bytes) -> bytes:
        return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    now = int(time.time())

    def claims() -> dict:
        return {"iss": ISSUER, "aud": resource, "sub": "bench", "scope": "mcp:tools",
                "iat": now, "exp": now + 3 * 3600, "jti": uuid.uuid4().hex}

    (out / "token").write_text(_jwt(claims(), "bench-1", "ES256", es256))
    for alg, kid, sign in (("ES256", "bench-1", es256), ("RS256", "bench-rsa", rs256)):
        for n in range(1, sets + 1) if count else ():
            tokens = (_jwt(claims(), kid, alg, sign) for _ in range(count))
            (out / f"tokens-{alg}-{n}").write_text("\n".join(tokens) + "\n")


def openssl_verify_rate(alg: str) -> None:
    """openssl's verifications per second on one core for the algorithm of ALG (RS256: RSA 2048,
    ES256: ECDSA P-256), from `openssl speed`."""
    import subprocess

    name = {"RS256": "rsa2048", "ES256": "ecdsap256"}[alg]
    text = subprocess.run(["openssl", "speed", "-seconds", "2", name], capture_output=True,
                          text=True, check=True).stdout
    header = None
    for line in text.splitlines():
        if "verify/s" in line:
            header = line.split()
        elif header and ("rsa 2048" in line or "nistp256" in line):
            values = line.split()[-(len(header) // 2):]  # the per-second columns
            names = header[len(header) // 2:]
            print(float(values[names.index("verify/s")]))
            return
    sys.exit(f"no verify rate in openssl speed output:\n{text}")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process: its threads' time on CPU in nanoseconds from schedstat (a clock
    tick, 10 ms, is too coarse for phases of a second), or utime+stime without schedstat."""
    total, found = 0, False
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
            found = True
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    if found:
        return total / 1e9
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def procstat(pids: list[int]) -> None:
    cpu = rss = hwm = 0.0
    for pid in pids:
        cpu += cpu_seconds(pid)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    print(f"{cpu:.6f} {rss:.0f} {hwm:.0f}")


def oha_counts(d: dict) -> tuple[int, int]:
    """Requests answered 200 and requests failed in oha's JSON report."""
    codes = d.get("statusCodeDistribution", {})
    errors = {k: v for k, v in d.get("errorDistribution", {}).items()
              if k != "aborted due to deadline"}  # requests in flight when the phase ends
    return (sum(v for k, v in codes.items() if k == "200"),
            sum(v for k, v in codes.items() if k != "200") + sum(errors.values()))


def turn_row(kind, t, rnd, part, run, cpu0, cpu1) -> None:
    """One result line of a target's turn in a round's phase (`kind`: "sat" saturated, "rate"
    at a fixed rate): requests/s and latency from oha's JSON, CPU seconds before and after."""
    run = json.load(open(run))
    ok, bad = oha_counts(run)
    print(json.dumps({
        "kind": kind, "target": t, "round": int(rnd), "part": int(part),
        "rps": ok / run["summary"]["total"],
        "p50_ms": run["latencyPercentiles"]["p50"] * 1000,
        "p99_ms": run["latencyPercentiles"]["p99"] * 1000,
        "cpu_ms_per_1k": (float(cpu1) - float(cpu0)) * 1e6 / ok if ok else None,
        "errors": bad,
    }))


def memory_row(t, rnd, rss, hwm) -> None:
    """A target's RSS and its peak (KB, from /proc) after a round's phases."""
    print(json.dumps({"kind": "memory", "target": t, "round": int(rnd),
                      "rss_mb": float(rss) / 1024, "hwm_mb": float(hwm) / 1024}))


def cold_row(alg, rnd, cold, warm, paced, cold0, cold1, warm0, warm1, paced1) -> None:
    """One cold-token result line: the loadgen's JSON of the cold pass, the warm pass as fast as
    it goes and the warm pass paced at the cold pass's rate, and the sidecar's CPU seconds
    before and after the cold and the warm pass and after the paced one (which starts where the
    warm one ends)."""
    cold, warm, paced = json.loads(cold), json.loads(warm), json.loads(paced)
    c0, c1, w0, w1, p1 = (float(c) for c in (cold0, cold1, warm0, warm1, paced1))
    per_1k = lambda cpu, run: cpu * 1e6 / run["ok"] if run["ok"] else None  # noqa: E731
    cold_cpu, warm_cpu, paced_cpu = per_1k(c1 - c0, cold), per_1k(w1 - w0, warm), per_1k(p1 - w1, paced)
    print(json.dumps({
        "kind": "cold", "alg": alg, "round": int(rnd),
        "cold_rps": cold["per_second"], "warm_rps": warm["per_second"], "paced_rps": paced["per_second"],
        "cold_cpu_ms_per_1k": cold_cpu,
        "warm_cpu_ms_per_1k": warm_cpu,
        "paced_cpu_ms_per_1k": paced_cpu,
        # CPU ms per 1k requests = µs per request; the difference between the cold pass and the
        # warm one at the same rate is one verification. A warm pass at its own (higher) rate
        # would leave in the difference whatever part of a request's cost depends on the rate.
        "verify_per_s": 1e6 / (cold_cpu - paced_cpu)
        if cold_cpu and paced_cpu and cold_cpu > paced_cpu else None,
        "errors": cold["errors"] + warm["errors"] + paced["errors"],
        "first_error": cold.get("first_error") or warm.get("first_error") or paced.get("first_error"),
    }))


def sse_row(t, hold_json, rss0, rss1, cpu0, cpu1, t0, t1) -> None:
    """One SSE result line: the loadgen's report, RSS before the streams and while held, and
    CPU over the idle window."""
    hold = json.load(open(hold_json))
    opened = hold["opened"] or 1
    print(json.dumps({
        "kind": "sse", "target": t, **hold,
        "rss_kb_per_stream": (float(rss1) - float(rss0)) / opened,
        "rss_mb": float(rss1) / 1024,
        "idle_cpu_pct": (float(cpu1) - float(cpu0)) * 100 / (float(t1) - float(t0)),
    }))


def _fmt(v, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else format(v, spec)


def table(rows: list[tuple]) -> str:
    """rows: (figure, sidecar, baseline, baseline name, goal, format[, ratio]), numbers or text;
    the ratio, unless given, is sidecar/baseline when both are numbers."""
    head = ("figure", "sidecar", "baseline", "(baseline)", "ratio", "goal")
    lines = []
    for figure, value, base, base_name, goal, spec, *given in rows:
        ratio = (given[0] if given else
                 value / base if isinstance(value, (int, float)) and isinstance(base, (int, float))
                 and base else None)
        lines.append((figure, _fmt(value, spec), _fmt(base, spec), base_name,
                      f"{ratio:.2f}x" if ratio is not None else "-", goal))
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    out = []
    for n, r in enumerate([head, *lines]):
        cells = [str(c).ljust(w) if i in (0, 3, 5) else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def paired_ratio(results: list[dict], kind: str, key: str, target: str, baseline: str) -> float | None:
    """The median of target/baseline over the turns of `kind` in which both took part: each
    pair measured seconds apart, under one state of the machine."""
    pairs = {}
    for r in results:
        if r["kind"] == kind and r["target"] in (target, baseline) and r.get(key):
            pairs.setdefault((r["round"], r["part"]), {})[r["target"]] = r[key]
    ratios = [v[target] / v[baseline] for v in pairs.values() if len(v) == 2]
    return statistics.median(ratios) if ratios else None


def report(path: Path) -> None:
    results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def med(key: str, **match):
        values = [r[key] for r in results
                  if all(r.get(k) == v for k, v in match.items()) and r.get(key) is not None]
        return statistics.median(values) if values else None

    rows: list[tuple] = []
    rounds = max((r.get("round", 1) for r in results), default=0)
    if any(r["kind"] == "sat" for r in results):
        def row(name, kind, key, base_name, goal, spec, target="sidecar", baseline="nginx"):
            """A table row: the target's and the baseline's medians of `key` in the turns of
            `kind`, and the median of their paired ratios."""
            return (name, med(key, kind=kind, target=target), med(key, kind=kind, target=baseline),
                    base_name, goal, spec, paired_ratio(results, kind, key, target, baseline))

        errors = {t: sum(r["errors"] for r in results if r["kind"] in ("sat", "rate") and r["target"] == t)
                  for t in ("nginx", "sidecar")}
        rows += [
            row("proxy: requests/s, 16 connections", "sat", "rps", "nginx", ">= 1.10x", ".0f"),
            row("proxy: requests/s, 16 connections", "sat", "rps", "upstream alone", "", ".0f", baseline="direct"),
            row("proxy: p50 ms at 1000 requests/s", "rate", "p50_ms", "nginx", "", ".2f"),
            row("proxy: p99 ms at 1000 requests/s", "rate", "p99_ms", "nginx", "<= 1.00x", ".2f"),
            row("proxy: CPU ms per 1k requests at 1000/s", "rate", "cpu_ms_per_1k", "nginx", "<= 1.00x", ".1f"),
            row("proxy: CPU ms per 1k requests, saturated", "sat", "cpu_ms_per_1k", "nginx", "<= 1.00x", ".1f"),
            ("proxy: RSS MB", med("rss_mb", kind="memory", target="sidecar"),
             med("rss_mb", kind="memory", target="nginx"), "nginx", "<= 12 MB", ".1f"),
            ("proxy: errors", errors["sidecar"], errors["nginx"], "nginx", "0", ".0f"),
        ]
        if any(r["kind"] == "sat" and r["target"] == "audit-off" for r in results):
            phases = (("saturated", "sat"), ("at 1000/s", "rate"))
            rows += [
                row(f"audit: CPU ms per 1k requests, {phase}", kind, "cpu_ms_per_1k", "audit off",
                    "<= 1.05x", ".1f", baseline="audit-off")
                for phase, kind in phases
            ]
            # Like for like: nginx writes no access log here.
            rows += [
                row(f"audit off: CPU ms per 1k requests, {phase}", kind, "cpu_ms_per_1k", "nginx",
                    "", ".1f", target="audit-off")
                for phase, kind in phases
            ]
    for alg in ("RS256", "ES256"):
        if not any(r["kind"] == "cold" and r["alg"] == alg for r in results):
            continue
        c = lambda key: med(key, kind="cold", alg=alg)  # noqa: E731
        cold_cpu, warm_cpu = c("cold_cpu_ms_per_1k"), c("warm_cpu_ms_per_1k")
        # The median of the rounds' rates, each from one round's cold and warm pass (not the
        # difference of two medians, which may pair passes of different rounds).
        verify_rate, openssl = c("verify_per_s"), med("verify_per_s", kind="openssl", alg=alg)
        rows += [
            (f"cold {alg}: requests/s, every token new", c("cold_rps"), c("warm_rps"), "same tokens cached", "", ".0f"),
            (f"cold {alg}: CPU ms per 1k requests", cold_cpu, warm_cpu, "same tokens cached", "", ".1f"),
            (f"cold {alg}: CPU ms per 1k, cached at cold rate", cold_cpu, c("paced_cpu_ms_per_1k"),
             "same tokens, same rate", "", ".1f"),
            (f"cold {alg}: verifications/s per core", verify_rate, openssl, "openssl speed", ">= 0.90x", ".0f"),
            (f"cold {alg}: the same, one thread in a loop", med("verify_per_s", kind="loop", alg=alg),
             openssl, "openssl speed", "", ".0f"),
            (f"cold {alg}: errors", c("errors"), None, "", "0", ".0f"),
        ]
    if any(r["kind"] == "sse" for r in results):
        s = {t: next((r for r in results if r["kind"] == "sse" and r["target"] == t), {})
             for t in ("sidecar", "nginx")}

        def streams(r):
            return (f"{r['opened']}/{r['failed']}/{r['dropped']}/{r['min_events']}"
                    if r else None)
        rows += [
            ("sse: RSS KB per open stream", s["sidecar"].get("rss_kb_per_stream"), s["nginx"].get("rss_kb_per_stream"), "nginx", "<= 8 KB", ".1f"),
            ("sse: CPU % of a core, streams idle", s["sidecar"].get("idle_cpu_pct"), s["nginx"].get("idle_cpu_pct"), "nginx", "~ 0", ".2f"),
            ("sse: open/failed/dropped/min events", streams(s["sidecar"]), streams(s["nginx"]), "nginx", "0 dropped", ""),
        ]
    for grant in ("refresh", "code"):
        if not any(r["kind"] == "oauth" and r["grant"] == grant for r in results):
            continue
        o = lambda key: med(key, kind="oauth", grant=grant)  # noqa: E731
        rows += [
            (f"oauth {grant}: grants/s", o("per_second"), 2000.0 if grant == "refresh" else None,
             "goal" if grant == "refresh" else "", ">= 2000/s" if grant == "refresh" else "", ".0f"),
            (f"oauth {grant}: p99 ms", o("p99_ms"), None, "", "", ".2f"),
            (f"oauth {grant}: sidecar CPU ms per grant", o("cpu_ms_per_grant"), None, "", "", ".3f"),
            (f"oauth {grant}: Redis CPU ms per grant", o("redis_cpu_ms_per_grant"), None, "", "", ".3f"),
            (f"oauth {grant}: Redis commands per grant", o("redis_commands_per_grant"), None, "", "", ".2f"),
            (f"oauth {grant}: Redis round trips per grant", o("round_trips_per_grant"), 3.0, "goal", "<= 3", ".2f"),
            (f"oauth {grant}: errors", o("errors"), None, "", "0", ".0f"),
        ]
    load = med("load", kind="machine") or os.getloadavg()[1]
    print(f"\nmcp-warden-sidecar benchmarks on 127.0.0.1, {os.cpu_count()} CPUs, 5-minute load "
          f"average {load:.1f} (median over the modes);\nmedians of {rounds} alternating rounds "
          f"where rounds apply\n")
    print(table(rows))
    print("\nCPU and memory: the measured proxy's processes only (time on CPU and RSS from "
          "/proc).\nproxy and audit ratios: the median of paired ratios, each pair from one turn of a "
          "round (the targets\ntaking turns of a few seconds, so that one state of the machine "
          "affects both).\nsse streams: opened/failed/dropped/fewest events a stream received.")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "keys":
        keys(Path(args[0]), args[1], *(int(a) for a in args[2:4]))
    elif cmd == "openssl":
        openssl_verify_rate(args[0])
    elif cmd == "procstat":
        procstat([int(a) for a in args])
    elif cmd == "turn-row":
        turn_row(*args)
    elif cmd == "memory-row":
        memory_row(*args)
    elif cmd == "cold-row":
        cold_row(*args)
    elif cmd == "sse-row":
        sse_row(*args)
    elif cmd == "report":
        report(Path(args[0]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
