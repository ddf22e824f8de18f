"""The Dockerfiles (no Docker engine here, so checked as text) agree with the chart and the
workspace: the chart's default image names, the crate and binaries they build, the pinned Rust,
a distroless non-root runtime whose uid is the chart's runAsUser."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from chart_tools import CHART, REPO

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
IMAGES = {
    "operator": ("mcp-warden-operator", VALUES["operator"]["image"]["repository"], "operator"),
    "sidecar": ("mcp-warden-sidecar", VALUES["sidecar"]["image"]["repository"], "sidecar"),
}
RUNTIME = "gcr.io/distroless/cc-debian12:nonroot"


def dockerfile(name: str) -> str:
    path = REPO / "docker" / f"{name}.Dockerfile"
    assert path.exists(), f"{path} missing"
    return path.read_text()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_builds_the_crate_the_chart_names(name):
    crate, repository, crate_dir = IMAGES[name]
    text = dockerfile(name)
    assert repository == f"ghcr.io/mcp-warden/{crate}"
    manifest = tomllib.loads((REPO / crate_dir / "Cargo.toml").read_text())
    assert manifest["package"]["name"] == crate
    assert re.search(rf"cargo build --release --locked -p {re.escape(crate)}\b", text)
    assert f'org.opencontainers.image.title="{crate}"' in text
    entry = re.search(r'^ENTRYPOINT \["(/usr/local/bin/[\w-]+)"\]$', text, re.M)
    assert entry and entry.group(1) == f"/usr/local/bin/{crate}"
    assert f"COPY --from=build /out/{crate} /usr/local/bin/{crate}" in text


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_is_multi_stage_distroless_non_root(name):
    text = dockerfile(name)
    toolchain = tomllib.loads((REPO / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    assert f"ARG RUST_IMAGE=docker.io/library/rust:{toolchain}-bookworm" in text
    assert f"ARG RUNTIME_IMAGE={RUNTIME}" in text
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${RUST_IMAGE}", "${RUNTIME_IMAGE}"]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["65532:65532"]
    deployment = (CHART / "templates" / "operator-deployment.yaml").read_text()
    assert "runAsUser: 65532" in deployment and "runAsGroup: 65532" in deployment


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (".git", "target", ".venv", ".run", "**/node_modules"):
        assert entry in lines
