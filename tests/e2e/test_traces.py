"""OpenTelemetry traces against real peers: the sidecar binary exports OTLP/HTTP to a real
receiver (the official protobuf definitions), in front of FastMCP (`whoami` echoes the headers the
app received) with tokens from the oidc-provider IdP."""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest

from harness import free_port, jwt_policy, wait_until
from mcp_http import ACCEPT, bearer, call, open_session, parse_rpc_response, rpc_body
from otlp_receiver import OtlpReceiver

SERVER, CLIENT = 2, 3
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver()
    yield r
    r.stop()


def otel_env(receiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "e2e-warden",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def traced_policy(idp, audit_path):
    def policy(base):
        return jwt_policy(
            "e2e-traces", f"{base}/mcp", idp.issuer,
            rules=[{"method": "tools/call", "tools": ["delete_*"], "scopes": ["mcp:admin"]}],
            audit={"destination": str(audit_path)},
        )
    return policy


@pytest.fixture(scope="module")
def traced(start_sidecar, idp, fastmcp, receiver, work):
    audit = work / f"audit-traces-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(fastmcp.base, traced_policy(idp, audit), env=otel_env(receiver))
    return sidecar, audit


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


def client_context() -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def by_kind(spans, kind):
    return [s for s in spans if s.kind == kind]


def test_allowed_call_continues_the_client_trace_to_the_app(traced, receiver, idp, http):
    sidecar, audit = traced
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    trace_id, client_span, headers = client_context()
    r = call(http, sidecar.url, token, session, "tools/call", {"name": "whoami"}, extra=headers)
    assert r.status_code == 200, r.text
    seen = json.loads(parse_rpc_response(r)["result"]["content"][0]["text"])

    spans = receiver.trace(trace_id, 2)
    [server] = by_kind(spans, SERVER)
    [upstream] = by_kind(spans, CLIENT)
    assert server.service == "e2e-warden"
    assert server.parent_span_id == client_span
    assert upstream.parent_span_id == server.span_id
    assert server.name == "tools/call whoami"
    a = server.attributes
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.tool.name"] == "whoami"
    assert (a["mcp_warden.outcome"], a["mcp_warden.reason"]) == ("allowed", "none")
    assert a["http.response.status_code"] == 200
    assert all(token not in str(v) for s in spans for v in s.attributes.values())
    # The app continues the trace from the sidecar's upstream span.
    assert seen["traceparent"].split("-")[1:3] == [trace_id, upstream.span_id]
    # The audit line names the trace.
    wait_until(lambda: trace_id in audit.read_text(), 10, "audit line with the trace id")


def test_missing_token_gets_a_refused_span(traced, receiver, http):
    sidecar, _ = traced
    trace_id, client_span, headers = client_context()
    r = http.post(sidecar.url, json=rpc_body("tools/list"), headers={"Accept": ACCEPT, **headers})
    assert r.status_code == 401
    [server] = receiver.trace(trace_id, 1)
    assert server.kind == SERVER and server.parent_span_id == client_span
    assert (server.attributes["mcp_warden.outcome"], server.attributes["mcp_warden.reason"]) == (
        "unauthorized", "missing_token")
    assert server.attributes["http.response.status_code"] == 401


def test_tool_refused_by_a_rule_is_traced_without_an_upstream_call(traced, receiver, idp, http):
    sidecar, _ = traced
    token = idp.token(sidecar.url, "mcp:tools")
    trace_id, _, headers = client_context()
    r = http.post(sidecar.url, json=rpc_body("tools/call", {"name": "delete_everything"}),
                  headers={"Accept": ACCEPT, **bearer(token), **headers})
    assert r.status_code == 403
    spans = receiver.trace(trace_id, 1)
    [server] = by_kind(spans, SERVER)
    assert not by_kind(spans, CLIENT)
    assert server.attributes["gen_ai.tool.name"] == "delete_everything"
    assert (server.attributes["mcp_warden.outcome"], server.attributes["mcp_warden.reason"]) == (
        "forbidden", "insufficient_scope")


def test_upstream_failure_marks_both_spans_failed(start_sidecar, idp, receiver, work, http):
    dead = f"http://127.0.0.1:{free_port()}"
    audit = work / f"audit-dead-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(dead, traced_policy(idp, audit), env=otel_env(receiver))
    token = idp.token(sidecar.url, "mcp:tools")
    trace_id, _, headers = client_context()
    r = http.post(sidecar.url, json=rpc_body("tools/call", {"name": "whoami"}),
                  headers={"Accept": ACCEPT, **bearer(token), **headers})
    assert r.status_code == 502
    spans = receiver.trace(trace_id, 2)
    [server] = by_kind(spans, SERVER)
    [upstream] = by_kind(spans, CLIENT)
    assert upstream.parent_span_id == server.span_id
    assert server.status_code == STATUS_ERROR and upstream.status_code == STATUS_ERROR
    assert server.attributes["mcp_warden.outcome"] == "upstream_error"
    sidecar.stop()


def test_jwks_fetches_are_traced(traced, receiver, idp):
    spans = receiver.wait_for(
        lambda spans: [s for s in spans if s.name == "jwks fetch" and s.service == "e2e-warden"])
    assert spans[0].kind == CLIENT
    assert spans[0].attributes["url.full"].startswith(idp.issuer)


def test_introspection_is_a_child_span_of_the_request(start_idp, start_sidecar, work, fastmcp,
                                                     receiver, http):
    from test_jwt_introspection import INIT, start as start_introspecting

    idp, sidecar = start_introspecting(start_idp, start_sidecar, work, fastmcp.base,
                                       sidecar_env=otel_env(receiver))
    token = idp.token(sidecar.url)
    assert "." not in token, "an opaque token"
    trace_id, _, headers = client_context()
    r = http.post(sidecar.url, json=INIT, headers={"Accept": ACCEPT, **bearer(token), **headers})
    assert r.status_code == 200, r.text
    spans = receiver.trace(trace_id, 3)
    [server] = by_kind(spans, SERVER)
    [introspection] = [s for s in spans if s.name == "token introspection"]
    assert introspection.kind == CLIENT and introspection.parent_span_id == server.span_id
    assert introspection.attributes["url.full"].startswith(idp.issuer)
    assert introspection.status_code != STATUS_ERROR
    sidecar.stop()


def test_without_an_endpoint_nothing_is_exported_and_the_client_context_passes(
        start_sidecar, idp, fastmcp, work, http):
    audit = work / f"audit-plain-{uuid.uuid4().hex[:6]}.log"
    sidecar = start_sidecar(fastmcp.base, traced_policy(idp, audit))
    token = idp.token(sidecar.url, "mcp:tools")
    session = open_session(http, sidecar.url, token)
    trace_id, span_id, headers = client_context()
    r = call(http, sidecar.url, token, session, "tools/call", {"name": "whoami"}, extra=headers)
    seen = json.loads(parse_rpc_response(r)["result"]["content"][0]["text"])
    assert seen["traceparent"] == headers["traceparent"]
    assert "trace_id" not in audit.read_text()
    sidecar.stop()
