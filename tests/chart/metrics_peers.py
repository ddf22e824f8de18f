"""Runs the real sidecar and operator binaries on loopback just long enough to read /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from chart_tools import REPO

SIDECAR_BIN = Path(os.environ.get("MCP_WARDEN_SIDECAR_BIN", REPO / "target" / "debug" / "mcp-warden-sidecar"))
OPERATOR_BIN = Path(os.environ.get("MCP_WARDEN_OPERATOR_BIN", REPO / "target" / "debug" / "mcp-warden-operator"))
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def require_binary(path: Path, crate: str) -> None:
    if not path.exists():
        raise AssertionError(f"{path} does not exist: build it with `cargo build -p {crate}` "
                             "(the dashboard test reads the metric names from the running binary)")


# Variables that would point a Kubernetes client at a real cluster instead of the kubeconfig.
CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


@contextmanager
def running(argv: list[str], log: Path, env: dict | None = None):
    """Starts argv in its own process group; kills the group on exit."""
    full_env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    full_env.update(env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def scrape_when_up(proc: subprocess.Popen, url: str, log: Path) -> str:
    """Polls url until it answers 200 (bounded); fails with the process log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            status, body = http_get(url)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {START_TIMEOUT}s:\n{log.read_text(errors='replace')[-3000:]}")


def sidecar_metrics(policy_yaml: str, work: Path, name: str) -> str:
    """/metrics of a sidecar after start-up and one unauthenticated request."""
    require_binary(SIDECAR_BIN, "mcp-warden-sidecar")
    policy = work / f"{name}.yaml"
    policy.write_text(policy_yaml)
    public, admin = free_port(), free_port()
    log = work / f"{name}.log"
    argv = [SIDECAR_BIN, "--policy", policy, "--upstream", f"http://127.0.0.1:{free_port()}",
            "--listen", f"127.0.0.1:{public}", "--admin", f"127.0.0.1:{admin}",
            "--secrets-dir", work / "secrets", "--resource-url", f"http://127.0.0.1:{public}/mcp",
            "--shutdown-delay", "0"]
    with running(argv, log) as proc:
        scrape_when_up(proc, f"http://127.0.0.1:{admin}/metrics", log)
        status, _ = http_get(f"http://127.0.0.1:{public}/mcp")
        assert status == 401, f"unauthenticated request answered {status}"
        status, body = http_get(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200
        return body


def operator_metrics(work: Path) -> str:
    """/metrics of the operator whose Kubernetes API server is unreachable."""
    require_binary(OPERATOR_BIN, "mcp-warden-operator")
    api = f"https://127.0.0.1:{free_port()}"
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
  - name: unreachable
    cluster:
      server: {api}
      insecure-skip-tls-verify: true
users:
  - name: nobody
    user:
      token: not-a-real-token
contexts:
  - name: unreachable
    context: {{cluster: unreachable, user: nobody, namespace: mcp-system}}
current-context: unreachable
""")
    admin = free_port()
    log = work / "operator.log"
    argv = [OPERATOR_BIN, "--admin-listen", f"127.0.0.1:{admin}", "--webhook-listen", f"127.0.0.1:{free_port()}",
            "--namespace", "mcp-system", "--leader-election", "false"]
    with running(argv, log, env={"KUBECONFIG": str(kubeconfig)}) as proc:
        return scrape_when_up(proc, f"http://127.0.0.1:{admin}/metrics", log)
