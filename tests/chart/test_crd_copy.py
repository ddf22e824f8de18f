"""The chart ships the CRD the operator generates, byte for byte."""

from chart_tools import CRD_IN_CHART, CRD_SOURCE, REPO, documents, template


def test_chart_crd_is_the_generated_crd():
    assert CRD_SOURCE.exists(), f"{CRD_SOURCE} is missing: the operator's `mcp-warden crd` generates it"
    assert CRD_IN_CHART.exists(), f"{CRD_IN_CHART} is missing"
    fix = f"cp {CRD_SOURCE.relative_to(REPO)} {CRD_IN_CHART.relative_to(REPO)}"
    assert CRD_IN_CHART.read_bytes() == CRD_SOURCE.read_bytes(), f"the chart's CRD copy is stale: {fix}"


def test_install_creates_the_crd():
    crds = [d for d in documents(template()) if d["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == ["mcpauthpolicies.mcpwarden.dev"]
    served = [v["name"] for v in crds[0]["spec"]["versions"] if v["served"]]
    assert served == ["v1alpha1"]
    assert "status" in crds[0]["spec"]["versions"][0].get("subresources", {})
