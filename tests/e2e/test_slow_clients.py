"""Slow and many clients: the header read timeout, the idle timeout, the connection cap and the
HTTP/2 stream limit, against the real sidecar binary on loopback (raw sockets)."""

from __future__ import annotations

import resource
import subprocess
import selectors
import socket
import struct
import time

import httpx
import pytest
from harness import PEERS, jwt_policy
from recorder import Recorder

HEADER_TIMEOUT = 2
IDLE_TIMEOUT = 5
SLOWLORIS = 1000
# Functional bounds only: generous margins over the configured timeouts.
MARGIN = 10


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    yield rec
    rec.stop()


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    """1,000 client sockets here and as many in the sidecar (which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SLOWLORIS
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the fd hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _sidecar(start_sidecar, idp, recorder, *args, header_timeout=HEADER_TIMEOUT):
    return start_sidecar(
        recorder.base,
        lambda base: jwt_policy("slow", f"{base}/mcp", idp.issuer),
        extra_args=["--header-read-timeout", str(header_timeout),
                    "--idle-timeout", str(IDLE_TIMEOUT), *args],
    )


@pytest.fixture(scope="module")
def sidecar(start_sidecar, idp, recorder, enough_file_descriptors):
    return _sidecar(start_sidecar, idp, recorder, "--max-connections", str(SLOWLORIS + 100))


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_closed(socks: list[socket.socket], within: float, trickle: bool = False) -> list:
    """Waits until the sidecar closed every socket (EOF or reset), sending one more header byte
    to each open one every half second if `trickle`; returns those still open after `within`."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_socks = set(socks)
    deadline = time.monotonic() + within
    next_trickle = time.monotonic()
    while open_socks and time.monotonic() < deadline:
        if trickle and time.monotonic() >= next_trickle:
            for s in list(open_socks):
                try:
                    s.send(b"X")
                except BlockingIOError:
                    pass
                except OSError:
                    open_socks.discard(s)
                    sel.unregister(s)
            next_trickle = time.monotonic() + 0.5
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            if _closed_by_peer(s):
                open_socks.discard(s)
                sel.unregister(s)
    sel.close()
    return list(open_socks)


def test_slowloris_does_not_stop_legitimate_requests_and_is_closed_after_the_header_timeout(
    sidecar, idp, recorder
):
    token = idp.mint(sidecar.url)
    slow = []
    try:
        for _ in range(SLOWLORIS):
            s = _connect(sidecar.port)
            # Never finishes its headers.
            s.send(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        before = recorder.count()
        # Fresh connections, while all 1,000 are open.
        for _ in range(20):
            r = httpx.get(sidecar.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, r.text
        assert recorder.count() == before + 20
        still_open = _wait_closed(slow, HEADER_TIMEOUT + MARGIN, trickle=True)
        assert not still_open, f"{len(still_open)} slow connections outlived the header timeout"
    finally:
        for s in slow:
            s.close()
    # The sidecar still serves.
    r = httpx.get(sidecar.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200


def test_a_silent_connection_is_closed_after_the_header_timeout(sidecar):
    s = _connect(sidecar.port)
    try:
        assert not _wait_closed([s], HEADER_TIMEOUT + MARGIN)
    finally:
        s.close()


def test_an_idle_keep_alive_connection_outlives_the_header_timeout_until_the_idle_timeout(
    sidecar, idp
):
    token = idp.mint(sidecar.url)
    request = (f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
               .encode())
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as s:
        s.sendall(request)
        assert _read_response(s).startswith(b"HTTP/1.1 200")
        # Waiting for the next request is not reading headers.
        time.sleep(HEADER_TIMEOUT + 1)
        s.sendall(request)
        assert _read_response(s).startswith(b"HTTP/1.1 200")
        s.setblocking(False)
        started = time.monotonic()
        assert not _wait_closed([s], IDLE_TIMEOUT + MARGIN)
        assert time.monotonic() - started > HEADER_TIMEOUT


def test_connections_over_the_cap_are_closed_at_once(start_sidecar, idp, recorder):
    capped = _sidecar(start_sidecar, idp, recorder, "--max-connections", "5",
                      header_timeout=60)
    held = [_connect(capped.port) for _ in range(5)]
    try:
        time.sleep(0.5)
        extra = _connect(capped.port)
        try:
            # Well before the 60 s header timeout.
            assert not _wait_closed([extra], 10)
        finally:
            extra.close()
    finally:
        for s in held:
            s.close()
    token = idp.mint(capped.url)
    deadline = time.monotonic() + 10
    while True:
        try:
            r = httpx.get(capped.url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            break
        except httpx.TransportError:
            # The held connections' places are given back as the sidecar notices them closing.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert r.status_code == 200


def test_http2_announces_the_stream_limit(start_sidecar, idp, recorder):
    limited = _sidecar(start_sidecar, idp, recorder, "--max-streams-per-connection", "7")
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00"
                  + struct.pack(">I", 0))
        head = _recv_exact(s, 9)
        length = int.from_bytes(head[:3], "big")
        assert head[3] == 0x4, "the server's first frame is SETTINGS"
        payload = _recv_exact(s, length)
    settings = {struct.unpack(">H", payload[i:i + 2])[0]: struct.unpack(">I", payload[i + 2:i + 6])[0]
                for i in range(0, length, 6)}
    assert settings.get(0x3) == 7  # SETTINGS_MAX_CONCURRENT_STREAMS


def _read_response(s: socket.socket) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        body += chunk
    assert len(body) == length, "nothing beyond the response"
    return head + b"\r\n\r\n" + body


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_http2_requests_are_served(sidecar, idp, recorder):
    """HTTP/2 with prior knowledge (as behind an h2c-speaking proxy): requests one after another
    and at once on one connection, through the same limits (Node's http2 client)."""
    token = idp.mint(sidecar.url)
    before = recorder.count()
    out = subprocess.run(["node", PEERS / "h2-client.mjs", sidecar.base, token],
                         capture_output=True, text=True, timeout=30, cwd=PEERS)
    assert out.stdout.split() == ["200"] * 6, out.stderr
    assert recorder.count() == before + 6
