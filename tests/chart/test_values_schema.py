"""Bad values fail at install time with a message that names the problem. Each file under
bad-values/ starts with `# expect: <text>`; rendering it must fail and helm's error must contain
that text."""

import json

import pytest
import yaml

from chart_tools import BAD_VALUES, CHART, HELM, HELM3, helm

HELMS = pytest.mark.parametrize("binary", [HELM, HELM3], ids=["helm4", "helm3"])


def expectation(path, binary=HELM):
    """The `# expect: <text>` line (Helm 4), or `# expect-helm3: <text>` for Helm 3's wording of
    schema errors when it differs."""
    lines = path.read_text().splitlines()
    expect = {}
    for line in lines:
        for key in ("expect", "expect-helm3"):
            if line.startswith(f"# {key}: "):
                expect[key] = line.removeprefix(f"# {key}: ").strip()
    assert "expect" in expect, f"{path.name}: needs a '# expect: <text>' line"
    if binary == HELM3:
        return expect.get("expect-helm3", expect["expect"])
    return expect["expect"]


def test_there_are_bad_values_files():
    assert len(BAD_VALUES) >= 10


@HELMS
@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_fail_with_a_clear_message(path, binary):
    result = helm("template", "mcp-warden", str(CHART), "--values", str(path), check=False, binary=binary)
    assert result.returncode != 0, f"{path.name} rendered without error"
    assert expectation(path, binary) in result.stderr, result.stderr


@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_fail_install(path):
    """`helm install` (client-side dry run: no cluster here) refuses them too."""
    result = helm("install", "mcp-warden", str(CHART), "--dry-run=client", "--values", str(path), check=False)
    assert result.returncode != 0 and expectation(path) in result.stderr, result.stderr


def test_schema_rejects_misspelt_top_level_key():
    result = helm("template", "mcp-warden", str(CHART), "--set", "dashbaord.enabled=false", check=False)
    assert result.returncode != 0 and "dashbaord" in result.stderr, result.stderr


def test_schema_and_defaults_describe_the_same_keys():
    """Every default in values.yaml is in the schema (else the chart would not install), and every
    schema key has a default, except the optional ones listed here."""
    optional = {"global", "sidecar.resources.limits.cpu",
                "sidecar.resources.requests.ephemeral-storage",
                "sidecar.resources.limits.ephemeral-storage"}
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node, prefix=""):
        props = node.get("properties", {}) if isinstance(node, dict) else {}
        for name, sub in props.items():
            path = f"{prefix}{name}"
            yield path
            yield from keys(sub, f"{path}.")

    def present(path):
        node = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = [k for k in keys(schema) if not present(k) and k not in optional]
    assert not missing, f"schema keys without a default in values.yaml: {missing}"
