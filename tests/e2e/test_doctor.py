"""`mcp-warden doctor URL`: probes MCP endpoints the way a client does. Against our sidecar in
both modes and a FastMCP server with its own JWT verifier it must find nothing wrong; against
deliberately broken setups (small HTTP servers here) it must name the exact fault."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

from harness import PEERS, REPO, VENV_PYTHON, free_port, jwt_policy, wait_until  # noqa: E402
from oauth_support import Client, ProxyDeployment  # noqa: E402

CLI_BIN = REPO / "target" / "debug" / "mcp-warden"


def doctor(url: str, *args: str) -> tuple[int, dict, str]:
    """Runs the CLI twice (JSON and text); returns (exit code, JSON report, text report)."""
    runs = [subprocess.run([CLI_BIN, "doctor", url, *args, "--output", out], capture_output=True,
                           text=True, timeout=120) for out in ("json", "text")]
    assert runs[0].returncode == runs[1].returncode, runs
    return runs[0].returncode, json.loads(runs[0].stdout), runs[1].stdout


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def failures(report: dict) -> list[str]:
    return [c["id"] for c in report["checks"] if c["status"] == "fail"]


def test_sidecar_jwt_mode_with_a_real_token(start_sidecar, idp, everything):
    sidecar = start_sidecar(everything.base, lambda base: jwt_policy(
        "doctor-jwt", f"{base}/mcp", idp.issuer))
    token = idp.token(sidecar.url)
    code, report, text = doctor(sidecar.url, "--token", token)
    assert code == 0 and report["ok"], text
    checks = by_id(report)
    for id in ["challenge", "challenge_scope", "prm_path", "authorization_servers", "as_rfc8414", "as_oidc",
               "as_issuer", "pkce_s256", "iss_parameter", "jwks", "token_issuer",
               "token_audience", "token_expiry", "token_scopes", "initialize"]:
        assert checks[id]["status"] == "pass", (id, text)
    assert "initialize succeeded: mcp-servers/everything" in checks["initialize"]["summary"]
    # No spec.cors: a browser origin is refused, which is a warning, not a failure.
    assert checks["cors_preflight"]["status"] == "warn"
    assert f"✔ prm_path: {sidecar.base}/.well-known/oauth-protected-resource/mcp names resource" in text
    assert text.splitlines()[-1].endswith(" 0 failed")


def test_sidecar_jwt_mode_token_for_another_resource_fails(start_sidecar, idp, everything):
    sidecar = start_sidecar(everything.base, lambda base: jwt_policy(
        "doctor-jwt-aud", f"{base}/mcp", idp.issuer))
    token = idp.token("http://127.0.0.1:9/other")
    code, report, text = doctor(sidecar.url, "--token", token)
    assert code == 1 and failures(report) == ["token_audience", "initialize"], text
    assert "✘ token_audience: aud [\"http://127.0.0.1:9/other\"] does not name" in text
    assert f"    fix: request the token with resource={sidecar.url} (RFC 8707)" in text


def test_sidecar_oauth_proxy_mode(start_sidecar, start_idp, work, everything):
    # With the MCP Inspector's origin allowed, browser clients pass the CORS checks too.
    deployment = ProxyDeployment(start_sidecar, start_idp, work, everything.base, "doctor-proxy",
                                 spec_overrides={"cors": {"allowedOrigins": ["http://localhost:6274"]}})
    base = deployment.sidecar.base
    tokens = Client(base).full_login()
    code, report, text = doctor(f"{base}/mcp", "--token", tokens["access_token"])
    assert code == 0, text
    checks = by_id(report)
    assert all(c["status"] == "pass" for c in report["checks"]), text
    assert "dynamic registration" in checks["client_registration"]["summary"]
    assert "client ID metadata documents" in checks["client_registration"]["summary"]
    assert checks["as_issuer"]["summary"] == f'issuer "{base}" matches authorization_servers'


def test_fastmcp_with_its_own_jwt_verifier(procs, idp):
    port = free_port()
    proc = procs.start("fastmcp-jwt", [VENV_PYTHON, PEERS / "fastmcp_server.py", str(port),
                                       "--jwt", idp.issuer], cwd=PEERS)
    url = f"http://127.0.0.1:{port}/mcp"
    import httpx

    wait_until(lambda: httpx.post(url, json={}).status_code == 401, 30, "fastmcp", proc)
    token = idp.token(url)
    code, report, text = doctor(url, "--token", token)
    assert code == 0, text
    checks = by_id(report)
    for id in ["challenge", "prm_path", "as_issuer", "pkce_s256", "jwks", "token_audience",
               "initialize"]:
        assert checks[id]["status"] == "pass", (id, text)
    assert "mcp-warden-e2e" in checks["initialize"]["summary"]


# ------------------------------------------------------------------ deliberately broken setups


class Broken:
    """A tiny HTTP server answering from `routes` {path: (status, json body)}; any POST to
    /mcp gets `challenge` (the WWW-Authenticate value) with a 401."""

    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.routes: dict[str, tuple[int, dict]] = {}
        self.challenge = (f'Bearer resource_metadata="{self.base}/.well-known/'
                          f'oauth-protected-resource/mcp", scope="mcp:tools"')
        routes = self.routes
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict | None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                status, body = routes.get(self.path, (404, {"error": "not found"}))
                self.reply(status, body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.reply(401, {"error": "unauthorized"}, {"www-authenticate": owner.challenge})

            def do_OPTIONS(self):
                self.reply(404, None)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def good_metadata(self, issuer: str):
        self.routes["/.well-known/oauth-protected-resource/mcp"] = (200, {
            "resource": self.url, "authorization_servers": [issuer]})

    def close(self):
        self.server.shutdown()


@pytest.fixture
def broken():
    server = Broken()
    yield server
    server.close()


def test_wrong_resource_in_metadata(broken, idp):
    broken.good_metadata(idp.issuer)
    broken.routes["/.well-known/oauth-protected-resource/mcp"][1]["resource"] = f"{broken.base}/"
    code, report, text = doctor(broken.url)
    assert code == 1 and failures(report) == ["prm_path"], text
    assert by_id(report)["prm_root"]["status"] == "warn"
    assert by_id(report)["prm_path"]["summary"] == (
        f"{broken.base}/.well-known/oauth-protected-resource/mcp names resource "
        f"\"{broken.base}/\", not \"{broken.url}\"; clients refuse a mismatch")
    assert f'    fix: set `resource` in that document to exactly "{broken.url}"' in text


def test_missing_metadata(broken):
    code, report, text = doctor(broken.url)
    assert code == 1 and failures(report) == ["prm_path", "prm_root"], text
    assert by_id(report)["prm_path"]["summary"] == (
        f"no protected-resource metadata at {broken.base}/.well-known/oauth-protected-resource/mcp"
        " (HTTP 404)")
    assert "authorization_servers" not in by_id(report), "nothing to follow without metadata"


def test_issuer_mismatch(broken, idp):
    # The resource names the IdP's issuer with a trailing slash: byte-for-byte, that is not the
    # issuer the IdP's metadata states.
    broken.good_metadata(idp.issuer + "/")
    code, report, text = doctor(broken.url)
    assert code == 1 and failures(report) == ["as_issuer"], text
    summary = by_id(report)["as_issuer"]["summary"]
    assert f"{idp.issuer}/.well-known/openid-configuration says issuer \"{idp.issuer}\"" in summary
    assert summary.endswith(
        f"but the protected-resource metadata names \"{idp.issuer}/\"; clients refuse the mismatch")


def test_unprotected_endpoint_and_no_s256(broken):
    broken.challenge = "Basic realm=x"
    broken.good_metadata(broken.base)
    broken.routes["/.well-known/oauth-authorization-server"] = (200, {
        "issuer": broken.base, "authorization_endpoint": f"{broken.base}/authorize",
        "token_endpoint": f"{broken.base}/token", "code_challenge_methods_supported": ["plain"]})
    code, report, text = doctor(broken.url)
    assert code == 1 and failures(report) == ["challenge", "pkce_s256"], text
    assert "✘ challenge: 401 without a WWW-Authenticate Bearer challenge" in text
    assert "✘ pkce_s256: code_challenge_methods_supported does not list S256" in text
