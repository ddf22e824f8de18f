"""The chart lints, renders with the default values and every ci/*.yaml, and what it renders is
valid: built-in kinds by kubernetes-validate --strict for several Kubernetes versions, McpAuthPolicy
against the CRD's schema, ServiceMonitor/PodMonitor against prometheus-operator's."""

from __future__ import annotations

import tarfile

import pytest

from chart_tools import (
    CHART, CI_VALUES, HELM, HELM3, KUBE_VERSIONS, crd_schema, documents, helm, kubernetes_validate, of_kind,
    template, validate_monitors, validate_policy,
)

VALUE_SETS = [None, *CI_VALUES]
IDS = ["defaults", *[p.stem for p in CI_VALUES]]
CUSTOM_GROUPS = ("mcpwarden.dev/", "monitoring.coreos.com/")


def test_there_are_ci_values_files():
    assert len(CI_VALUES) >= 2, f"expected several values files under {CHART / 'ci'}"


@pytest.mark.parametrize("binary", [HELM, HELM3], ids=["helm4", "helm3"])
@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_lint_strict(values, binary):
    args = ["lint", "--strict", str(CHART)]
    if values is not None:
        args += ["--values", str(values)]
    out = helm(*args, binary=binary).stdout
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_helm3_renders_what_helm4_renders(values):
    """Same objects (the two order kinds they do not know, like McpAuthPolicy, differently)."""
    def by_identity(docs):
        return sorted(docs, key=lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]))
    assert by_identity(documents(template(values, binary=HELM3))) == by_identity(documents(template(values)))


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_builtin_kinds_validate(values, kube_version, tmp_path):
    docs = documents(template(values, kube_version=kube_version))
    builtin = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert builtin, "nothing rendered"
    result = kubernetes_validate(builtin, kube_version, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every built-in kind had a schema (a kind kubernetes-validate does not know only warns).
    assert "Couldn't find schema" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path):
    """The validator run above can fail: a misspelt field is an error under --strict."""
    docs = documents(template())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    result = kubernetes_validate([deployment], "1.33", tmp_path)
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_policies_match_the_crd_schema(values):
    schema = crd_schema()
    docs = documents(template(values))
    for policy in of_kind(docs, "McpAuthPolicy"):
        assert policy["apiVersion"] == "mcpwarden.dev/v1alpha1"
        errors = validate_policy(policy, schema)
        assert not errors, f"{policy['metadata']['name']}: {errors}"


def test_ci_values_create_policies_of_both_modes():
    docs = [d for p in CI_VALUES for d in of_kind(documents(template(p)), "McpAuthPolicy")]
    assert {d["spec"]["mode"] for d in docs} == {"jwt", "oauthProxy"}


def test_crd_cel_rules_are_evaluated():
    """A structurally fine policy that breaks a cross-field (CEL) rule is caught."""
    policy = {
        "apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy", "metadata": {"name": "cel"},
        "spec": {"resource": {"url": "https://x.example/mcp"}, "mode": "oauthProxy",
                 "oauthProxy": {"provider": "oidc", "clientId": "c",
                                "access": {"anyAuthenticatedUser": True}}},
    }
    errors = validate_policy(policy, crd_schema())
    assert errors == ["/spec/oauthProxy: spec.oauthProxy.issuer is required for provider oidc"], errors
    policy["spec"]["oauthProxy"]["issuer"] = "https://idp.example"
    assert validate_policy(policy, crd_schema()) == []
    # Fail closed: a proxy policy must say who may sign in, and an entry must name somebody.
    access = policy["spec"]["oauthProxy"].pop("access")
    errors = validate_policy(policy, crd_schema())
    assert errors == ["/spec/oauthProxy: spec.oauthProxy.access is required: say who may sign in, "
                      "or set anyAuthenticatedUser: true to admit every user of the identity provider"], errors
    policy["spec"]["oauthProxy"]["access"] = {"anyAuthenticatedUser": False, "emails": []}
    assert any("access names nobody" in e for e in validate_policy(policy, crd_schema()))
    policy["spec"]["oauthProxy"]["access"] = access
    policy["spec"]["oauthProxy"]["scopeGrants"] = {"mcp:admin": {}}
    assert any("scopeGrants entry names nobody" in e for e in validate_policy(policy, crd_schema()))
    policy["spec"]["mode"] = "jwt"
    assert any("spec.jwt is required when mode is jwt" in e for e in validate_policy(policy, crd_schema()))


def test_crd_schema_rejects_a_bad_policy():
    """The CRD check can fail: a policy with a wrong mode and an unknown field does not pass."""
    bad = {
        "apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
        "metadata": {"name": "bad"},
        "spec": {"resource": {"url": "https://x.example/mcp"}, "mode": "basicAuth", "jwtt": {}},
    }
    assert validate_policy(bad, crd_schema())


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_monitors_match_prometheus_operator_schema(values):
    monitors = [d for d in documents(template(values)) if d["apiVersion"].startswith("monitoring.coreos.com/")]
    if not monitors:
        assert values is None or "full" not in values.stem, "full-values must render the monitors"
        return
    result = validate_monitors(monitors)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == len(monitors), result.stdout


def test_monitor_validator_rejects_a_bad_interval():
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"},
           "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "a", "interval": "30 seconds"}]}}
    result = validate_monitors([bad])
    assert result.returncode == 1 and "FAIL PodMonitor/x" in result.stdout, result.stdout


def test_kube_version_floor_is_enforced():
    result = helm("template", "x", str(CHART), "--kube-version", "1.27.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr, result.stderr


@pytest.mark.parametrize("binary", [HELM, HELM3], ids=["helm4", "helm3"])
def test_package_ships_crd_dashboard_and_schema(binary, tmp_path):
    helm("package", str(CHART), "--destination", str(tmp_path), binary=binary)
    (archive,) = tmp_path.glob("mcp-warden-*.tgz")
    with tarfile.open(archive) as tgz:
        names = set(tgz.getnames())
    for path in ("crds/mcpauthpolicies.yaml", "dashboards/mcp-warden.json", "values.schema.json",
                 "templates/NOTES.txt", "templates/tests/test-operator.yaml", "README.md"):
        assert f"mcp-warden/{path}" in names, path
    assert not [n for n in names if n.startswith("mcp-warden/ci/")]
