"""Helpers for the chart tests: render the chart with the real helm binary, split the output into
documents, and validate them (kubernetes-validate for built-in kinds, the CRD's openAPIV3Schema
for McpAuthPolicy, the prometheus-operator models for ServiceMonitor/PodMonitor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import celpy
import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mcp-warden"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BAD_VALUES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
HELM = Path(os.environ.get("HELM", REPO / ".run" / "bin" / "helm"))
HELM3 = Path(os.environ.get("HELM3", REPO / ".run" / "bin" / "helm3"))
VENV_BIN = REPO / ".venv" / "bin"
CRD_SOURCE = REPO / "crds" / "mcpauthpolicies.yaml"
CRD_IN_CHART = CHART / "crds" / "mcpauthpolicies.yaml"
MONITOR_VALIDATOR = Path(__file__).parent / "validate-monitors.mjs"
# Kubernetes versions the rendered manifests are validated against: the oldest the chart
# supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.28", "1.33", "1.37"]
RELEASE = "mcp-warden"
NAMESPACE = "mcp-system"

SETUP_HINT = "run scripts/setup-k8s-tools first"


def require(binary: Path) -> Path:
    if not binary.exists():
        raise AssertionError(f"{binary.name} not found at {binary}: {SETUP_HINT}")
    return binary


def helm(*args: str, check: bool = True, binary: Path = HELM) -> subprocess.CompletedProcess:
    """Runs helm (4 by default, `binary=HELM3` for Helm 3); with check=True a failure raises with
    helm's stderr."""
    proc = subprocess.run([str(require(binary)), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template(values: Path | None = None, kube_version: str = "1.33", extra: tuple[str, ...] = (),
             binary: Path = HELM) -> str:
    """`helm template` with the chart's CRDs included, as an install would create them."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds",
            "--kube-version", kube_version]
    if values is not None:
        args += ["--values", str(values)]
    return helm(*args, *extra, binary=binary).stdout


def documents(rendered: str) -> list[dict]:
    """The non-empty YAML documents of a rendering."""
    return [d for d in yaml.safe_load_all(rendered) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kubernetes_validate(docs: list[dict], kube_version: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """kubernetes-validate --strict over the documents of built-in kinds."""
    exe = VENV_BIN / "kubernetes-validate"
    if not exe.exists():
        raise AssertionError(f"{exe} missing: {SETUP_HINT}")
    path = tmp_path / f"manifests-{kube_version}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return subprocess.run([str(exe), "--strict", "--quiet", "-k", kube_version, str(path)],
                          capture_output=True, text=True, timeout=300)


def crd_schema(crd_path: Path = CRD_IN_CHART) -> dict:
    """The openAPIV3Schema of the served McpAuthPolicy version."""
    if not crd_path.exists():
        raise AssertionError(f"{crd_path} is missing (the operator generates crds/mcpauthpolicies.yaml; "
                             "the chart ships a copy)")
    crd = yaml.safe_load(crd_path.read_text())
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    assert versions, "the CRD serves no version"
    return versions[0]["schema"]["openAPIV3Schema"]


def validate_policy(doc: dict, schema: dict) -> list[str]:
    """Errors of one McpAuthPolicy against the CRD schema: the OpenAPI structure and the CEL
    `x-kubernetes-validations` rules, as the API server would check them at admission."""
    validator = jsonschema.Draft4Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    return errors or cel_errors(with_defaults(doc, schema), schema)


def with_defaults(value, schema: dict):
    """`value` with the schema's `default`s filled in, as the API server does before CEL runs."""
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = sub["default"]
            if key in out:
                out[key] = with_defaults(out[key], sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(v, schema["items"]) for v in value]
    return value


_CEL = celpy.Environment()


def cel_errors(value, schema: dict, path: str = "") -> list[str]:
    """Evaluates every CEL rule of the schema against the part of `value` it sits on."""
    errors = []
    for check in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in check["rule"]:
            continue  # transition rules need the previous object
        program = _CEL.program(_CEL.compile(check["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            errors.append(f"{path or '/'}: {check.get('message', check['rule'])}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub:
                errors += cel_errors(child, sub, f"{path}/{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            errors += cel_errors(child, schema["items"], f"{path}/{i}")
    return errors


def validate_monitors(docs: list[dict]) -> subprocess.CompletedProcess:
    """Validates ServiceMonitor/PodMonitor documents with @kubernetes-models/prometheus-operator,
    the prometheus-operator CRD schemas compiled to validators."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is required for the ServiceMonitor/PodMonitor validation")
    if not (MONITOR_VALIDATOR.parent / "node_modules").exists():
        raise AssertionError(f"{MONITOR_VALIDATOR.parent}/node_modules missing: {SETUP_HINT}")
    return subprocess.run([node, str(MONITOR_VALIDATOR)], input=json.dumps(docs),
                          capture_output=True, text=True, timeout=60)
