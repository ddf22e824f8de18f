"""Everything the chart renders, and everything `mcp-warden inject` prints for the examples, passes
the API server's validation rules (k8s-rules-check: the rules that live in the API server's code,
which schema validators do not check, such as the 15-character limit on port names)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_tools import CI_VALUES, REPO, template

CHECKER = Path(os.environ.get("K8S_RULES_CHECK_BIN", REPO / "target" / "debug" / "k8s-rules-check"))
CLI_BIN = Path(os.environ.get("MCP_WARDEN_CLI_BIN", REPO / "target" / "debug" / "mcp-warden"))
WORKLOADS = sorted((REPO / "examples" / "workloads").glob("*.yaml"))
POLICIES = sorted((REPO / "examples" / "policies").glob("*.yaml"))


def check(manifests: str) -> subprocess.CompletedProcess:
    assert CHECKER.exists(), f"{CHECKER} missing: run `cargo build --workspace --bins`"
    return subprocess.run([str(CHECKER)], input=manifests, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
@pytest.mark.parametrize("kube_version", ["1.28", "1.33"])
def test_rendered_chart_passes_api_server_rules(values, kube_version):
    result = check(template(values, kube_version=kube_version))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 violations" in result.stderr


@pytest.mark.parametrize("native", ["true", "false"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.name)
def test_cli_injection_of_examples_passes_api_server_rules(workload, native):
    policies = [arg for p in POLICIES for arg in ("--policy", str(p))]
    injected = subprocess.run(
        [str(CLI_BIN), "inject", "-f", str(workload), *policies, "--native-sidecar", native],
        capture_output=True, text=True, timeout=60)
    assert injected.returncode == 0, injected.stderr
    result = check(injected.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_manifests_and_their_injection_pass_api_server_rules(tmp_path):
    """The README's YAML snippets as written, and its Deployment injected by `mcp-warden inject`."""
    readme = (REPO / "README.md").read_text()
    docs = [d for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)
            for d in yaml.safe_load_all(block) if isinstance(d, dict) and d.get("kind")]
    assert any(d["kind"] == "Deployment" for d in docs)
    manifests = yaml.safe_dump_all(docs)
    result = check(manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    path = tmp_path / "readme.yaml"
    path.write_text(manifests)
    injected = subprocess.run([str(CLI_BIN), "inject", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert injected.returncode == 0, injected.stderr
    assert "mcp-warden" in injected.stdout
    result = check(injected.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checker_refuses_what_the_api_server_refuses():
    """The 16-character admin port name the webhook once injected, as a real v1.28 server words it."""
    pod = """
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: tools}
spec:
  containers:
    - {name: app, image: app:1, ports: [{name: app-http, containerPort: 8080}]}
    - name: mcp-warden
      image: sidecar:1
      ports: [{name: http, containerPort: 8000}, {name: mcp-warden-admin, containerPort: 9090}]
"""
    result = check(pod)
    assert result.returncode == 1
    assert ('spec.containers[1].ports[1].name: Invalid value: "mcp-warden-admin": '
            "must be no more than 15 characters") in result.stdout
