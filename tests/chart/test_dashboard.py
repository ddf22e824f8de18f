"""Every query of the Grafana dashboard names only metrics the code exports, as read from a running
sidecar (jwt and oauthProxy mode) and a running operator; and the dashboard covers what the chart
promises (request outcomes, latency, JWKS, the OAuth funnel, the store, the operator)."""

from __future__ import annotations

import json

import pytest

from chart_tools import CHART
from metrics_peers import free_port, operator_metrics, sidecar_metrics
from promql_names import dashboard_queries, exported_series, metric_names

DASHBOARD = json.loads((CHART / "dashboards" / "mcp-warden.json").read_text())

JWT_POLICY = """apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata:
  name: metrics-jwt
spec:
  resource:
    url: http://127.0.0.1/mcp
  mode: jwt
  jwt:
    issuer: http://127.0.0.1:{port}
  audit:
    toolMetrics: [search]   # mcp_warden_tool_calls_total exists only for policies that list tools
"""

PROXY_POLICY = """apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata:
  name: metrics-proxy
spec:
  resource:
    url: http://127.0.0.1/mcp
  mode: oauthProxy
  oauthProxy:
    provider: oidc
    issuer: http://127.0.0.1:{port}
    clientId: metrics-probe
    allowedRedirectUris: [http://127.0.0.1]
    access: {{anyAuthenticatedUser: true}}
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("metrics")
    (work / "secrets").mkdir()
    return {
        "sidecar (jwt)": sidecar_metrics(JWT_POLICY.format(port=free_port()), work, "sidecar-jwt"),
        "sidecar (oauthProxy)": sidecar_metrics(PROXY_POLICY.format(port=free_port()), work, "sidecar-proxy"),
        "operator": operator_metrics(work),
    }


def test_every_dashboard_metric_is_exported(exposition):
    exported = set().union(*(exported_series(text) for text in exposition.values()))
    assert any(n.startswith("mcp_warden_") for n in exported), exposition
    missing = {}
    for where, expr in dashboard_queries(DASHBOARD):
        for name in metric_names(expr) - exported:
            missing.setdefault(name, []).append(where)
    assert not missing, (
        "dashboard queries name metrics no binary exports (families must be registered, with their "
        f"label children created, at start-up): {json.dumps(missing, indent=1)}")


def test_every_query_selects_an_mcp_warden_metric():
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) >= 20
    for where, expr in queries:
        names = metric_names(expr)
        assert names and all(n.startswith("mcp_warden_") for n in names), f"{where}: {expr}"


@pytest.mark.parametrize("family", [
    "mcp_warden_requests_total", "mcp_warden_request_duration_seconds_bucket",
    "mcp_warden_jwks_refresh_total", "mcp_warden_oauth_registrations_total",
    "mcp_warden_oauth_authorizations_total", "mcp_warden_oauth_consents_total",
    "mcp_warden_oauth_token_grants_total", "mcp_warden_oauth_refresh_reuse_total",
    "mcp_warden_store_errors_total", "mcp_warden_store_operation_duration_seconds_bucket",
    "mcp_warden_operator_injections_total", "mcp_warden_operator_webhook_duration_seconds_bucket",
    "mcp_warden_operator_certificate_expiry_timestamp_seconds",
    "mcp_warden_tool_calls_total", "mcp_warden_audit_dropped_total",
])
def test_dashboard_covers(family):
    """The panels the chart promises (issue #5) are there."""
    used = set().union(*(metric_names(e) for _, e in dashboard_queries(DASHBOARD)))
    assert family in used


def test_oauth_funnel_is_in_flow_order():
    funnel = next(p for p in DASHBOARD["panels"] if "funnel" in p["title"].lower())
    order = [next(iter(metric_names(t["expr"]))) for t in funnel["targets"]]
    assert order == ["mcp_warden_oauth_registrations_total", "mcp_warden_oauth_authorizations_total",
                     "mcp_warden_oauth_consents_total", "mcp_warden_oauth_token_grants_total"]


def test_panels_have_unique_ids_and_a_datasource_variable():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert DASHBOARD["uid"] == "mcp-warden"
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in DASHBOARD["templating"]["list"])
    for p in DASHBOARD["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


# The name extraction itself, so the check above cannot pass by extracting nothing.
@pytest.mark.parametrize("expr, names", [
    ('sum by (outcome) (rate(mcp_warden_requests_total{policy=~"$policy", outcome!~"a|b"}[$__rate_interval]))',
     {"mcp_warden_requests_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / on(job) group_left(instance) up",
     {"x_bucket", "up"}),
    ("min(mcp_warden_operator_certificate_expiry_timestamp_seconds) - time()",
     {"mcp_warden_operator_certificate_expiry_timestamp_seconds"}),
    ('label_values(mcp_warden_requests_total{namespace=~"$namespace"}, policy)', {"mcp_warden_requests_total"}),
    ("sum(rate(a_total[1m])) and bool b offset 5m", {"a_total", "b"}),
])
def test_metric_names_extraction(expr, names):
    assert metric_names(expr) == names


def test_exported_series_from_type_lines():
    text = """# HELP mcp_warden_requests Requests.
# TYPE mcp_warden_requests counter
# TYPE mcp_warden_request_duration_seconds histogram
mcp_warden_request_duration_seconds_sum{policy="p"} 0.1
# TYPE mcp_warden_operator_certificate_expiry_timestamp_seconds gauge
# EOF
"""
    assert exported_series(text) == {
        "mcp_warden_requests_total", "mcp_warden_request_duration_seconds_bucket",
        "mcp_warden_request_duration_seconds_sum", "mcp_warden_request_duration_seconds_count",
        "mcp_warden_operator_certificate_expiry_timestamp_seconds",
    }
    assert "mcp_warden_requests" not in exported_series(text)


def test_a_query_for_an_unexported_metric_is_caught():
    dashboard = {"panels": [{"title": "t", "targets": [{"refId": "A", "expr": "rate(mcp_warden_nope_total[5m])"}]}]}
    exported = {"mcp_warden_requests_total"}
    missing = [n for _, e in dashboard_queries(dashboard) for n in metric_names(e) - exported]
    assert missing == ["mcp_warden_nope_total"]


def test_audit_view_shows_top_refused_reasons_per_policy():
    panel = next(p for p in DASHBOARD["panels"] if p["title"].startswith("Top refused reasons"))
    [target] = panel["targets"]
    assert target["expr"].startswith("topk(")
    assert "by (policy, outcome, reason)" in target["expr"]
