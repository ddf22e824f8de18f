"""The repository README's snippets are real: every McpAuthPolicy passes the CRD schema, the Deployment
passes kubernetes-validate, JSON client configurations parse, and the offline injector (the same
function the webhook runs) injects the sidecar into the documented Deployment."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_tools import REPO, crd_schema, kubernetes_validate, validate_policy

README = REPO / "README.md"
CLI_BIN = Path(os.environ.get("MCP_WARDEN_CLI_BIN", REPO / "target" / "debug" / "mcp-warden"))


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def yaml_docs(kind: str) -> list[dict]:
    docs = [yaml.safe_load(b) for b in blocks("yaml")]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]


def test_readme_policies_match_the_crd():
    policies = yaml_docs("McpAuthPolicy")
    assert {p["spec"]["mode"] for p in policies} == {"jwt", "oauthProxy"}
    assert any(p["spec"].get("oauthProxy", {}).get("provider") == "github" for p in policies)
    schema = crd_schema()
    for policy in policies:
        assert not validate_policy(policy, schema), policy["metadata"]["name"]


def test_readme_deployment_is_valid(tmp_path):
    deployments = yaml_docs("Deployment")
    assert len(deployments) == 1
    template = deployments[0]["spec"]["template"]["metadata"]
    assert template["labels"]["mcpwarden.dev/inject"] == "true"
    assert set(template["annotations"]) >= {"mcpwarden.dev/policy", "mcpwarden.dev/upstream-port"}
    for version in ("1.28", "1.37"):
        result = kubernetes_validate(deployments, version, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_readme_client_configs_parse():
    configs = [json.loads(b) for b in blocks("json")]
    assert len(configs) == 2
    assert configs[0]["mcpServers"]["my-mcp"]["args"][-1] == "https://mcp.example.com/mcp"
    assert configs[1]["servers"]["my-mcp"] == {"type": "http", "url": "https://mcp.example.com/mcp"}


def test_readme_deployment_gets_the_sidecar(tmp_path):
    """`mcp-warden inject` on the README's Deployment and the policy it names."""
    assert CLI_BIN.exists(), f"{CLI_BIN} does not exist: build it with `cargo build -p mcp-warden-operator`"
    deployment = yaml_docs("Deployment")[0]
    policy_name = deployment["spec"]["template"]["metadata"]["annotations"]["mcpwarden.dev/policy"]
    policy = next(p for p in yaml_docs("McpAuthPolicy") if p["metadata"]["name"] == policy_name)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump_all([policy, deployment]))
    result = subprocess.run([str(CLI_BIN), "inject", "-f", str(manifest)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment")
    pod = out["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    sidecar = next(c for c in containers if c["name"] == "mcp-warden")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["warden-admin"] == 9090
    # The sidecar took over the port name the Service targets; the app keeps serving 8080.
    assert "http" in ports
    app = next(c for c in pod["containers"] if c["name"] == "server")
    assert all(p.get("name") != "http" for p in app.get("ports", []))
    assert "--policy" in sidecar["args"] and "--upstream" in sidecar["args"]
    assert sidecar["args"][sidecar["args"].index("--upstream") + 1] == "http://127.0.0.1:8080"


@pytest.mark.parametrize("cmd", ["helm install mcp-warden ./charts/mcp-warden", "helm show crds ./charts/mcp-warden"])
def test_readme_commands_name_the_chart(cmd):
    assert cmd in README.read_text()
