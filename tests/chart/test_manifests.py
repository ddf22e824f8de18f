"""What the chart renders: hardened operator pods, least-privilege RBAC, a webhook that only ever
touches opted-in pods, names that line up between objects, and flags the operator accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_tools import CHART, CI_VALUES, NAMESPACE, REPO, documents, helm, of_kind, one, template

OPERATOR_BIN = Path(os.environ.get("MCP_WARDEN_OPERATOR_BIN", REPO / "target" / "debug" / "mcp-warden-operator"))
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
FULL = CHART / "ci" / "full-values.yaml"
TRIAL = CHART / "ci" / "trial-values.yaml"
SYSTEM_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease", NAMESPACE}


def operator_deployment(docs):
    return next(d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")


def args_of(deployment) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"])


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]])
def test_every_pod_is_hardened(values):
    docs = documents(template(values))
    pods = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment")]
    pods += [d["spec"] for d in of_kind(docs, "Pod")]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "add" not in sc["capabilities"], c["name"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", c["name"]
            assert "limits" in c["resources"] and "requests" in c["resources"], c["name"]


def test_operator_defaults():
    docs = documents(template())
    dep = operator_deployment(docs)
    assert dep["spec"]["replicas"] == 2
    args = args_of(dep)
    assert args["leader-election"] == "true"
    assert args["native-sidecar"] == "auto"
    assert args["network-policy"] == "true"
    assert args["key-activation-delay"] == "300"
    assert args["admin-listen"] == "0.0.0.0:9090"
    assert args["webhook-listen"] == "0.0.0.0:9443"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/mcp-warden/mcp-warden-operator:{APP_VERSION}"
    assert args["sidecar-image"] == f"ghcr.io/mcp-warden/mcp-warden-sidecar:{APP_VERSION}"
    assert {k: v for k, v in args.items() if k.startswith("sidecar-") and k != "sidecar-image"} == {
        "sidecar-cpu-request": "50m", "sidecar-memory-request": "32Mi", "sidecar-memory-limit": "128Mi",
        "sidecar-port": "8000", "sidecar-admin-port": "9090", "sidecar-fixed-uid": "true"}, \
        "no CPU limit by default"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    probes = {k: container[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")}
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_sidecar_settings_reach_the_operator():
    args = args_of(operator_deployment(documents(template(FULL))))
    assert args["sidecar-image"].startswith("ghcr.io/mcp-warden/mcp-warden-sidecar@sha256:")
    assert args["native-sidecar"] == "always"
    assert (args["sidecar-cpu-request"], args["sidecar-memory-request"]) == ("100m", "48Mi")
    assert (args["sidecar-cpu-limit"], args["sidecar-memory-limit"]) == ("1", "256Mi")
    assert (args["sidecar-port"], args["sidecar-admin-port"]) == ("8100", "9190")


def test_single_replica_has_no_pdb_and_digest_images():
    docs = documents(template(TRIAL))
    assert not of_kind(docs, "PodDisruptionBudget")
    dep = operator_deployment(docs)
    assert dep["spec"]["replicas"] == 1
    assert args_of(dep)["leader-election"] == "false"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "ghcr.io/mcp-warden/mcp-warden-operator@sha256:")


def test_operator_flags_exist_in_the_operator_binary():
    """Every flag the chart passes is one `mcp-warden-operator --help` documents."""
    assert OPERATOR_BIN.exists(), (f"{OPERATOR_BIN} does not exist: build it with "
                                   "`cargo build -p mcp-warden-operator` (or set MCP_WARDEN_OPERATOR_BIN)")
    help_text = subprocess.run([str(OPERATOR_BIN), "--help"], capture_output=True, text=True, timeout=30).stdout
    known = set(re.findall(r"--([a-z][a-z0-9-]+)", help_text))
    for values in (None, FULL, TRIAL, CHART / "ci" / "least-privilege-values.yaml"):
        used = set(args_of(operator_deployment(documents(template(values)))))
        assert used <= known, f"flags the operator does not know: {sorted(used - known)}"


def test_rbac_is_least_privilege():
    docs = documents(template())
    cluster_role = one(docs, "ClusterRole")
    rules = cluster_role["rules"]
    for rule in rules + one(docs, "Role")["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
    resources = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("mcpwarden.dev", "mcpauthpolicies/status") in resources
    assert ("mcpwarden.dev", "mcpauthpolicies/finalizers") in resources
    policy_verbs = {v for rule in rules if "mcpauthpolicies" in rule["resources"] for v in rule["verbs"]}
    assert policy_verbs == {"get", "list", "watch"}, "the operator never writes a policy's spec"
    writes = [r for r in rules if "mutatingwebhookconfigurations" in r["resources"]
              and {"patch", "update"} & set(r["verbs"])]
    assert writes and all(r.get("resourceNames") == ["mcp-warden"] for r in writes)
    pod_verbs = {v for rule in rules if "pods" in rule["resources"] for v in rule["verbs"]}
    assert pod_verbs == {"list", "watch"}
    deletes = [r for r in rules if "delete" in r["verbs"]]
    # Owned objects go by garbage collection; only NetworkPolicies are deleted, when
    # operator.networkPolicy is turned off.
    assert [r["resources"] for r in deletes] == [["networkpolicies"]]
    namespace_verbs = {v for rule in rules if "namespaces" in rule["resources"] for v in rule["verbs"]}
    assert namespace_verbs == {"get", "list", "watch"}, "the webhook's namespace cache"
    node_verbs = {v for rule in rules if "nodes" in rule["resources"] for v in rule["verbs"]}
    assert node_verbs == {"list", "watch"}, "--native-sidecar auto reads kubelet versions"
    webhook_rules = [r for r in rules if "mutatingwebhookconfigurations" in r["resources"]]
    assert {"list", "watch"} <= {v for r in webhook_rules for v in r["verbs"]}, "caBundle repair watches it"
    assert all(r.get("resourceNames") == ["mcp-warden"] for r in webhook_rules)
    assert not any("leases" in r["resources"] for r in rules), "leases belong in the namespaced Role"
    assert any("leases" in r["resources"] for r in one(docs, "Role")["rules"])
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mcp-warden", "namespace": NAMESPACE}]


def test_webhook_only_touches_opted_in_pods():
    docs = documents(template())
    config = one(docs, "MutatingWebhookConfiguration")
    dep = operator_deployment(docs)
    args = args_of(dep)
    assert config["metadata"]["name"] == args["webhook-configuration"]
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == args["webhook-service"])
    webhook_port = next(p for p in service["spec"]["ports"] if p["port"] == 443)
    container_ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports[webhook_port["targetPort"]] == int(args["webhook-listen"].rsplit(":", 1)[1])
    opt_ins = []
    for hook in config["webhooks"]:
        assert "caBundle" not in hook["clientConfig"], "the operator owns caBundle"
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"], "namespace": NAMESPACE, "path": "/mutate-pods", "port": 443}
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 10
        assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                  "resources": ["pods"], "scope": "Namespaced"}]
        excluded = next(e for e in hook["namespaceSelector"]["matchExpressions"]
                        if e["key"] == "kubernetes.io/metadata.name")
        assert excluded["operator"] == "NotIn" and SYSTEM_NAMESPACES <= set(excluded["values"])
        pod_opt_in = hook["objectSelector"].get("matchLabels", {}).get("mcpwarden.dev/inject") == "true"
        ns_opt_in = hook["namespaceSelector"].get("matchLabels", {}).get("mcpwarden.dev/injection") == "enabled"
        assert pod_opt_in or ns_opt_in, f"{hook['name']} would see pods that did not opt in"
        opt_ins.append("pod" if pod_opt_in else "namespace")
        if ns_opt_in:
            assert {"key": "mcpwarden.dev/inject", "operator": "DoesNotExist"} in hook["objectSelector"]["matchExpressions"]
    assert sorted(opt_ins) == ["namespace", "pod"]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]])
def test_operator_knows_the_webhook_timeout_and_outlives_its_drain(values):
    docs = documents(template(values))
    dep = operator_deployment(docs)
    args = args_of(dep)
    timeouts = {hook["timeoutSeconds"] for hook in one(docs, "MutatingWebhookConfiguration")["webhooks"]}
    assert timeouts == {int(args["webhook-timeout-seconds"])}, "the operator answers at timeoutSeconds - 1"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Drain, then reviews in flight get up to the timeout: all within the grace period.
    assert grace > int(args["shutdown-drain-seconds"]) + int(args["webhook-timeout-seconds"])


def test_extra_excluded_namespaces():
    config = one(documents(template(FULL)), "MutatingWebhookConfiguration")
    for hook in config["webhooks"]:
        values = next(e["values"] for e in hook["namespaceSelector"]["matchExpressions"])
        assert {"monitoring", "cert-manager"} <= set(values)


def test_services_select_the_operator_and_name_real_ports():
    docs = documents(template())
    dep = operator_deployment(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for svc in of_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["metadata"]["name"]
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names


def test_dashboard_configmap():
    docs = documents(template())
    cm = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "mcp-warden-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["mcp-warden.json"]) == json.loads((CHART / "dashboards" / "mcp-warden.json").read_text())
    full = next(c for c in of_kind(documents(template(FULL)), "ConfigMap") if "mcp-warden.json" in c.get("data", {}))
    assert full["metadata"]["namespace"] == "monitoring"
    assert full["metadata"]["labels"]["team"] == "platform"
    assert full["metadata"]["annotations"] == {"grafana_folder": "MCP"}
    assert not [c for c in of_kind(documents(template(TRIAL)), "ConfigMap") if "mcp-warden.json" in c.get("data", {})]


def test_monitors_scrape_the_admin_ports():
    docs = documents(template(FULL))
    sm = one(docs, "ServiceMonitor")
    metrics_svc = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == "mcp-warden-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == metrics_svc["spec"]["ports"][0]["name"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "warden-admin"
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    default_pm = one(documents(template(extra=("--set", "metrics.podMonitor.enabled=true"))), "PodMonitor")
    assert default_pm["spec"]["selector"] == {
        "matchExpressions": [{"key": "mcpwarden.dev/policy", "operator": "Exists"}]}
    assert not of_kind(documents(template()), "ServiceMonitor")


def test_bundled_redis_feeds_chart_policies():
    docs = documents(template(TRIAL))
    redis = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "mcp-warden-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--save", ""]
    svc = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == "mcp-warden-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    policy = one(docs, "McpAuthPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["storage"] == {"redis": {"url": f"redis://mcp-warden-redis.{NAMESPACE}.svc:6379"}}
    assert not [d for d in of_kind(documents(template()), "Deployment") if "redis" in d["metadata"]["name"]]


def test_external_redis_feeds_chart_policies():
    policies = {p["metadata"]["name"]: p for p in of_kind(documents(template(FULL)), "McpAuthPolicy")}
    assert set(policies) == {"corp-sso", "github"}
    assert policies["github"]["metadata"]["namespace"] == "tools"
    assert policies["github"]["spec"]["storage"]["redis"] == {
        "url": "rediss://redis-sentinel.data.svc:26379",
        "mode": "sentinel",
        "sentinelMaster": "mymaster",
        "extraNodes": ["redis-sentinel-1.data.svc:26379", "redis-sentinel-2.data.svc:26379"],
        "username": "mcp-warden",
        "passwordSecretRef": {"name": "mcp-warden-redis", "key": "password"},
        "timeoutMillis": 1000,
    }


def test_policy_storage_is_not_overridden():
    own = {"redis": {"url": "redis://mine:6379"}}
    out = template(TRIAL, extra=("--set-json", f"policies.demo.spec.storage={json.dumps(own)}"))
    assert one(documents(out), "McpAuthPolicy")["spec"]["storage"] == own


def test_helm_test_hook_checks_operator_and_webhook():
    docs = documents(template())
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["READYZ_URL"] == f"http://mcp-warden-metrics.{NAMESPACE}.svc:9090/readyz"
    assert env["WEBHOOK_URL"] == f"https://mcp-warden-webhook.{NAMESPACE}.svc:443/mutate-pods"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert '"allowed":true' in script and "AdmissionReview" in script


def test_notes_tell_the_next_two_steps():
    out = helm("install", "mcp-warden", str(CHART), "--dry-run=client", "-n", NAMESPACE).stdout
    notes = out[out.index("NOTES:"):]
    assert "1. Apply an McpAuthPolicy" in notes and "2. Opt your MCP server in" in notes
    assert 'mcpwarden.dev/inject: "true"' in notes and "mcpwarden.dev/upstream-port" in notes
    assert "WARNING" not in notes
    trial = helm("install", "mcp-warden", str(CHART), "--dry-run=client", "-n", NAMESPACE, "-f", str(TRIAL)).stdout
    trial_notes = trial[trial.index("NOTES:"):]
    assert "NOT" in trial_notes.upper() and "bundled Redis" in trial_notes
    assert f"url: redis://mcp-warden-redis.{NAMESPACE}.svc:6379" in trial_notes
    policy = yaml.safe_load(trial_notes.split("<<'POLICY'\n")[1].split("POLICY\n")[0])
    # The example is a jwt policy, which keeps no state: Redis is offered for oauthProxy only.
    assert policy["spec"]["mode"] == "jwt" and "storage" not in policy["spec"]
    assert "oauthProxy policy" in trial_notes
    for text in (notes, trial_notes):
        assert "target the port BY NAME" in text


def test_sidecar_resources_include_cpu_limit_and_ephemeral_storage():
    """A ResourceQuota on limits.cpu or ephemeral storage needs them on the sidecar too."""
    args = args_of(operator_deployment(documents(template(extra=(
        "--set", "sidecar.resources.limits.cpu=200m",
        "--set", "sidecar.resources.requests.ephemeral-storage=16Mi",
        "--set", "sidecar.resources.limits.ephemeral-storage=64Mi")))))
    assert args["sidecar-cpu-limit"] == "200m"
    assert args["sidecar-ephemeral-storage-request"] == "16Mi"
    assert args["sidecar-ephemeral-storage-limit"] == "64Mi"
    assert "sidecar-ephemeral-storage-limit" not in args_of(operator_deployment(documents(template())))


def test_fixed_uids_can_be_left_to_the_platform():
    """OpenShift's restricted SCC assigns UIDs: fixedUid=false renders none, for the sidecar too."""
    rendered = template(extra=("--set", "fixedUid=false", "--set", "redis.bundled.enabled=true"))
    assert "runAsUser" not in rendered and "runAsGroup" not in rendered and "fsGroup" not in rendered
    assert args_of(operator_deployment(documents(rendered)))["sidecar-fixed-uid"] == "false"
    assert "runAsNonRoot: true" in rendered
    assert args_of(operator_deployment(documents(template())))["sidecar-fixed-uid"] == "true"


LEAST = CHART / "ci" / "least-privilege-values.yaml"


def rules_for(rules, resource):
    return [r for r in rules if resource in r["resources"]]


def test_secrets_are_not_watched_and_the_tls_secret_is_updated_by_name():
    """Watching keys Secrets by label still needs list/watch on every Secret; the operator does
    without (the resync repairs them), and may replace only its own TLS Secret."""
    docs = documents(template())
    cluster = one(docs, "ClusterRole")["rules"]
    assert {v for r in rules_for(cluster, "secrets") for v in r["verbs"]} == {"get", "create", "patch"}
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    updates = [r for r in rules_for(role["rules"], "secrets") if "update" in r["verbs"]]
    assert updates and all(r.get("resourceNames") == ["mcp-warden-webhook-tls"] for r in updates)
    for doc in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for r in rules_for(doc["rules"], "secrets"):
            assert not {"list", "watch"} & set(r["verbs"]), r


def test_watch_namespaces_grants_writes_through_namespaced_roles_only():
    docs = documents(template(LEAST))
    cluster = one(docs, "ClusterRole")["rules"]
    cluster_resources = {res for r in cluster for res in r["resources"]}
    assert not cluster_resources & {"secrets", "configmaps", "networkpolicies", "pods",
                                    "mcpauthpolicies/status", "events"}, cluster_resources
    roles = {r["metadata"]["namespace"]: r for r in of_kind(docs, "Role")}
    assert {"tools", "agents", NAMESPACE} <= set(roles)
    for ns in ("tools", "agents"):
        resources = {res for r in roles[ns]["rules"] for res in r["resources"]}
        assert {"secrets", "configmaps", "networkpolicies", "pods"} <= resources
        binding = next(b for b in of_kind(docs, "RoleBinding") if b["metadata"]["namespace"] == ns)
        assert binding["roleRef"]["name"] == roles[ns]["metadata"]["name"]
    assert args_of(operator_deployment(docs))["watch-namespaces"] == "tools,agents"
    for hook in one(docs, "MutatingWebhookConfiguration")["webhooks"]:
        exprs = hook["namespaceSelector"]["matchExpressions"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "In",
                "values": ["tools", "agents"]} in exprs


def test_admission_endpoint_network_policy():
    docs = documents(template(LEAST))
    (np,) = of_kind(docs, "NetworkPolicy")
    assert np["metadata"]["namespace"] == NAMESPACE
    dep = operator_deployment(docs)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in np["spec"]["podSelector"]["matchLabels"].items())
    webhook_rule, admin_rule = np["spec"]["ingress"]
    assert webhook_rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    assert webhook_rule["ports"] == [{"port": "webhook", "protocol": "TCP"}]
    assert "from" not in admin_rule and admin_rule["ports"][0]["port"] == "admin"
    assert not of_kind(documents(template()), "NetworkPolicy"), "off by default"
    failed = helm("template", "x", str(CHART), "--set", "webhook.networkPolicy.enabled=true", check=False)
    assert failed.returncode != 0 and "webhook.networkPolicy.from" in failed.stderr


def test_sidecar_tracing_settings_reach_the_operator():
    """sidecar.tracing becomes the operator's --sidecar-otlp-* flags; nothing without an endpoint."""
    args = args_of(operator_deployment(documents(template(extra=(
        "--set", "sidecar.tracing.otlpEndpoint=http://otel-collector.observability:4318",
        "--set", "sidecar.tracing.sampler=parentbased_traceidratio",
        "--set", "sidecar.tracing.samplerArg=0.1")))))
    assert args["sidecar-otlp-endpoint"] == "http://otel-collector.observability:4318"
    assert args["sidecar-service-name"] == "mcp-warden-sidecar"
    assert (args["sidecar-traces-sampler"], args["sidecar-traces-sampler-arg"]) == (
        "parentbased_traceidratio", "0.1")
    assert not any(k.startswith("sidecar-otlp") or k.startswith("sidecar-traces")
                   for k in args_of(operator_deployment(documents(template()))))
