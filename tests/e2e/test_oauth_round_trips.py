"""The token endpoint's state-store round trips against a real Redis and the real oidc-provider:
each grant counts its request and reads the records it needs in one round trip, so a refresh
grant takes two (read, rotate) and a code grant three (read, take the code, store the session).
The grant rates are measured by bench/run.sh (oauth mode), not here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, ProxyDeployment  # noqa: E402

NOWHERE = "http://127.0.0.1:9"  # the token endpoint never calls the app


def store_operations(sidecar) -> dict[str, float]:
    """Store operations per `op` so far, without the revocation log's background reads."""
    ops = {}
    for (name, labels), value in sidecar.metrics().items():
        op = dict(labels).get("op")
        if name == "mcp_warden_store_operation_duration_seconds_count" and op != "read_log":
            ops[op] = value
    return ops


def operations_of(sidecar, call) -> tuple[object, dict[str, float]]:
    """`call()`'s result and the store operations it made."""
    before = store_operations(sidecar)
    result = call()
    after = store_operations(sidecar)
    return result, {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


@pytest.fixture(scope="module")
def by_address(start_sidecar, start_idp, work, redis):
    """Token requests limited per client address (the default)."""
    return ProxyDeployment(start_sidecar, start_idp, work, NOWHERE, "trips-address",
                           redis_url=redis.url)


@pytest.fixture(scope="module")
def by_client(start_sidecar, start_idp, work, redis):
    """Token requests limited per client id: counted after the client is authenticated."""
    return ProxyDeployment(start_sidecar, start_idp, work, NOWHERE, "trips-client",
                           redis_url=redis.url,
                           rateLimits={"token": {"requests": 600, "key": "clientId"}})


def test_refresh_grant_reads_in_one_round_trip_and_rotates_in_another(by_address):
    c = Client(by_address.sidecar.base)
    tokens = c.full_login()
    r, ops = operations_of(by_address.sidecar, lambda: c.refresh(tokens["refresh_token"]))
    assert r.status_code == 200, r.text
    assert ops == {"count_and_get": 1, "compare_and_swap": 1}


def test_code_grant_takes_three_round_trips(by_address):
    c = Client(by_address.sidecar.base)
    verifier, final = c.login()
    code, _ = browser.code_of(final)
    r, ops = operations_of(by_address.sidecar, lambda: c.exchange(code, verifier))
    assert r.status_code == 200, r.text
    assert ops == {"count_and_get": 1, "take": 1, "put": 1}


def test_refresh_grant_limited_per_client_takes_three_round_trips(by_client):
    c = Client(by_client.sidecar.base)
    tokens = c.full_login()
    r, ops = operations_of(by_client.sidecar, lambda: c.refresh(tokens["refresh_token"]))
    assert r.status_code == 200, r.text
    assert ops == {"count_and_get": 1, "incr": 1, "compare_and_swap": 1}


def test_a_stolen_refresh_token_with_the_wrong_client_still_fails(by_address):
    """The session record is read before the client is authenticated, and still checked
    against it."""
    owner, thief = Client(by_address.sidecar.base), Client(by_address.sidecar.base)
    tokens = owner.full_login()
    r = thief.refresh(tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert owner.refresh(tokens["refresh_token"]).status_code == 200
