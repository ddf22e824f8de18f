"""Bad values fail at install time with a message that names the problem. Each file under
bad-values/ starts with `# expect: <text>`; rendering it must fail and helm's error must contain
that text."""

import pytest

from chart_tools import BAD_VALUES, CHART, helm


def expectation(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <text>'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_bad_values_files():
    assert len(BAD_VALUES) >= 10


@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_fail_with_a_clear_message(path):
    result = helm("template", "mcp-warden", str(CHART), "--values", str(path), check=False)
    assert result.returncode != 0, f"{path.name} rendered without error"
    assert expectation(path) in result.stderr, result.stderr


@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_fail_install(path):
    """`helm install` (client-side dry run: no cluster here) refuses them too."""
    result = helm("install", "mcp-warden", str(CHART), "--dry-run=client", "--values", str(path), check=False)
    assert result.returncode != 0 and expectation(path) in result.stderr, result.stderr


def test_schema_rejects_misspelt_top_level_key():
    result = helm("template", "mcp-warden", str(CHART), "--set", "dashbaord.enabled=false", check=False)
    assert result.returncode != 0 and "dashbaord" in result.stderr, result.stderr
