"""jwt mode against real peers: the oidc-provider IdP, FastMCP and server-everything, driven by
the Python `mcp` client, the TypeScript SDK client and raw HTTP (REQUIREMENTS items 1-7)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import pytest

from harness import SigningKey, jwt_policy, sign, sign_hs256_with, sign_unsecured
from mcp_http import (
    ACCEPT,
    PROTOCOL_VERSION,
    call,
    initialize_body,
    open_session,
    parse_rpc_response,
    python_client_call,
    sdk_client_argv,
)

ALLOWED_ORIGIN = "http://app.example.test"


def guard_policy(idp):
    def policy(base):
        return jwt_policy(
            "e2e-guard", f"{base}/mcp", idp.issuer,
            rules=[{"method": "tools/call", "tools": ["delete_*"], "scopes": ["mcp:admin"]}],
            forward={"claimsToHeaders": {"sub": "X-Auth-Subject", "client_id": "X-Auth-Client"}},
            cors={"allowedOrigins": [ALLOWED_ORIGIN]},
        )
    return policy


@pytest.fixture(scope="module")
def guard(start_sidecar, idp, fastmcp):
    """The sidecar in front of FastMCP: rules, claims-to-headers and CORS configured."""
    return start_sidecar(fastmcp.base, guard_policy(idp))


@pytest.fixture(scope="module")
def guard_everything(start_sidecar, idp, everything):
    """The sidecar in front of server-everything with a minimal policy."""
    return start_sidecar(everything.base,
                         lambda base: jwt_policy("e2e-everything", f"{base}/mcp", idp.issuer))


@pytest.fixture(scope="module")
def token(idp, guard):
    """A real client_credentials token for the guard's resource with scope mcp:tools."""
    return idp.token(guard.url, "mcp:tools")


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


def challenge_params(response: httpx.Response) -> dict[str, str]:
    """The auth-params of the single `WWW-Authenticate: Bearer …` header."""
    values = response.headers.get_list("www-authenticate")
    assert len(values) == 1, values
    scheme, _, rest = values[0].partition(" ")
    assert scheme == "Bearer", values[0]
    params = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', rest))
    # every parameter is quoted and nothing else is in the header
    assert re.sub(r'\s*,?\s*[a-z_]+="(?:[^"\\]|\\.)*"', "", rest) == "", values[0]
    return params


def metadata_url(sidecar) -> str:
    return f"{sidecar.base}/.well-known/oauth-protected-resource/mcp"


# ---------------------------------------------------------------- real clients, happy path


def test_python_mcp_client_lists_and_calls_tools(guard, token):
    result = python_client_call(guard.url, token, "add", {"a": 2, "b": 40})
    assert result["tools"] == ["add", "delete_everything", "whoami"]
    assert result["is_error"] is False
    assert result["text"] == ["42"]


def test_typescript_sdk_client_calls_echo_through_the_sidecar(guard_everything, idp):
    token = idp.token(guard_everything.url, "mcp:tools")
    run = subprocess.run(sdk_client_argv(guard_everything.url, "echo", {"message": "hi"}),
                         env={**os.environ, "MCP_TOKEN": token}, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    import json
    out = json.loads(run.stdout)
    assert "echo" in out["tools"] and "get-sum" in out["tools"]
    assert out["result"]["content"] == [{"type": "text", "text": "Echo: hi"}]


def test_typescript_sdk_client_without_token_fails(guard_everything):
    run = subprocess.run(sdk_client_argv(guard_everything.url, "echo", {"message": "hi"}),
                         env={k: v for k, v in os.environ.items() if k != "MCP_TOKEN"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "a bearer token is required" in run.stderr, run.stderr


def test_python_mcp_client_with_token_for_another_resource_is_refused(guard, idp, http):
    other = idp.token("https://other.example.com/mcp", "mcp:tools")
    with pytest.raises(Exception):
        python_client_call(guard.url, other, "add", {"a": 1, "b": 1}, timeout=15)
    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Authorization": f"Bearer {other}"})
    assert r.status_code == 401
    assert challenge_params(r)["error"] == "invalid_token"


# ---------------------------------------------------------------- 401 challenges


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT"])
def test_missing_token_is_challenged_on_every_method(guard, http, method):
    r = http.request(method, guard.url, headers={"Accept": ACCEPT},
                     content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}' if method == "POST" else None)
    assert r.status_code == 401
    params = challenge_params(r)
    assert params == {"resource_metadata": metadata_url(guard), "scope": "mcp:tools"}
    assert r.headers["cache-control"] == "no-store"
    if method != "HEAD":
        assert r.json()["error"] != "invalid_token"


def test_other_paths_are_protected_too(guard, http):
    for path in ["/", "/anything", "/mcp/../admin", "/.well-known/other"]:
        r = http.get(f"{guard.base}{path}")
        assert r.status_code == 401, path
        assert challenge_params(r)["resource_metadata"] == metadata_url(guard)


def test_basic_auth_is_not_a_bearer_token(guard, http):
    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert "error" not in challenge_params(r)


def test_two_authorization_headers_are_a_bad_request(guard, token, http):
    r = http.post(guard.url, json=initialize_body(),
                  headers=[("Accept", ACCEPT), ("Authorization", f"Bearer {token}"),
                           ("Authorization", f"Bearer {token}")])
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_token_in_query_string_is_ignored(guard, token, http):
    for name in ["access_token", "token"]:
        r = http.post(f"{guard.url}?{name}={token}", json=initialize_body(),
                      headers={"Accept": ACCEPT})
        assert r.status_code == 401
        assert "error" not in challenge_params(r)


def test_token_in_form_body_is_ignored(guard, token, http):
    r = http.post(guard.url, data={"access_token": token}, headers={"Accept": ACCEPT})
    assert r.status_code == 401
    assert "error" not in challenge_params(r)


def _defective_tokens(idp, resource):
    """(name, token, reason) of tokens that must all be refused with invalid_token."""
    now = int(time.time())
    ec = idp.keys[0]
    stranger = SigningKey("stranger", "ES256")
    rsa = next(k for k in idp.keys if k.alg == "RS256")
    return [
        ("garbage", "not-a-jwt", "malformed"),
        ("two segments", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0", "malformed"),
        ("expired", idp.mint(resource, exp=now - 600, iat=now - 900), "expired"),
        ("not yet valid", idp.mint(resource, nbf=now + 600), "not_yet_valid"),
        ("wrong issuer", idp.mint(resource, iss="http://127.0.0.1:1"), "wrong_issuer"),
        ("issuer with trailing slash", idp.mint(resource, iss=idp.issuer + "/"), "wrong_issuer"),
        ("wrong audience", idp.mint("https://other.example.com/mcp"), "wrong_audience"),
        ("no audience", idp.mint(resource, aud=None), "wrong_audience"),
        ("no expiry", idp.mint(resource, exp=None), "malformed"),
        ("unknown kid", sign(idp.claims(resource), stranger), "unknown_kid"),
        ("forged with the IdP's kid", sign(idp.claims(resource), stranger, {"kid": ec.kid}),
         "bad_signature"),
        ("alg none", sign_unsecured(idp.claims(resource), ec.kid), "disallowed_alg"),
        ("HS256 keyed with the RSA public key",
         sign_hs256_with(rsa.public_pem(), idp.claims(resource), rsa.kid), "disallowed_alg"),
        ("HS256 keyed with the EC public key",
         sign_hs256_with(ec.public_pem(), idp.claims(resource), ec.kid), "disallowed_alg"),
        ("tampered payload", _tamper(idp.mint(resource, scope="mcp:tools")), "bad_signature"),
    ]


def _tamper(token: str) -> str:
    import base64
    import json
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "mcp:tools mcp:admin"
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{sig}"


def test_defective_tokens_get_invalid_token(guard, idp, http):
    failures = []
    for name, bad, _reason in _defective_tokens(idp, guard.url):
        r = http.post(guard.url, json=initialize_body(),
                      headers={"Accept": ACCEPT, "Authorization": f"Bearer {bad}"})
        if r.status_code != 401:
            failures.append(f"{name}: status {r.status_code}")
            continue
        params = challenge_params(r)
        if params.get("error") != "invalid_token":
            failures.append(f"{name}: challenge {params}")
        if params.get("resource_metadata") != metadata_url(guard):
            failures.append(f"{name}: resource_metadata {params}")
        if params.get("scope") != "mcp:tools":
            failures.append(f"{name}: scope {params}")
        if r.json()["error"] != "invalid_token":
            failures.append(f"{name}: body {r.text}")
    assert failures == []


def test_token_types_are_enforced_when_the_policy_lists_them(start_sidecar, idp, fastmcp,
                                                             http):
    sidecar = start_sidecar(fastmcp.base, lambda base: jwt_policy(
        "e2e-typ", f"{base}/mcp", idp.issuer,
        jwt={"issuer": idp.issuer, "requiredScopes": ["mcp:tools"], "tokenTypes": ["at+jwt"]}))
    try:
        def status(token):
            return http.post(sidecar.url, json=initialize_body(), headers={
                "Accept": ACCEPT, "Authorization": f"Bearer {token}"})
        assert status(idp.token(sidecar.url)).status_code == 200  # the IdP's at+jwt
        assert status(idp.mint(sidecar.url, headers={"typ": "application/AT+JWT"})).status_code == 200
        for typ in ["JWT", "id_token+jwt", None]:
            r = status(idp.mint(sidecar.url, headers={"typ": typ}))
            assert r.status_code == 401, typ
            assert challenge_params(r)["error"] == "invalid_token"
            assert "type" in challenge_params(r)["error_description"]
    finally:
        sidecar.stop()


def test_any_token_type_is_accepted_by_default(guard, idp, http):
    r = http.post(guard.url, json=initialize_body(), headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {idp.mint(guard.url, headers={'typ': 'JWT'})}"})
    assert r.status_code == 200


def test_rs256_token_signed_by_the_idp_key_is_accepted(guard, idp, http):
    rsa = next(k for k in idp.keys if k.alg == "RS256")
    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Authorization": f"Bearer {idp.mint(guard.url, rsa)}"})
    assert r.status_code == 200, r.text


def test_clock_skew_is_bounded(guard, idp, http):
    now = int(time.time())

    def status(**claims):
        tok = idp.mint(guard.url, **claims)
        return http.post(guard.url, json=initialize_body(),
                         headers={"Accept": ACCEPT, "Authorization": f"Bearer {tok}"}).status_code

    # the default clockSkewSeconds is 60
    assert status(exp=now - 20) == 200
    assert status(nbf=now + 20) == 200
    assert status(exp=now - 120) == 401
    assert status(nbf=now + 120) == 401


@pytest.mark.parametrize("claims", [
    {"scope": ["mcp:tools"]},
    {"scope": None, "scp": "mcp:tools"},
    {"scope": None, "scp": ["mcp:read", "mcp:tools"]},
    {"scope": "openid mcp:tools email"},
    {"aud": ["https://other.example.com", "{resource}"]},
])
def test_scope_and_audience_shapes_are_accepted(guard, idp, http, claims):
    claims = {k: (v.replace("{resource}", guard.url) if isinstance(v, str) else
                  [x.replace("{resource}", guard.url) for x in v] if isinstance(v, list) else v)
              for k, v in claims.items()}
    tok = idp.mint(guard.url, **claims)
    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("granted, expected", [
    ("mcp", 200),                  # a broad scope covers mcp:tools
    ("mcp:tools:read", 403),       # a narrower one does not
    ("mcp:toolsadmin", 403),       # nor does a longer name that is not below it
    ("MCP:TOOLS", 403),            # scopes are case-sensitive
])
def test_scope_hierarchy(guard, idp, http, granted, expected):
    tok = idp.mint(guard.url, scope=granted)
    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Authorization": f"Bearer {tok}"})
    assert r.status_code == expected, r.text


# ---------------------------------------------------------------- 403 insufficient scope


def test_real_token_without_the_required_scope_gets_403(guard, idp, http):
    weak = idp.token(guard.url, "mcp:read")
    for method in ["POST", "GET", "DELETE"]:
        r = http.request(method, guard.url, headers={"Accept": ACCEPT,
                                                     "Authorization": f"Bearer {weak}"},
                         content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}' if method == "POST" else None)
        assert r.status_code == 403, method
        assert challenge_params(r) == {
            "resource_metadata": metadata_url(guard),
            "scope": "mcp:tools",
            "error": "insufficient_scope",
            "error_description": challenge_params(r)["error_description"],
        }
        assert r.json()["error"] == "insufficient_scope"


def test_tool_rule_needs_the_admin_scope(guard, idp, http):
    tools_only = idp.token(guard.url, "mcp:tools")
    admin = idp.token(guard.url, "mcp:tools mcp:admin")
    session = open_session(http, guard.url, tools_only)

    r = call(http, guard.url, tools_only, session, "tools/call",
             {"name": "delete_everything", "arguments": {}})
    assert r.status_code == 403
    params = challenge_params(r)
    assert params["error"] == "insufficient_scope"
    assert params["scope"].split() == ["mcp:tools", "mcp:admin"]
    assert params["resource_metadata"] == metadata_url(guard)

    r = call(http, guard.url, tools_only, session, "tools/call",
             {"name": "add", "arguments": {"a": 1, "b": 2}}, id=3)
    assert r.status_code == 200
    assert parse_rpc_response(r)["result"]["content"][0]["text"] == "3"

    r = call(http, guard.url, tools_only, session, "tools/list", {}, id=4)
    assert r.status_code == 200

    r = call(http, guard.url, admin, session, "tools/call",
             {"name": "delete_everything", "arguments": {}}, id=5)
    assert r.status_code == 200
    assert parse_rpc_response(r)["result"]["content"][0]["text"] == "nothing deleted"


def test_batch_with_a_ruled_tool_needs_its_scope(guard, idp, http):
    tools_only = idp.token(guard.url, "mcp:tools")
    session = open_session(http, guard.url, tools_only)
    batch = [
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
         "params": {"name": "add", "arguments": {"a": 1, "b": 1}}},
        {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
         "params": {"name": "delete_everything", "arguments": {}}},
    ]
    r = http.post(guard.url, json=batch, headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {tools_only}",
        "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION})
    assert r.status_code == 403


def test_invalid_json_body_with_rules_is_a_bad_request(guard, token, http):
    r = http.post(guard.url, content=b"{not json",
                  headers={"Accept": ACCEPT, "Content-Type": "application/json",
                           "Authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32700


# Bodies that name `delete_everything` in a way some JSON parser reads (Go's encoding/json
# matches keys case-insensitively; most parsers keep the last of duplicate keys).
AMBIGUOUS_BODIES = {
    "case-folded duplicate name": '{"jsonrpc":"2.0","id":11,"method":"tools/call",'
        '"params":{"name":"add","NAME":"delete_everything","arguments":{}}}',
    "duplicate name, ruled first": '{"jsonrpc":"2.0","id":11,"method":"tools/call",'
        '"params":{"name":"delete_everything","name":"whoami","arguments":{}}}',
    "duplicate name, ruled last": '{"jsonrpc":"2.0","id":11,"method":"tools/call",'
        '"params":{"name":"whoami","name":"delete_everything","arguments":{}}}',
    "second Params": '{"jsonrpc":"2.0","id":11,"method":"tools/call",'
        '"params":{"name":"add","arguments":{"a":1,"b":1}},'
        '"Params":{"name":"delete_everything","arguments":{}}}',
    "Method beside method": '{"jsonrpc":"2.0","id":11,"method":"ping","Method":"tools/call",'
        '"params":{"name":"delete_everything","arguments":{}}}',
    "duplicate method": '{"jsonrpc":"2.0","id":11,"method":"tools/call","method":"ping",'
        '"params":{"name":"delete_everything","arguments":{}}}',
    "case variants only": '{"jsonrpc":"2.0","id":11,"Method":"tools/call",'
        '"Params":{"Name":"delete_everything","arguments":{}}}',
}


@pytest.mark.parametrize("body", AMBIGUOUS_BODIES.values(), ids=AMBIGUOUS_BODIES.keys())
def test_ambiguous_json_cannot_dodge_a_tool_rule(guard, idp, http, body):
    tools_only = idp.token(guard.url, "mcp:tools")
    session = open_session(http, guard.url, tools_only)
    r = http.post(guard.url, content=body.encode(), headers={
        "Accept": ACCEPT, "Content-Type": "application/json",
        "Authorization": f"Bearer {tools_only}",
        "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION})
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == 11
    assert answer["error"]["code"] == -32600


def test_ambiguous_json_in_a_batch_is_refused(guard, idp, http):
    tools_only = idp.token(guard.url, "mcp:tools")
    session = open_session(http, guard.url, tools_only)
    body = ('[{"jsonrpc":"2.0","id":1,"method":"ping"},'
            + AMBIGUOUS_BODIES["case-folded duplicate name"] + "]")
    r = http.post(guard.url, content=body.encode(), headers={
        "Accept": ACCEPT, "Content-Type": "application/json",
        "Authorization": f"Bearer {tools_only}",
        "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] is None


def test_requests_without_a_body_are_not_inspected(guard, idp, http):
    tools_only = idp.token(guard.url, "mcp:tools")
    session = open_session(http, guard.url, tools_only)
    r = http.delete(guard.url, headers={
        "Authorization": f"Bearer {tools_only}", "Mcp-Session-Id": session,
        "MCP-Protocol-Version": PROTOCOL_VERSION})
    assert r.status_code in (200, 204), (r.status_code, r.text)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_rules_read_bodies_on_every_method(guard, idp, http, method):
    tools_only = idp.token(guard.url, "mcp:tools")
    body = json.dumps({"jsonrpc": "2.0", "id": 12, "method": "tools/call",
                       "params": {"name": "delete_everything", "arguments": {}}})
    r = http.request(method, guard.url, content=body.encode(), headers={
        "Accept": ACCEPT, "Content-Type": "application/json",
        "Authorization": f"Bearer {tools_only}"})
    assert r.status_code == 403, (r.status_code, r.text)
    assert challenge_params(r)["error"] == "insufficient_scope"


# ---------------------------------------------------------------- protected-resource metadata


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource",
                                  "/.well-known/oauth-protected-resource/mcp"])
def test_protected_resource_metadata(guard, idp, http, path):
    r = http.get(f"{guard.base}{path}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["resource"] == guard.url
    assert doc["authorization_servers"] == [idp.issuer]
    assert doc["scopes_supported"] == ["mcp:tools", "mcp:admin"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert None not in doc.values()


def test_metadata_url_in_challenge_resolves_to_the_metadata(guard, idp, http):
    r = http.get(guard.url)
    doc = http.get(challenge_params(r)["resource_metadata"]).json()
    assert doc["resource"] == guard.url and doc["authorization_servers"] == [idp.issuer]


def test_metadata_does_not_list_offline_access(start_sidecar, idp, fastmcp, http):
    def policy(base):
        doc = jwt_policy("e2e-offline", f"{base}/mcp", idp.issuer)
        doc["spec"]["resource"]["scopesSupported"] = ["mcp:tools", "offline_access"]
        doc["spec"]["jwt"]["requiredScopes"] = []
        return doc
    sidecar = start_sidecar(fastmcp.base, policy)
    try:
        doc = http.get(f"{sidecar.base}/.well-known/oauth-protected-resource/mcp").json()
        assert doc["scopes_supported"] == ["mcp:tools"]
        r = http.get(sidecar.url)
        assert challenge_params(r)["scope"] == "mcp:tools"
    finally:
        sidecar.stop()


def test_resource_url_flag_overrides_the_policy(start_sidecar, idp, fastmcp, http):
    external = "https://mcp.example.com/tools/mcp"
    sidecar = start_sidecar(fastmcp.base,
                            lambda base: jwt_policy("e2e-external", f"{base}/mcp", idp.issuer),
                            extra_args=["--resource-url", external])
    try:
        doc = http.get(
            f"{sidecar.base}/.well-known/oauth-protected-resource/tools/mcp").json()
        assert doc["resource"] == external
        r = http.get(sidecar.url)
        assert challenge_params(r)["resource_metadata"] == (
            "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp")
        # a token for the external URL is the right audience; one for the pod address is not
        ok = http.post(sidecar.url, json=initialize_body(), headers={
            "Accept": ACCEPT, "Authorization": f"Bearer {idp.token(external)}"})
        assert ok.status_code == 200, ok.text
        wrong = http.post(sidecar.url, json=initialize_body(), headers={
            "Accept": ACCEPT, "Authorization": f"Bearer {idp.token(sidecar.url)}"})
        assert wrong.status_code == 401
    finally:
        sidecar.stop()


# ---------------------------------------------------------------- no token passthrough


def test_app_never_sees_the_token_and_gets_identity_headers(guard, token):
    result = python_client_call(guard.url, token, "whoami", extra_headers={
        "X-Auth-Subject": "mallory", "x-auth-client": "mallory-client"})
    assert result["is_error"] is False
    headers = result["structured"]
    if "result" in headers and isinstance(headers["result"], dict):
        headers = headers["result"]
    assert "authorization" not in headers
    assert headers["x-auth-subject"] == "e2e-service"
    assert headers["x-auth-client"] == "e2e-service"


def test_spoofed_identity_headers_are_removed_when_the_claim_is_absent(guard, idp, http):
    tok = idp.mint(guard.url, client_id=None, sub="alice")
    session = open_session(http, guard.url, tok)
    r = call(http, guard.url, tok, session, "tools/call", {"name": "whoami", "arguments": {}},
             extra={"X-Auth-Client": "mallory", "X-Auth-Subject": "mallory"})
    assert r.status_code == 200
    headers = parse_rpc_response(r)["result"]["structuredContent"]
    headers = headers.get("result", headers)
    assert headers["x-auth-subject"] == "alice"
    assert "x-auth-client" not in headers
    assert "authorization" not in headers


# ---------------------------------------------------------------- Origin and CORS


def test_foreign_origin_is_forbidden_even_with_a_valid_token(guard, token, http):
    for origin in ["http://evil.example", "http://127.0.0.1.evil.example", "null"]:
        r = http.post(guard.url, json=initialize_body(), headers={
            "Accept": ACCEPT, "Authorization": f"Bearer {token}", "Origin": origin})
        assert r.status_code == 403, origin
        assert "access-control-allow-origin" not in r.headers


def test_allowed_origin_gets_cors_headers_on_success_and_on_401(guard, token, http):
    r = http.post(guard.url, json=initialize_body(), headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {token}", "Origin": ALLOWED_ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = [h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")]
    assert "www-authenticate" in exposed and "mcp-session-id" in exposed

    r = http.post(guard.url, json=initialize_body(),
                  headers={"Accept": ACCEPT, "Origin": ALLOWED_ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()
    assert "origin" in r.headers["vary"].lower()


def test_own_origin_is_allowed(guard, token, http):
    r = http.post(guard.url, json=initialize_body(), headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {token}", "Origin": guard.base})
    assert r.status_code == 200


def test_preflight_from_allowed_origin_needs_no_token(guard, http):
    r = http.options(guard.url, headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id"})
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "mcp-session-id" in allowed
    assert "POST" in r.headers["access-control-allow-methods"]

    r = http.options(guard.url, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403


# ---------------------------------------------------------------- streaming and sessions


def test_session_id_round_trip_and_delete(guard_everything, idp, http):
    tok = idp.token(guard_everything.url)
    session = open_session(http, guard_everything.url, tok)
    assert re.fullmatch(r"[0-9a-f-]{36}", session)
    r = call(http, guard_everything.url, tok, session, "tools/call",
             {"name": "get-sum", "arguments": {"a": 2, "b": 3}})
    assert r.status_code == 200
    assert "5" in parse_rpc_response(r)["result"]["content"][0]["text"]
    bogus = call(http, guard_everything.url, tok, "no-such-session", "tools/list", {})
    assert bogus.status_code in (400, 404)
    r = http.delete(guard_everything.url, headers={
        "Authorization": f"Bearer {tok}", "Mcp-Session-Id": session,
        "MCP-Protocol-Version": PROTOCOL_VERSION})
    assert r.status_code == 200
    after = call(http, guard_everything.url, tok, session, "tools/list", {}, id=9)
    assert after.status_code in (400, 404)


def test_sse_get_stream_stays_open_and_delivers_events(guard_everything, idp, http):
    import json
    import threading

    tok = idp.token(guard_everything.url)
    session = open_session(http, guard_everything.url, tok)
    events, status = [], {}
    opened = threading.Event()

    def listen():
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {tok}",
                   "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
        with httpx.stream("GET", guard_everything.url, headers=headers, timeout=20) as r:
            status["code"] = r.status_code
            status["type"] = r.headers.get("content-type", "")
            opened.set()
            started = time.monotonic()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append((time.monotonic() - started, json.loads(line[5:])))
                    if len(events) >= 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10)
    assert status == {"code": 200, "type": status["type"]}
    assert status["type"].startswith("text/event-stream")
    r = call(http, guard_everything.url, tok, session, "tools/call",
             {"name": "toggle-simulated-logging", "arguments": {}})
    assert r.status_code == 200
    listener.join(20)
    assert len(events) == 2, events
    assert all(e[1]["method"] == "notifications/message" for e in events)
    # server-everything logs every 5 s: the second event came over the same open stream later
    assert events[1][0] - events[0][0] > 3
    call(http, guard_everything.url, tok, session, "tools/call",
         {"name": "toggle-simulated-logging", "arguments": {}}, id=3)


def test_post_answered_with_sse_is_streamed(guard_everything, idp, http):
    tok = idp.token(guard_everything.url)
    session = open_session(http, guard_everything.url, tok)
    r = call(http, guard_everything.url, tok, session, "tools/call",
             {"name": "trigger-long-running-operation", "arguments": {"duration": 2, "steps": 2},
              "_meta": {"progressToken": "p1"}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    methods = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert len(methods) == 3, r.text
    assert methods[0].count("notifications/progress") == 1
    assert methods[1].count("notifications/progress") == 1
    assert "Long running operation completed" in methods[2]


# ---------------------------------------------------------------- upstream trouble


def test_upstream_down_gives_a_clean_502(start_sidecar, idp, http):
    from harness import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = start_sidecar(dead, lambda base: jwt_policy("e2e-dead", f"{base}/mcp", idp.issuer))
    try:
        tok = idp.token(sidecar.url)
        r = http.post(sidecar.url, json=initialize_body(),
                      headers={"Accept": ACCEPT, "Authorization": f"Bearer {tok}"})
        assert r.status_code == 502
        assert "127.0.0.1" not in r.text  # no internals leaked
        # still challenged without a token: auth comes before the upstream
        assert http.post(sidecar.url, json=initialize_body()).status_code == 401
    finally:
        sidecar.stop()


def test_refused_post_with_late_body_keeps_the_connection_usable(guard):
    """Clients write headers and body in separate packets. A 401 sent before the body arrived
    must not leave a keep-alive connection that the server then drops: either the server reads
    the body and keeps serving the connection, or it says `Connection: close`."""
    import socket

    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{guard.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", guard.port), timeout=5) as s:
        s.sendall(head)
        time.sleep(0.2)
        first = s.recv(65536).decode()
        assert first.startswith("HTTP/1.1 401 ")
        try:
            s.sendall(body)
            time.sleep(0.1)
            s.sendall(head + body)
            second = s.recv(65536).decode()
        except (BrokenPipeError, ConnectionResetError):
            second = ""
    if "\r\nconnection: close\r\n" not in first.lower():
        assert second.startswith("HTTP/1.1 401 "), f"connection dropped after: {first!r}"
