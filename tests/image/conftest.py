"""The image suite builds release binaries (fat LTO: far longer than the rest of the suite on a
small machine), so it is kept out of the default run: `pytest tests/image -m image` runs it."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "image: builds and unpacks the container images (slow)")


def pytest_collection_modifyitems(config, items):
    if "image" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("image")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("image")]
