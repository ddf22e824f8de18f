"""Real processes on loopback for mcp-warden's end-to-end tests.

Each class starts one real peer (the OpenID provider, an MCP server, Redis, the sidecar binary)
on a free 127.0.0.1 port, waits until it answers (bounded), and stops it. `Processes` keeps
every child so a session fixture (and an atexit hook, if the run dies) can stop them all.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "peers"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SIDECAR_BIN = Path(
    os.environ.get("MCP_WARDEN_SIDECAR_BIN", REPO / "target" / "debug" / "mcp-warden-sidecar")
)
START_TIMEOUT = 30.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process was not given
    before: the kernel may offer a port again once its probe socket is closed, and two ports
    asked for one process (a sidecar's listen and admin ports) must differ."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None):
    """Polls `check` until it returns True; fails after `timeout` seconds or if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.popen.returncode}\n{proc.log_tail()}")
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout}s\n{proc.log_tail() if proc else ''}")


def _die_with_parent():
    """In the child before exec: get SIGTERM when the test process dies (Linux prctl), so a
    killed test run leaves no servers behind."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Proc:
    """One child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env=None, cwd=None):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return f"--- {self.name} log ({self.log_path}) ---\n{text[-chars:]}"

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0):
        """SIGTERM the process group, SIGKILL after `timeout` seconds."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()


class Processes:
    """Every process the tests started; `stop_all` runs at session end and at interpreter exit."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        atexit.register(self.stop_all)

    def start(self, name: str, argv: list, **kw) -> Proc:
        proc = Proc(name, argv, self.log_dir, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


# ---------------------------------------------------------------- signing keys and tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """A private key the tests own; the IdP signs with it and the tests can too."""

    def __init__(self, kid: str, alg: str):
        self.kid = kid
        self.alg = alg
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private, as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private, as_dict=True)
        jwk.pop("key_ops", None)
        jwk.update(kid=kid, alg=alg, use="sig")
        self.private_jwk = jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def sign(claims: dict, key: SigningKey, headers: dict | None = None) -> str:
    """A JWT signed with `key` (header `kid` and `typ: at+jwt` unless overridden)."""
    hdr = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
    return jwt.encode(claims, key.private, algorithm=key.alg, headers=hdr)


def sign_unsecured(claims: dict, kid: str) -> str:
    """An `alg: none` token (no signature)."""
    header = {"alg": "none", "typ": "at+jwt", "kid": kid}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def sign_hs256_with(secret: bytes, claims: dict, kid: str) -> str:
    """An HS256 token whose HMAC secret is `secret` (e.g. the IdP's public key: key confusion)."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


# ---------------------------------------------------------------- peers


class Idp:
    """The real OpenID provider (npm oidc-provider, tests/peers/idp.mjs) on 127.0.0.1."""

    SERVICE_CLIENT = {
        "client_id": "e2e-service",
        "client_secret": "e2e-service-secret",
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "mcp:tools mcp:admin mcp:read",
    }

    def __init__(self, procs: Processes, work: Path, clients: list[dict] | None = None,
                 keys: list[SigningKey] | None = None, access_token_alg: str = "ES256",
                 port: int | None = None, accounts: dict[str, dict] | None = None,
                 access_token_format: str = "jwt", access_token_ttl: int = 300):
        self.procs = procs
        self.access_token_ttl = access_token_ttl
        self.work = work
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys = keys or [SigningKey("e2e-ec-1", "ES256"), SigningKey("e2e-rsa-1", "RS256")]
        self.clients = [self.SERVICE_CLIENT, *(clients or [])]
        self.access_token_alg = access_token_alg
        self.accounts = accounts or {}
        self.access_token_format = access_token_format
        self.proc: Proc | None = None
        self.start()

    @property
    def jwks_file(self) -> Path:
        return self.work / f"idp-{self.port}-keys.json"

    def start(self):
        """Writes the key and config files and starts the IdP; returns when it is ready."""
        self.jwks_file.write_text(json.dumps({"keys": [k.private_jwk for k in self.keys]}))
        config = self.work / f"idp-{self.port}.json"
        config.write_text(json.dumps({
            "port": self.port,
            "jwksFile": str(self.jwks_file),
            "accessTokenAlg": self.access_token_alg,
            "accessTokenTtl": self.access_token_ttl,
            "accessTokenFormat": self.access_token_format,
            "resourceScopes": "mcp:tools mcp:admin mcp:read",
            "clients": self.clients,
            "accounts": self.accounts,
        }))
        self.proc = self.procs.start("idp", ["node", PEERS / "idp.mjs", config], cwd=PEERS)
        wait_until(lambda: "ready http://" in self.proc.log_text(), START_TIMEOUT, "idp", self.proc)

    def stop(self):
        if self.proc:
            self.proc.stop()

    def rotate(self, new_key: SigningKey):
        """Restarts the IdP on the same port with `new_key` first (it signs from now on)."""
        self.stop()
        self.keys = [new_key, *self.keys]
        self.start()

    def key(self, kid: str) -> SigningKey:
        return next(k for k in self.keys if k.kid == kid)

    def token(self, resource: str, scope: str = "mcp:tools", client: dict | None = None) -> str:
        """A real access token from the IdP's client_credentials grant (JWT, `aud` = resource)."""
        client = client or self.SERVICE_CLIENT
        r = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client["client_id"], client["client_secret"]),
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def claims(self, resource: str, **overrides) -> dict:
        """Claims of a well-formed access token for `resource`; `overrides` replace or add
        (a value of None removes the claim)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": resource,
            "sub": "e2e-user",
            "client_id": "e2e-minted",
            "scope": "mcp:tools",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, resource: str, key: SigningKey | None = None, headers: dict | None = None,
             **overrides) -> str:
        """A token signed with the IdP's own private key (or `key`), claims per `claims`."""
        return sign(self.claims(resource, **overrides), key or self.keys[0], headers)


class McpServer:
    """An MCP server speaking Streamable HTTP at http://127.0.0.1:<port>/mcp."""

    def __init__(self, procs: Processes, kind: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        if kind == "everything":
            entry = PEERS / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
            argv = ["node", "-r", PEERS / "loopback.cjs", entry, "streamableHttp"]
            self.proc = procs.start("server-everything", argv, env={"PORT": str(self.port)},
                                    cwd=PEERS)
        elif kind == "fastmcp":
            argv = [VENV_PYTHON, PEERS / "fastmcp_server.py", str(self.port)]
            self.proc = procs.start("fastmcp", argv, cwd=PEERS)
        else:
            raise ValueError(kind)
        wait_until(self._listening, START_TIMEOUT, kind, self.proc)

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self):
        self.proc.stop()


class Redis:
    """A throw-away redis-server on 127.0.0.1: no persistence, or with `data_dir` an
    append-only file synced on every write (so even SIGKILL loses nothing)."""

    def __init__(self, procs: Processes, port: int | None = None, data_dir: Path | None = None):
        self.procs = procs
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.start()

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is None:
            argv += ["--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", self.data_dir]
        self.proc = self.procs.start("redis", argv)
        wait_until(self._ping, START_TIMEOUT, "redis", self.proc)

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self):
        self.proc.stop()

    def kill(self):
        """SIGKILL: no shutdown, no final save; clients see their connections drop."""
        os.killpg(self.proc.popen.pid, signal.SIGKILL)
        self.proc.popen.wait(5)
        self.proc.stop()


def jwt_policy(name: str, resource: str, issuer: str, **spec) -> dict:
    """A jwt-mode McpAuthPolicy document; `spec` keys are added to (or replace) the spec."""
    body = {
        "resource": {"url": resource, "scopesSupported": ["mcp:tools", "mcp:admin"]},
        "mode": "jwt",
        "jwt": {"issuer": issuer, "requiredScopes": ["mcp:tools"]},
    }
    body.update(spec)
    return {
        "apiVersion": "mcpwarden.dev/v1alpha1",
        "kind": "McpAuthPolicy",
        "metadata": {"name": name, "namespace": "e2e"},
        "spec": body,
    }


class Sidecar:
    """The real `mcp-warden-sidecar` binary with a policy file in a temp dir.

    `policy` is a function of the public base URL (so the resource URL can name the port)."""

    def __init__(self, procs: Processes, work: Path, upstream: str,
                 policy: Callable[[str], dict | str], extra_args: list[str] | None = None,
                 wait_ready: bool = True, env: dict[str, str] | None = None):
        if not SIDECAR_BIN.exists():
            raise RuntimeError(
                f"{SIDECAR_BIN} is missing: build it with `cargo build -p mcp-warden-sidecar`"
            )
        self.port = free_port()
        self.admin_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.dir = work / f"sidecar-{self.port}"
        if self.dir.exists():
            # A sidecar that has stopped had this port before (the kernel hands ports out
            # again once free): keep its files for reading, under another name.
            self.dir.rename(work / f"sidecar-{self.port}-stopped-{uuid.uuid4().hex[:8]}")
        self.dir.mkdir()
        (self.dir / "secrets").mkdir()
        self.policy_path = self.dir / "policy.yaml"
        self.write_policy(policy(self.base))
        argv = [SIDECAR_BIN, "--policy", self.policy_path, "--upstream", upstream,
                "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin_port}",
                "--secrets-dir", self.dir / "secrets", "--reload-interval", "1",
                *(extra_args or [])]
        if "--shutdown-delay" not in argv:
            argv += ["--shutdown-delay", "0"]  # tests stop many sidecars: no need to wait
        self.proc = procs.start("sidecar", argv, env={"MCP_WARDEN_LOG": "debug", **(env or {})})
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT):
        wait_until(lambda: httpx.get(f"{self.admin}/readyz", timeout=2).status_code == 200,
                   timeout, "sidecar /readyz", self.proc)

    def write_policy(self, doc: dict | str):
        """Replaces the policy file atomically (write + rename), as a ConfigMap update does."""
        text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.policy_path)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """The admin /metrics samples as {(name, frozenset(label items)): value}."""
        r = httpx.get(f"{self.admin}/metrics", timeout=5)
        r.raise_for_status()
        return parse_metrics(r.text)

    def stop(self):
        self.proc.stop()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Parses Prometheus text exposition samples (comments skipped)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"unparsable metrics line: {line!r}")
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples
