"""The audit trail against real peers: the oidc-provider IdP, FastMCP (whose `whoami` tool echoes
the headers it received) and the sidecar binary writing its audit lines to a file."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from harness import free_port, jwt_policy, wait_until
from mcp_http import ACCEPT, PROTOCOL_VERSION, bearer, call, open_session, parse_rpc_response, rpc_body


def audit_policy(idp, path, **audit):
    def policy(base):
        return jwt_policy(
            "e2e-audit", f"{base}/mcp", idp.issuer,
            rules=[{"method": "tools/call", "tools": ["delete_*"], "scopes": ["mcp:admin"]}],
            audit={"destination": str(path), **audit},
        )
    return policy


class AuditLog:
    def __init__(self, path):
        self.path = path

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def wait_for(self, request_id: str, count: int = 1) -> list[dict]:
        """The lines of one request, once `count` of them were written."""
        found = []

        def check():
            found[:] = [e for e in self.lines() if e.get("request_id") == request_id]
            return len(found) >= count

        wait_until(check, 10, f"{count} audit line(s) for {request_id}")
        return found


@pytest.fixture(scope="module")
def audited(start_sidecar, idp, fastmcp, work):
    path = work / f"audit-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(fastmcp.base, audit_policy(
        idp, path, includeArguments=True, redactFields=["b"],
        toolMetrics=["whoami"]))
    return sidecar, AuditLog(path)


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


def test_allowed_tool_call_is_audited_with_caller_and_request_id(audited, idp, http):
    sidecar, log = audited
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    r = call(http, sidecar.url, token, session, "tools/call",
             {"name": "add", "arguments": {"a": 2, "b": 40}},
             extra={"X-Request-Id": "client-req-42"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "client-req-42"
    assert "42" in parse_rpc_response(r)["result"]["content"][0]["text"]

    [event] = log.wait_for("client-req-42")
    assert event["kind"] == "mcp_warden.audit"
    assert event["policy"] == "e2e-audit"
    assert (event["outcome"], event["reason"], event["status"]) == ("allowed", "none", 200)
    assert event["method"] == "tools/call" and event["tool"] == "add"
    assert event["caller"]["client_id"] == "e2e-service"
    assert event["caller"]["iss"] == idp.issuer
    assert "mcp:tools" in event["caller"]["scopes"]
    assert event["arguments"] == {"a": 2, "b": "[redacted]"}
    assert len(event["session"]) == 16 and event["session"] not in session
    assert event["latency_ms"] >= 0 and event["time"].endswith("Z")
    text = log.path.read_text()
    assert token not in text and token.split(".")[2] not in text
    assert '"b":40' not in text


def test_client_request_id_reaches_the_app(audited, idp, http):
    sidecar, log = audited
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    r = call(http, sidecar.url, token, session, "tools/call", {"name": "whoami"},
             extra={"X-Request-Id": "client-req-43"})
    assert r.status_code == 200, r.text
    seen = json.loads(parse_rpc_response(r)["result"]["content"][0]["text"])
    assert seen["x-request-id"] == "client-req-43"
    [event] = log.wait_for("client-req-43")
    assert event["tool"] == "whoami"


def test_generated_request_id_reaches_the_app(audited, idp, http):
    sidecar, log = audited
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    r = call(http, sidecar.url, token, session, "tools/call", {"name": "whoami"},
             extra={"X-Request-Id": "not well formed!"})
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    assert rid != "not well formed!" and len(rid) == 32
    seen = json.loads(parse_rpc_response(r)["result"]["content"][0]["text"])
    assert seen["x-request-id"] == rid
    [event] = log.wait_for(rid)
    assert event["tool"] == "whoami"


def test_missing_token_is_audited_without_caller(audited, http):
    sidecar, log = audited
    r = http.post(sidecar.url, json=rpc_body("tools/list"),
                  headers={"Accept": ACCEPT, "X-Request-Id": "no-token-1"})
    assert r.status_code == 401
    [event] = log.wait_for("no-token-1")
    assert (event["outcome"], event["reason"], event["status"]) == (
        "unauthorized", "missing_token", 401)
    assert "caller" not in event


def test_forbidden_tool_is_audited_with_the_tool(audited, idp, http):
    sidecar, log = audited
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    r = call(http, sidecar.url, token, session, "tools/call",
             {"name": "delete_repo", "arguments": {}}, extra={"X-Request-Id": "forbidden-1"})
    assert r.status_code == 403
    [event] = log.wait_for("forbidden-1")
    assert (event["outcome"], event["reason"], event["status"]) == (
        "forbidden", "insufficient_scope", 403)
    assert event["tool"] == "delete_repo"
    assert event["caller"]["client_id"] == "e2e-service"


def test_batch_gives_one_line_per_call(audited, idp, http):
    sidecar, log = audited
    token = idp.token(sidecar.url, "mcp:tools")
    body = [
        rpc_body("resources/read", {"uri": "file:///etc/motd"}, id=1),
        rpc_body("prompts/get", {"name": "greeting"}, id=2),
    ]
    r = http.post(sidecar.url, json=body, headers={
        "Accept": ACCEPT, "MCP-Protocol-Version": PROTOCOL_VERSION, **bearer(token),
        "X-Request-Id": "batch-1"})
    assert r.status_code < 500
    events = sorted(log.wait_for("batch-1", 2), key=lambda e: e["batch_index"])
    assert [e["method"] for e in events] == ["resources/read", "prompts/get"]
    assert events[0]["resource_uri"] == "file:///etc/motd"
    assert events[1]["prompt"] == "greeting"
    assert all(e["batch_size"] == 2 for e in events)


def test_tool_calls_are_counted_for_named_tools_only(audited, idp, http):
    sidecar, _ = audited
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    assert call(http, sidecar.url, token, session, "tools/call",
                {"name": "whoami"}).status_code == 200
    assert call(http, sidecar.url, token, session, "tools/call",
                {"name": "delete_all"}).status_code == 403
    samples = sidecar.metrics()

    def count(tool, outcome):
        labels = frozenset({("policy", "e2e-audit"), ("tool", tool), ("outcome", outcome)})
        return samples.get(("mcp_warden_tool_calls_total", labels), 0)

    assert count("whoami", "allowed") >= 1
    assert count("other", "forbidden") >= 1
    assert not any(dict(labels).get("tool") == "delete_all"
                   for name, labels in samples if name == "mcp_warden_tool_calls_total")


def test_upstream_failure_is_audited(start_sidecar, idp, work, http):
    path = work / f"audit-{uuid.uuid4().hex[:6]}.log"
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = start_sidecar(dead, audit_policy(idp, path))
    log = AuditLog(path)
    token = idp.token(sidecar.url, "mcp:tools")
    r = http.post(sidecar.url, json=rpc_body("tools/call", {"name": "whoami"}),
                  headers={"Accept": ACCEPT, **bearer(token), "X-Request-Id": "dead-1"})
    assert r.status_code == 502
    [event] = log.wait_for("dead-1")
    assert (event["outcome"], event["reason"], event["status"]) == (
        "upstream_error", "upstream_unavailable", 502)
    assert event["tool"] == "whoami" and "arguments" not in event
    sidecar.stop()


def test_disabled_audit_writes_nothing(start_sidecar, idp, fastmcp, work, http):
    path = work / f"audit-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(fastmcp.base, audit_policy(idp, path, enabled=False))
    r = http.post(sidecar.url, json=rpc_body("tools/list"),
                  headers={"Accept": ACCEPT, "X-Request-Id": "off-1"})
    assert r.status_code == 401
    # An enabled audit trail opens (creates) its file at start; a disabled one never does.
    assert not path.exists()
    sidecar.stop()


def test_the_last_lines_are_written_at_shutdown(start_sidecar, idp, work, http):
    # The writer gathers lines before writing them: those of the requests just before SIGTERM
    # must not be lost when the process ends.
    path = work / f"audit-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(f"http://127.0.0.1:{free_port()}", audit_policy(idp, path))
    ids = [f"last-{i}" for i in range(50)]
    for request_id in ids:
        r = http.post(sidecar.url, json=rpc_body("tools/list"),
                      headers={"Accept": ACCEPT, "X-Request-Id": request_id})
        assert r.status_code == 401
    sidecar.stop()
    assert sidecar.proc.popen.returncode == 0
    written = [e["request_id"] for e in AuditLog(path).lines()]
    assert written == ids
