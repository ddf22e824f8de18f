#!/usr/bin/env python3
"""Soak bench (not CI): the sidecar under a steady mixed load for a long time.

Starts the real IdP (tests/peers/idp.mjs), a small upstream (JSON answers, and an SSE stream at
GET /sse sending an event a second) and the sidecar (./target/debug unless
MCP_WARDEN_SIDECAR_BIN names another build), all on 127.0.0.1. Then, for SECONDS:
  - RPS requests a second over keep-alive connections, cycling through valid tokens (200),
    tokens with a bad signature and expired tokens (401);
  - SSE streams open through the sidecar the whole time (valid tokens).
Reports unexpected statuses, the achieved rate, and the sidecar's RSS and open file
descriptors after warm-up (the first fifth) and at the end.

Usage: .venv/bin/python bench/soak.py [SECONDS=600] [RPS=1000] [SSE=100]
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import Idp, Processes, Sidecar, SigningKey, jwt_policy  # noqa: E402

CONNECTIONS = 32


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"data: tick\n\n")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                return
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def proc_figures(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def worker(port: int, path: str, plan: list[tuple[str, int]], offset: int, interval: float,
                 until: float, statuses: Counter):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    next_at = time.monotonic()
    while time.monotonic() < until:
        token, expected = plan[i % len(plan)]
        i += CONNECTIONS
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
                     .encode())
        try:
            status = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            statuses["connection closed"] += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        statuses["expected" if status == expected else f"unexpected {status}"] += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    writer.close()


async def sse_stream(port: int, token: str, until: float, events: Counter):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        events["refused " + head.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
        return
    while time.monotonic() < until:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), timeout=5)
        except asyncio.TimeoutError:
            events["stalled"] += 1
            continue
        if not chunk:
            events["closed early"] += 1
            return
        events["events"] += chunk.count(b"data: tick")
    writer.close()


async def sample(pid: int, until: float, samples: list):
    while time.monotonic() < until:
        samples.append((time.monotonic(), *proc_figures(pid)))
        await asyncio.sleep(2)


async def run(port: int, pid: int, plan, sse_token: str, seconds: float, rps: int, sse: int):
    started = time.monotonic()
    until = started + seconds
    statuses: Counter = Counter()
    events: Counter = Counter()
    samples: list = []
    interval = CONNECTIONS / rps
    tasks = [worker(port, "/api", plan, i, interval, until, statuses) for i in range(CONNECTIONS)]
    tasks += [sse_stream(port, sse_token, until, events) for _ in range(sse)]
    tasks.append(sample(pid, until, samples))
    await asyncio.gather(*tasks)
    return statuses, events, samples, time.monotonic() - started


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600
    rps = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    sse = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    procs = Processes(work)
    # A backlog like real servers' (uvicorn and Node use 2048 and 511; http.server's is 5): the
    # SSE streams all open at once.
    ThreadingHTTPServer.request_queue_size = 1024
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        idp = Idp(procs, work)
        # The SSE streams stay open for the whole run: no idle timeout applies to them anyway.
        sidecar = Sidecar(procs, work, f"http://127.0.0.1:{upstream.server_address[1]}",
                          lambda base: jwt_policy("soak", f"{base}/mcp", idp.issuer))
        resource_url = sidecar.url
        lifetime = int(seconds) + 600
        valid = [idp.mint(resource_url, exp=int(time.time()) + lifetime) for _ in range(50)]
        forged = [idp.mint(resource_url, key=SigningKey(idp.keys[0].kid, "ES256")) for _ in range(20)]
        expired = [idp.mint(resource_url, exp=int(time.time()) - 3600) for _ in range(20)]
        plan = [(t, 200) for t in valid] + [(t, 401) for t in forged] + [(t, 401) for t in expired]
        pid = sidecar.proc.popen.pid
        statuses, events, samples, took = asyncio.run(
            run(sidecar.port, pid, plan, valid[0], seconds, rps, sse))
        total = sum(statuses.values())
        warm = [s for s in samples if s[0] - samples[0][0] >= seconds / 5] or samples
        rss_warm, fds_warm = warm[0][1], warm[0][2]
        rss_end, fds_end = samples[-1][1], samples[-1][2]
        print(f"requests: {total} in {took:.0f} s ({total / took:.0f}/s, target {rps}/s): {dict(statuses)}")
        print(f"SSE streams: {sse}, {dict(events)}")
        print(f"sidecar RSS: {rss_warm} KiB after warm-up, {rss_end} KiB at the end "
              f"({(rss_end - rss_warm) / max(rss_warm, 1) * 100:+.1f}%); peak {max(s[1] for s in samples)} KiB")
        print(f"sidecar open fds: {fds_warm} after warm-up, {fds_end} at the end")
        unexpected = sum(v for k, v in statuses.items() if k != "expected")
        sys.exit(1 if unexpected else 0)
    finally:
        upstream.shutdown()
        procs.stop_all()


if __name__ == "__main__":
    main()
