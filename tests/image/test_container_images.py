"""`scripts/image` builds both images daemonless (buildah) from scratch. Each image is saved,
unpacked layer by layer, and its binaries run from the image's root filesystem (chroot, as the
image's non-root user): `--version`, and the sidecar serving `/healthz`. Containers cannot run in
this sandbox, so this is the closest to `podman run` there is; it exercises the copied loader,
libraries, CA bundle and /etc/passwd exactly as packed.

Run: .venv/bin/pytest tests/image -m image (the release build takes long)."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import struct
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[2]
TAG = "image-test"
# The target is 15 MB uncompressed (decimal). Dynamically linked, the image measured 15,589,698
# bytes (the binary 12.2 MB, libc/libm/libgcc_s/the loader 3.2 MB); linked statically (no shared
# libraries) it measured 14,582,083 bytes, and 13,409,602 once the proxy path dropped hyper-util's
# pooled client.
SIDECAR_LIMIT = 15_000_000


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[str, int]]:
    """Runs scripts/image; returns {name: (reference, uncompressed bytes)}."""
    run = subprocess.run([REPO / "scripts" / "image", "--tag", TAG], capture_output=True,
                         text=True, timeout=3600)
    assert run.returncode == 0, run.stdout + run.stderr
    found = {}
    for line in run.stdout.splitlines():
        m = re.match(r"^(\S+/(mcp-warden-\w+):\S+)\t(\d+) bytes", line)
        if m:
            found[m.group(2)] = (m.group(1), int(m.group(3)))
    assert set(found) == {"mcp-warden-sidecar", "mcp-warden-operator"}, run.stdout
    print(run.stdout)
    return found


def unpack(reference: str, dest: Path) -> Path:
    """`podman save` the image and extract its layers, in order, into dest/root."""
    archive = dest / "image.tar"
    subprocess.run(["podman", "save", "--format", "docker-archive", "-o", archive, reference],
                   check=True, capture_output=True)
    layers = dest / "layers"
    with tarfile.open(archive) as t:
        t.extractall(layers)
    manifest = json.loads((layers / "manifest.json").read_text())
    root = dest / "root"
    root.mkdir()
    for layer in manifest[0]["Layers"]:
        with tarfile.open(layers / layer) as t:
            t.extractall(root)
    return root


def inspect(reference: str) -> dict:
    out = subprocess.run(["podman", "image", "inspect", reference], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]


def in_image(root: Path, *argv: str, **kw) -> subprocess.CompletedProcess:
    """Runs argv inside the unpacked root as the image's user (65532)."""
    return subprocess.run(["chroot", "--userspec=65532:65532", root, *argv], capture_output=True,
                          text=True, timeout=30, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sidecar_image_is_small_and_runs_as_non_root(images):
    reference, size = images["mcp-warden-sidecar"]
    print(f"sidecar image: {size} bytes uncompressed")
    assert size <= SIDECAR_LIMIT, f"{size} bytes > {SIDECAR_LIMIT}"
    config = inspect(reference)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/mcp-warden-sidecar"]


def test_sidecar_runs_from_the_image_root(images, tmp_path):
    root = unpack(images["mcp-warden-sidecar"][0], tmp_path)
    assert not (root / "bin" / "sh").exists(), "FROM scratch: no shell"
    assert (root / "etc" / "ssl" / "certs" / "ca-certificates.crt").stat().st_size > 10_000
    assert "65532" in (root / "etc" / "passwd").read_text()
    version = in_image(root, "/usr/local/bin/mcp-warden-sidecar", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("mcp-warden-sidecar ")

    proc, port, _ = start_in_image(root, tmp_path, "http://127.0.0.1:9")
    try:
        challenge = httpx.post(f"http://127.0.0.1:{port}/mcp", json={})
        assert challenge.status_code == 401, "the public port answers from the image too"
    finally:
        proc.terminate()
        proc.wait(10)


class Recorder:
    """An HTTP server on 127.0.0.1 that answers 404 and records the paths and Host headers it
    was asked for."""

    def __init__(self):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.headers.get("host"), self.path))
                self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Dns:
    """A DNS server on 127.0.0.1:53 (UDP) answering an A query for `name` with 127.0.0.1,
    NXDOMAIN for anything else; records the names asked."""

    def __init__(self, name: str):
        self.name, self.asked = name, []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:
                return
            labels, i = [], 12
            while query[i]:
                labels.append(query[i + 1:i + 1 + query[i]].decode())
                i += 1 + query[i]
            question_end = i + 5
            qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
            name = ".".join(labels).lower()
            self.asked.append(name)
            found = name == self.name and qtype == 1
            flags = 0x8180 if found else 0x8183
            header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if found else 0, 0, 0)
            answer = (struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + bytes([127, 0, 0, 1])
                      if found else b"")
            self.sock.sendto(header + query[12:question_end] + answer, peer)

    def close(self):
        self.sock.close()


def start_in_image(root: Path, tmp_path: Path, issuer: str) -> tuple[subprocess.Popen, int, int]:
    """Starts the image's sidecar (jwt mode, `issuer`) and waits for its /healthz."""
    work = root / "work"
    (work / "secrets").mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    (work / "policy.yaml").write_text(json.dumps({
        "apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
        "metadata": {"name": "image", "namespace": "t"},
        "spec": {"resource": {"url": f"http://127.0.0.1:{port}/mcp"}, "mode": "jwt",
                 "jwt": {"issuer": issuer, "allowInsecureHttp": True}}}))
    log = open(tmp_path / "sidecar.log", "w")
    proc = subprocess.Popen(
        ["chroot", "--userspec=65532:65532", root, "/usr/local/bin/mcp-warden-sidecar",
         "--policy", "/work/policy.yaml", "--upstream", "http://127.0.0.1:9",
         "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
         "--secrets-dir", "/work/secrets"],
        stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"], "MCP_WARDEN_LOG": "info"})
    log.close()
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()
        try:
            r = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, (tmp_path / "sidecar.log").read_text()
            time.sleep(0.1)
    assert r.status_code == 200
    return proc, port, admin


def wait_for_request(recorder: Recorder, host: str, tmp_path: Path):
    deadline = time.monotonic() + 20
    while not any(h == host for h, _ in recorder.seen):
        assert time.monotonic() < deadline, (recorder.seen, (tmp_path / "sidecar.log").read_text())
        time.sleep(0.1)


def test_sidecar_image_resolves_names_from_hosts_and_dns(images, tmp_path):
    """The static binary looks host names up the way a pod provides them: /etc/hosts (the
    kubelet's) and the DNS server in /etc/resolv.conf."""
    root = unpack(images["mcp-warden-sidecar"][0], tmp_path)
    idp = Recorder()
    dns = Dns("idp-dns.image.test")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 idp-hosts.image.test\n")
    (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1\n")
    try:
        for name in ["idp-hosts.image.test", "idp-dns.image.test"]:
            host = f"{name}:{idp.port}"
            proc, _, _ = start_in_image(root, tmp_path, f"http://{host}")
            try:
                wait_for_request(idp, host, tmp_path)
            finally:
                proc.terminate()
                proc.wait(10)
        assert "idp-dns.image.test" in dns.asked, "the name came from the DNS server"
    finally:
        idp.close()
        dns.close()


def test_operator_image_runs_both_binaries(images, tmp_path):
    reference, size = images["mcp-warden-operator"]
    print(f"operator image: {size} bytes uncompressed")
    config = inspect(reference)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/mcp-warden-operator"]
    root = unpack(reference, tmp_path)
    for binary in ["mcp-warden-operator", "mcp-warden"]:
        run = in_image(root, f"/usr/local/bin/{binary}", "--version")
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"{binary} "), run.stdout
    crd = in_image(root, "/usr/local/bin/mcp-warden", "crd")
    assert crd.returncode == 0 and "mcpauthpolicies.mcpwarden.dev" in crd.stdout


def test_chart_defaults_name_these_images(images):
    values = (REPO / "charts" / "mcp-warden" / "values.yaml").read_text()
    for name, (reference, _) in images.items():
        repository = reference.rsplit(":", 1)[0]
        assert f"repository: {repository}\n" in values, (name, repository)


@pytest.fixture(scope="module", autouse=True)
def remove_test_images():
    yield
    for name in ["mcp-warden-sidecar", "mcp-warden-operator"]:
        subprocess.run(["podman", "rmi", "-f", f"ghcr.io/mcp-warden/{name}:{TAG}"],
                       capture_output=True)
