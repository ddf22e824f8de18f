"""Session fixtures: real peers on loopback (see harness.py), stopped at teardown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (  # noqa: E402
    PEERS, VENV_PYTHON, Idp, McpServer, Processes, Redis, Sidecar, free_port, wait_until,
)


@pytest.fixture(scope="session")
def procs(tmp_path_factory) -> Processes:
    """Every process the session starts; all stopped at the end (or at exit if the run dies)."""
    group = Processes(tmp_path_factory.mktemp("logs"))
    yield group
    group.stop_all()


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def idp(procs, work) -> Idp:
    """The shared OpenID provider (ES256 + RS256 keys, a client_credentials client)."""
    return Idp(procs, work)


@pytest.fixture(scope="session")
def start_idp(procs, work):
    """Factory for an IdP of one's own: `start_idp(clients=[...], keys=[...])`."""
    return lambda **kw: Idp(procs, work, **kw)


@pytest.fixture(scope="module")
def echo(procs) -> str:
    """tests/peers/wsgi_echo.py on a free loopback port; answers with the WSGI environ (the
    request headers it saw). Returns its base URL."""
    port = free_port()
    proc = procs.start("wsgi-echo", [VENV_PYTHON, PEERS / "wsgi_echo.py", str(port)])
    wait_until(lambda: "ready" in proc.log_text(), 30, "wsgi echo", proc)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def everything(procs) -> McpServer:
    """npm @modelcontextprotocol/server-everything (Streamable HTTP) on loopback."""
    return McpServer(procs, "everything")


@pytest.fixture(scope="session")
def fastmcp(procs) -> McpServer:
    """tests/peers/fastmcp_server.py: `whoami` echoes the request headers it received."""
    return McpServer(procs, "fastmcp")


@pytest.fixture(scope="session")
def redis(procs) -> Redis:
    """A redis-server on a free loopback port."""
    return Redis(procs)


@pytest.fixture(scope="session")
def start_redis(procs):
    """Factory for a Redis of one's own (e.g. to stop and restart it)."""
    return lambda **kw: Redis(procs, **kw)


@pytest.fixture(scope="session")
def start_sidecar(procs, work):
    """Factory: `start_sidecar(upstream_base_url, policy_fn, extra_args=None)` where `policy_fn`
    maps the sidecar's public base URL to a policy document (dict or YAML text)."""
    return lambda upstream, policy, **kw: Sidecar(procs, work, upstream, policy, **kw)
