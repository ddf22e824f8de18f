"""Example manifests against the generated CRD and the Kubernetes schemas.

Valid McpAuthPolicy examples must pass the CRD's openAPIV3Schema (jsonschema); the invalid ones
must fail it with the documented message, or (rules the schema cannot express) be named by one
of the CRD's CEL rules (the Rust test operator/tests/examples.rs evaluates those rules). The
workload examples, injected offline by the real `mcp-warden` binary, must be valid Kubernetes
objects for the oldest and newest supported versions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRD = ROOT / "crds" / "mcpauthpolicies.yaml"
CLI = ROOT / "target" / "debug" / "mcp-warden"
KUBERNETES_VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"


def crd_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def cel_messages(node) -> list[str]:
    """Every x-kubernetes-validations message in the schema."""
    out = []
    if isinstance(node, dict):
        out += [r["message"] for r in node.get("x-kubernetes-validations", [])]
        for child in node.values():
            out += cel_messages(child)
    elif isinstance(node, list):
        for child in node:
            out += cel_messages(child)
    return out


def validator():
    return jsonschema.Draft7Validator(crd_schema())


def valid_policy_docs():
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        if "invalid" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "McpAuthPolicy":
                yield pytest.param(doc, id=f"{path.relative_to(EXAMPLES)}:{doc['metadata']['name']}")


INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def header(text: str, key: str) -> str:
    match = re.search(rf"^# {key}: (.+)$", text, re.MULTILINE)
    assert match, f"no '# {key}:' line"
    return match.group(1).strip()


def test_there_are_examples_of_both_kinds():
    assert len(list(valid_policy_docs())) >= 3
    assert len(INVALID) >= 5


@pytest.mark.parametrize("doc", list(valid_policy_docs()))
def test_valid_example_matches_the_crd_schema(doc):
    errors = [e.message for e in validator().iter_errors(doc)]
    assert errors == []


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_example_is_rejected(path):
    text = path.read_text()
    expect = header(text, "expect")
    doc = yaml.safe_load(text)
    errors = [e.message for e in validator().iter_errors(doc)]
    if header(text, "rejected-by") == "schema":
        assert any(expect in e for e in errors), f"{errors} lack {expect!r}"
    else:
        # Only a CEL rule can catch it: the schema alone accepts it, and the CRD has the rule.
        assert errors == []
        assert any(expect in m for m in cel_messages(crd_schema())), expect


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_injected_workloads_are_valid_kubernetes(tmp_path, version):
    assert CLI.exists(), f"{CLI} is missing: build it with cargo build -p mcp-warden-operator"
    assert KUBERNETES_VALIDATE.exists(), "run scripts/setup-k8s-tools (kubernetes-validate)"
    out = subprocess.run(
        [str(CLI), "inject", "-f", str(EXAMPLES / "workloads" / "deployment.yaml"),
         "--policy", str(EXAMPLES / "policies" / "jwt-corp-sso.yaml")],
        check=True, capture_output=True, text=True, timeout=60,
    )
    assert "Deployment mcp-server: injected" in out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    template = docs[0]["spec"]["template"]
    (sidecar,) = template["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    injected = tmp_path / "injected.yaml"
    injected.write_text(out.stdout)
    shutil.copy(EXAMPLES / "workloads" / "namespace.yaml", tmp_path / "namespace.yaml")
    res = subprocess.run(
        [str(KUBERNETES_VALIDATE), "-k", version, "--strict",
         str(injected), str(tmp_path / "namespace.yaml")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("version", ["1.28", "1.33"])
def test_crd_is_a_valid_custom_resource_definition(version):
    assert KUBERNETES_VALIDATE.exists(), "run scripts/setup-k8s-tools (kubernetes-validate)"
    res = subprocess.run(
        [str(KUBERNETES_VALIDATE), "-k", version, "--strict", str(CRD)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passed" in res.stdout + res.stderr
