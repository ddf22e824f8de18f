"""Fault drills under load: a bounded loop of valid requests runs while the IdP rotates its
signing key (new kid published, old one removed), while the IdP is down, and while the policy
ConfigMap is swapped the way the kubelet does it (the `..data` symlink). No valid request may
fail."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import httpx
import pytest
from harness import SigningKey, jwt_policy, wait_until
from recorder import Recorder


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    yield rec
    rec.stop()


class Load:
    """Threads sending valid requests (a fresh token each, signed with `key()`) until stopped;
    counts the statuses."""

    def __init__(self, url: str, mint, threads: int = 2):
        self.url = url
        self.mint = mint
        self.statuses: Counter = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.url, headers={"Authorization": f"Bearer {self.mint()}"})
                    status = r.status_code
                    detail = r.headers.get("www-authenticate", "")
                except httpx.HTTPError as e:
                    status, detail = 0, repr(e)
                with self._lock:
                    self.statuses[status] += 1
                    if status != 200 and len(self.failures) < 10:
                        self.failures.append(f"{status} {detail}")

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def wait_for(self, n: int, timeout: float = 30):
        """Until at least `n` more requests were answered."""
        target = sum(self.statuses.values()) + n
        wait_until(lambda: sum(self.statuses.values()) >= target, timeout, "load progress")


def test_idp_key_rotation_and_outage_during_load(start_idp, start_sidecar, recorder):
    old = SigningKey("drill-ec-1", "ES256")
    idp = start_idp(keys=[old])
    sidecar = start_sidecar(recorder.base,
                            lambda base: jwt_policy("drill-rotate", f"{base}/mcp", idp.issuer))
    signing = {"key": old}
    try:
        with Load(sidecar.url, lambda: idp.mint(sidecar.url, key=signing["key"])) as load:
            load.wait_for(50)
            # 1. The new key is published next to the old one; the IdP signs with it from now.
            new = SigningKey("drill-ec-2", "ES256")
            idp.rotate(new)
            signing["key"] = new
            load.wait_for(100)
            # 2. The old key is removed.
            idp.stop()
            idp.keys = [new]
            idp.start()
            load.wait_for(100)
            # 3. The IdP goes down: the cached keys keep serving.
            idp.stop()
            load.wait_for(100)
            idp.start()
            load.wait_for(50)
        served = sum(load.statuses.values())
        print(f"served {served} valid requests: {dict(load.statuses)}")
        assert load.statuses == Counter({200: served}), load.failures
    finally:
        sidecar.stop()
        idp.stop()


def _policy_version(idp, base: str, name: str) -> str:
    doc = jwt_policy("drill-configmap", f"{base}/mcp", idp.issuer)
    doc["spec"]["resource"]["name"] = name
    return json.dumps(doc, indent=2)


def _kubelet_swap(root, text: str, version: int):
    """What the kubelet does to a ConfigMap volume: the files go to a new timestamped directory,
    a `..data_tmp` symlink to it is renamed over `..data`, and the old directory is removed."""
    new_dir = root / f"..2026_12_01_00_00_{version:02d}.000000001"
    new_dir.mkdir()
    (new_dir / "policy.yaml").write_text(text)
    tmp = root / "..data_tmp"
    os.symlink(new_dir.name, tmp)
    old_target = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.replace(tmp, root / "..data")
    if old_target:
        for f in (root / old_target).iterdir():
            f.unlink()
        (root / old_target).rmdir()


def test_configmap_symlink_swap_during_load(idp, start_sidecar, recorder):
    sidecar = start_sidecar(recorder.base,
                            lambda base: _policy_version(idp, base, "version 0"))
    try:
        # Lay the policy out as a ConfigMap volume: policy.yaml -> ..data/policy.yaml.
        root = sidecar.dir
        _kubelet_swap(root, _policy_version(idp, sidecar.base, "version 0"), 0)
        link = root / "policy.link"
        os.symlink("..data/policy.yaml", link)
        os.replace(link, sidecar.policy_path)
        with Load(sidecar.url, lambda: idp.mint(sidecar.url)) as load:
            load.wait_for(50)
            for version in range(1, 9):
                _kubelet_swap(root, _policy_version(idp, sidecar.base, f"version {version}"),
                              version)
                # Longer than --reload-interval (1 s), so each version is loaded.
                time.sleep(1.3)
            load.wait_for(50)
        metadata = f"{sidecar.base}/.well-known/oauth-protected-resource/mcp"
        wait_until(lambda: httpx.get(metadata, timeout=5).json().get("resource_name") == "version 8",
                   15, "the last policy version in force")
        served = sum(load.statuses.values())
        print(f"served {served} valid requests: {dict(load.statuses)}")
        assert load.statuses == Counter({200: served}), load.failures
        reloads = sidecar.metrics()
        errors = sum(v for (name, labels), v in reloads.items()
                     if name == "mcp_warden_policy_reloads_total" and ("result", "error") in labels)
        assert errors == 0
    finally:
        sidecar.stop()
