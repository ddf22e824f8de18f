"""An attack catalogue against the real sidecar binary: forged and odd tokens, transport tricks
sent as raw bytes, and OAuth abuse. Every vector states the status it must get, and none may
reach the app: the upstream is a recorder (recorder.py) whose request count must not change.

JOSE and claims vectors are signed with an attacker's key, or with the IdP's own key when the
point is what the sidecar does with an odd but authentic token. Nothing is sent to non-loopback
addresses: client ID metadata URLs naming metadata services are refused before any fetch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness import SigningKey, b64url, jwt_policy
from recorder import Recorder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))

import browser  # noqa: E402
from oauth_support import Client, ProxyDeployment, pkce  # noqa: E402

ATTACKER_EC = SigningKey("attacker-ec", "ES256")
ATTACKER_RSA = SigningKey("attacker-rsa", "RS256")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def jwt_sidecar(start_sidecar, idp, recorder):
    return start_sidecar(recorder.base, lambda base: jwt_policy("catalogue", f"{base}/mcp", idp.issuer))


@pytest.fixture(scope="module")
def proxy(start_sidecar, start_idp, work, recorder):
    return ProxyDeployment(start_sidecar, start_idp, work, recorder.base, "catalogue-proxy")


class Ctx:
    """What a vector needs: the IdP, the jwt-mode sidecar, and the resource URL."""

    def __init__(self, idp, sidecar):
        self.idp = idp
        self.sidecar = sidecar
        self.resource = sidecar.url
        self.real = idp.keys[0]  # ES256, signs the IdP's tokens
        self.real_rsa = idp.keys[1]

    def claims(self, **overrides) -> dict:
        return self.idp.claims(self.resource, **overrides)

    def valid(self) -> str:
        return self.idp.mint(self.resource)


def standard_alphabet(token: str) -> str:
    """The same token spelled in the standard base64 alphabet (`+` and `/`).

    A token without `-` or `_` reads the same in both alphabets, so one `+` is
    appended to its signature instead: the token must change to be an attack.
    """
    spelled = token.replace("-", "+").replace("_", "/")
    return spelled if spelled != token else token + "+"


@pytest.fixture(scope="module")
def ctx(idp, jwt_sidecar) -> Ctx:
    return Ctx(idp, jwt_sidecar)


# ---------------------------------------------------------------- token building


def segment(value) -> str:
    if isinstance(value, bytes):
        return b64url(value)
    return b64url(json.dumps(value).encode())


def signed(header, payload, key: SigningKey, alg: str | None = None) -> str:
    """A compact JWS with exactly `header` and `payload` (dicts, or raw bytes), signed with
    `key` under `alg` (default the key's own)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    algorithm = jwt.get_algorithm_by_name(alg or key.alg)
    signature = algorithm.sign(signing_input.encode(), key.private)
    return f"{signing_input}.{b64url(signature)}"


def hmac_signed(header: dict, payload: dict, secret: bytes, digest=hashlib.sha256) -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


def hs256(header: dict, payload: dict, secret: bytes) -> str:
    return hmac_signed(header, payload, secret)


def hdr(key: SigningKey, **extra) -> dict:
    return {"alg": key.alg, "typ": "at+jwt", "kid": key.kid, **extra}


def public_jwk(key: SigningKey) -> dict:
    return {k: v for k, v in key.private_jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


def raw_claims(text: str) -> bytes:
    return text.encode()


def dup_header(c: Ctx) -> bytes:
    """A header naming `alg` twice: `none` first, then the real algorithm."""
    return ('{"alg":"none","alg":"ES256","kid":"%s","typ":"at+jwt"}' % c.real.kid).encode()


def dup_claims(c: Ctx, first: dict, second: dict) -> bytes:
    """A claims object whose keys in `first` appear again with the values in `second`."""
    base = c.claims(**{k: None for k in first})
    body = json.dumps(base)[:-1]
    for k, v in [*first.items(), *second.items()]:
        body += f", {json.dumps(k)}: {json.dumps(v)}"
    return (body + "}").encode()


# Each: id -> (token builder, expected status). All refused.
TOKENS = {
    # JOSE header tricks
    "jku-attacker-key": (lambda c: signed(hdr(ATTACKER_EC, jku="http://127.0.0.1:9/jwks.json"), c.claims(), ATTACKER_EC), 401),
    "jku-real-kid": (lambda c: signed(hdr(ATTACKER_EC, kid=c.real.kid, jku="http://127.0.0.1:9/jwks.json"), c.claims(), ATTACKER_EC), 401),
    "x5u-attacker-key": (lambda c: signed(hdr(ATTACKER_RSA, x5u="http://127.0.0.1:9/cert.pem"), c.claims(), ATTACKER_RSA), 401),
    "x5c-bogus-chain": (lambda c: signed(hdr(ATTACKER_RSA, kid=c.real_rsa.kid, x5c=["MIIBogus"]), c.claims(), ATTACKER_RSA), 401),
    "embedded-jwk-real-kid": (lambda c: signed(hdr(ATTACKER_EC, kid=c.real.kid, jwk=public_jwk(ATTACKER_EC)), c.claims(), ATTACKER_EC), 401),
    "embedded-jwk-no-kid": (lambda c: signed({"alg": "ES256", "typ": "at+jwt", "jwk": public_jwk(ATTACKER_EC)}, c.claims(), ATTACKER_EC), 401),
    "kid-path-traversal-hs256-empty-secret": (lambda c: hs256({"alg": "HS256", "kid": "../../../../../../dev/null"}, c.claims(), b""), 401),
    "kid-path-traversal-es256": (lambda c: signed(hdr(ATTACKER_EC, kid="../../../../etc/passwd"), c.claims(), ATTACKER_EC), 401),
    "kid-sql-injection": (lambda c: signed(hdr(ATTACKER_EC, kid="x' UNION SELECT 'secret' --"), c.claims(), ATTACKER_EC), 401),
    "kid-sql-or-true": (lambda c: signed(hdr(ATTACKER_EC, kid="' OR '1'='1"), c.claims(), ATTACKER_EC), 401),
    "kid-huge": (lambda c: signed(hdr(ATTACKER_EC, kid="k" * 8000), c.claims(), ATTACKER_EC), 401),
    "kid-not-a-string": (lambda c: signed(hdr(c.real, kid={"$ne": None}), c.claims(), c.real), 401),
    "crit-unknown-extension-real-key": (lambda c: signed(hdr(c.real, crit=["x-policy"], **{"x-policy": "allow"}), c.claims(), c.real), 401),
    "crit-b64-false-real-key": (lambda c: signed(hdr(c.real, b64=False, crit=["b64"]), c.claims(), c.real), 401),
    "b64-false-without-crit-real-key": (lambda c: signed(hdr(c.real, b64=False), c.claims(), c.real), 401),
    "zip-def-real-key": (lambda c: signed(hdr(c.real, zip="DEF"), c.claims(), c.real), 401),
    "enc-header-real-key": (lambda c: signed(hdr(c.real, enc="A256GCM"), c.claims(), c.real), 401),
    "jwe-five-parts": (lambda c: ".".join([segment({"alg": "dir", "enc": "A256GCM", "kid": c.real.kid}), "", b64url(b"iv" * 6), b64url(b"ciphertext"), b64url(b"tag" * 5)]), 401),
    "nested-jwt-cty": (lambda c: signed(hdr(c.real, cty="JWT"), c.valid().encode(), c.real), 401),
    "duplicate-header-alg": (lambda c: signed(dup_header(c), c.claims(), c.real), 401),
    "alg-none": (lambda c: f"{segment(hdr(c.real, alg='none'))}.{segment(c.claims())}.", 401),
    "alg-None": (lambda c: f"{segment(hdr(c.real, alg='None'))}.{segment(c.claims())}.", 401),
    "alg-NONE": (lambda c: f"{segment(hdr(c.real, alg='NONE'))}.{segment(c.claims())}.", 401),
    "alg-nOnE-with-signature": (lambda c: f"{segment(hdr(c.real, alg='nOnE'))}.{segment(c.claims())}.{b64url(b'sig')}", 401),
    "alg-lowercase-es256-real-key": (lambda c: signed(hdr(c.real, alg="es256"), c.claims(), c.real, "ES256"), 401),
    "alg-trailing-space-real-key": (lambda c: signed(hdr(c.real, alg="ES256 "), c.claims(), c.real, "ES256"), 401),
    "alg-missing-real-key": (lambda c: signed({"typ": "at+jwt", "kid": c.real.kid}, c.claims(), c.real, "ES256"), 401),
    "hs256-public-key-pem-as-secret": (lambda c: hs256(hdr(c.real_rsa, alg="HS256"), c.claims(), c.real_rsa.public_pem()), 401),
    "hs256-public-jwk-as-secret": (lambda c: hs256(hdr(c.real, alg="HS256"), c.claims(), json.dumps(public_jwk(c.real)).encode()), 401),
    "hs512-public-key-pem-as-secret": (lambda c: hmac_signed(hdr(c.real_rsa, alg="HS512"), c.claims(), c.real_rsa.public_pem(), hashlib.sha512), 401),
    "rs256-with-ec-kid": (lambda c: signed(hdr(ATTACKER_RSA, kid=c.real.kid), c.claims(), ATTACKER_RSA), 401),
    "ps256-attacker-real-kid": (lambda c: signed(hdr(ATTACKER_RSA, alg="PS256", kid=c.real_rsa.kid), c.claims(), ATTACKER_RSA, "PS256"), 401),
    "es256-signature-stripped": (lambda c: c.valid().rsplit(".", 1)[0] + ".", 401),
    "two-segments": (lambda c: c.valid().rsplit(".", 1)[0], 401),
    "four-segments": (lambda c: c.valid() + ".e30", 401),
    "padded-segments": (lambda c: ".".join(p + "==" for p in c.valid().split(".")), 401),
    "standard-base64-alphabet": (lambda c: standard_alphabet(c.valid()), 401),
    "header-not-json": (lambda c: f"{b64url(b'not json')}.{segment(c.claims())}.{b64url(b'sig')}", 401),
    "header-json-array": (lambda c: f"{segment([hdr(c.real)])}.{segment(c.claims())}.{b64url(b'sig')}", 401),
    "signature-from-another-token": (lambda c: c.idp.mint(c.resource, sub="admin").rsplit(".", 1)[0] + "." + c.valid().rsplit(".", 1)[1], 401),
    # claims edge cases (authentic signatures)
    "exp-beyond-u64": (lambda c: signed(hdr(c.real), c.claims(exp=10**30), c.real), 401),
    "exp-2-pow-64": (lambda c: signed(hdr(c.real), c.claims(exp=2**64), c.real), 401),
    "exp-negative": (lambda c: signed(hdr(c.real), c.claims(exp=-1), c.real), 401),
    "exp-zero": (lambda c: signed(hdr(c.real), c.claims(exp=0), c.real), 401),
    "exp-string-number": (lambda c: signed(hdr(c.real), c.claims(exp=str(int(time.time()) + 300)), c.real), 401),
    "exp-float": (lambda c: signed(hdr(c.real), c.claims(exp=time.time() + 300.5), c.real), 401),
    "exp-bool": (lambda c: signed(hdr(c.real), c.claims(exp=True), c.real), 401),
    "exp-missing": (lambda c: signed(hdr(c.real), c.claims(exp=None), c.real), 401),
    "exp-duplicate-past-last": (lambda c: signed(hdr(c.real), dup_claims(c, {"exp": int(time.time()) + 300}, {"exp": 1}), c.real), 401),
    "nbf-future": (lambda c: signed(hdr(c.real), c.claims(nbf=int(time.time()) + 3600), c.real), 401),
    "nbf-string": (lambda c: signed(hdr(c.real), c.claims(nbf="0"), c.real), 401),
    "iss-missing": (lambda c: signed(hdr(c.real), c.claims(iss=None), c.real), 401),
    "iss-trailing-slash": (lambda c: signed(hdr(c.real), c.claims(iss=c.idp.issuer + "/"), c.real), 401),
    "iss-array": (lambda c: signed(hdr(c.real), c.claims(iss=[c.idp.issuer]), c.real), 401),
    "iss-duplicate-wrong-last": (lambda c: signed(hdr(c.real), dup_claims(c, {"iss": c.idp.issuer}, {"iss": "https://evil.example"}), c.real), 401),
    "aud-other": (lambda c: signed(hdr(c.real), c.claims(aud="https://other.example/mcp"), c.real), 401),
    "aud-empty-list": (lambda c: signed(hdr(c.real), c.claims(aud=[]), c.real), 401),
    "aud-list-of-others": (lambda c: signed(hdr(c.real), c.claims(aud=["https://a.example", "https://b.example"]), c.real), 401),
    "aud-nested-list": (lambda c: signed(hdr(c.real), c.claims(aud=[[c.resource]]), c.real), 401),
    "aud-object": (lambda c: signed(hdr(c.real), c.claims(aud={"aud": c.resource}), c.real), 401),
    "aud-number": (lambda c: signed(hdr(c.real), c.claims(aud=1), c.real), 401),
    "aud-longer-path": (lambda c: signed(hdr(c.real), c.claims(aud=c.resource + "/extra"), c.real), 401),
    "aud-prefix": (lambda c: signed(hdr(c.real), c.claims(aud=c.resource[:-1]), c.real), 401),
    "aud-missing": (lambda c: signed(hdr(c.real), c.claims(aud=None), c.real), 401),
    "aud-duplicate-wrong-last": (lambda c: signed(hdr(c.real), dup_claims(c, {"aud": c.resource}, {"aud": "https://other.example"}), c.real), 401),
    "claims-not-an-object": (lambda c: signed(hdr(c.real), raw_claims("[1,2,3]"), c.real), 401),
    "claims-trailing-garbage": (lambda c: signed(hdr(c.real), json.dumps(c.claims()).encode() + b"xx", c.real), 401),
    "scope-missing": (lambda c: signed(hdr(c.real), c.claims(scope=None), c.real), 403),
    "scope-other": (lambda c: signed(hdr(c.real), c.claims(scope="mcp:read"), c.real), 403),
    "scope-superstring": (lambda c: signed(hdr(c.real), c.claims(scope="mcp:toolsX"), c.real), 403),
    "expired-attacker-key": (lambda c: signed(hdr(ATTACKER_EC), c.claims(exp=1), ATTACKER_EC), 401),
}


@pytest.mark.parametrize("name", list(TOKENS))
def test_token_vector(name, ctx, recorder):
    build, expected = TOKENS[name]
    token = build(ctx)
    before = recorder.count()
    r = httpx.post(ctx.resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == expected, f"{name}: {r.status_code} {r.text}"
    assert recorder.count() == before, f"{name} reached the app"


def test_control_a_valid_token_reaches_the_app(ctx, recorder):
    """The catalogue's setup lets a real request through (so its refusals mean something)."""
    before = recorder.count()
    for scheme in ["Bearer", "bearer", "BEARER"]:
        r = httpx.get(ctx.resource, headers={"Authorization": f"{scheme} {ctx.valid()}"}, timeout=10)
        assert r.status_code == 200, r.text
    assert recorder.count() == before + 3


# ---------------------------------------------------------------- transport (raw bytes)


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Sends `data` and reads until the sidecar closes the connection or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def req(c: Ctx, *headers: str, method: str = "GET", target: str = "/mcp", body: bytes = b"",
        version: str = "HTTP/1.1", host: bool = True) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append(f"Host: 127.0.0.1:{c.sidecar.port}")
    lines += [*headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def smuggled(c: Ctx) -> bytes:
    """A request with no token, for the body of a smuggling vector."""
    return f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{c.sidecar.port}\r\n\r\n".encode()


def form_body_token(c: Ctx) -> bytes:
    """A POST whose only token is an `access_token` form field (RFC 6750 2.2, refused)."""
    body = f"access_token={c.valid()}".encode()
    return req(c, "Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}", method="POST", body=body)


# Each: id -> (raw request builder, accepted statuses). No token or a refused one: never upstream.
TRANSPORT = {
    "token-over-16-kib": (lambda c: req(c, f"Authorization: Bearer {'a' * 20000}.{'b' * 100}.{'c' * 100}"), {401}),
    "token-over-header-limit": (lambda c: req(c, f"Authorization: Bearer {'a' * 40000}"), {431}),
    "header-bytes-over-limit": (lambda c: req(c, f"Authorization: Bearer {c.valid()}", *[f"X-Pad-{i}: {'p' * 400}" for i in range(100)]), {431}),
    "header-count-over-limit": (lambda c: req(c, f"Authorization: Bearer {c.valid()}", *[f"X-H{i}: v" for i in range(150)]), {431}),
    "request-target-over-limit": (lambda c: req(c, f"Authorization: Bearer {c.valid()}", target="/mcp?" + "q" * 40000), {414, 431}),
    "two-authorization-headers": (lambda c: req(c, f"Authorization: Bearer {c.valid()}", f"Authorization: Bearer {c.valid()}"), {400}),
    "authorization-case-variant-twice": (lambda c: req(c, f"Authorization: Bearer {c.valid()}", "authorization: Basic dTpw"), {400}),
    "bearer-tab-separator": (lambda c: req(c, f"Authorization: Bearer\t{c.valid()}"), {401}),
    "bearer-no-separator": (lambda c: req(c, f"Authorization: Bearer{c.valid()}"), {401}),
    "bearer-without-token": (lambda c: req(c, "Authorization: Bearer"), {401}),
    "bearer-token-with-extra-word": (lambda c: req(c, f"Authorization: Bearer {c.valid()} extra"), {401}),
    "bearer-comma-token": (lambda c: req(c, f"Authorization: Bearer ,{c.valid()}"), {401}),
    "basic-scheme": (lambda c: req(c, "Authorization: Basic " + base64.b64encode(b"admin:admin").decode()), {401}),
    "non-ascii-authorization": (lambda c: req(c, "Authorization: Bearer \u00e9t\u00e9").replace(b"\xc3\xa9", b"\xe9"), {400}),
    "token-in-query-only": (lambda c: req(c, target=f"/mcp?access_token={c.valid()}"), {401}),
    "token-in-cookie-only": (lambda c: req(c, f"Cookie: access_token={c.valid()}"), {401}),
    "token-in-form-body-only": (lambda c: form_body_token(c), {401}),
    "cl-and-te-chunked-smuggling": (lambda c: req(c, "Content-Length: 4", "Transfer-Encoding: chunked", method="POST", body=b"0\r\n\r\n" + smuggled(c)), {400, 401}),
    "te-cl-valid-token-smuggling": (lambda c: req(c, f"Authorization: Bearer {c.valid()}-broken", "Transfer-Encoding: chunked", "Content-Length: 100", method="POST", body=b"5\r\nhello\r\n0\r\n\r\n" + smuggled(c)), {400, 401}),
    "te-xchunked": (lambda c: req(c, "Transfer-Encoding: xchunked", method="POST", body=b"0\r\n\r\n"), {400, 401, 501}),
    "te-chunked-identity": (lambda c: req(c, "Transfer-Encoding: chunked, identity", method="POST", body=b"0\r\n\r\n"), {400, 401, 501}),
    "te-space-before-colon": (lambda c: req(c, "Transfer-Encoding : chunked", "Content-Length: 5", method="POST", body=b"0\r\n\r\n"), {400}),
    "two-content-lengths": (lambda c: req(c, "Content-Length: 5", "Content-Length: 6", method="POST", body=b"hello!"), {400}),
    "content-length-plus-sign": (lambda c: req(c, "Content-Length: +5", method="POST", body=b"hello"), {400}),
    "obs-fold-authorization": (lambda c: req(c, "Authorization: Bearer", f" {c.valid()}"), {400}),
    "obs-fold-other-header": (lambda c: req(c, "X-Long: one", "\ttwo", f"Authorization: Bearer {c.valid()}x"), {400, 401}),
    "nul-in-header-value": (lambda c: req(c, "X-Nul: a\x00b"), {400}),
    "space-in-header-name": (lambda c: req(c, "X Bad: v"), {400}),
    "absolute-form-other-host": (lambda c: req(c, target="http://evil.example/mcp"), {400, 401}),
    "http10-without-host": (lambda c: req(c, version="HTTP/1.0", host=False), {401}),
    "expect-100-continue-no-token": (lambda c: req(c, "Expect: 100-continue", "Content-Length: 100000", method="POST"), {401}),
    "h2c-upgrade-no-token": (lambda c: req(c, "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), {401}),
}


@pytest.mark.parametrize("name", list(TRANSPORT))
def test_transport_vector(name, ctx, recorder):
    build, expected = TRANSPORT[name]
    data = build(ctx)
    before = recorder.count()
    response = exchange(ctx.sidecar.port, data)
    assert status_of(response) in expected, f"{name}: {response[:300]!r}"
    # A smuggled second request would be answered after the first: nothing else came back.
    assert response.count(b"HTTP/1.1 2") == 0, f"{name}: {response[:600]!r}"
    assert recorder.count() == before, f"{name} reached the app"


# ---------------------------------------------------------------- OAuth


REGISTERED = "http://127.0.0.1:9/callback"

REDIRECTS = {
    "redirect-other-host": "https://evil.example/callback",
    "redirect-userinfo-host-confusion": "http://127.0.0.1:9@evil.example/callback",
    "redirect-subdomain-confusion": "http://127.0.0.1.evil.example:9/callback",
    "redirect-dot-segments": "http://127.0.0.1:9/callback/../../evil",
    "redirect-encoded-dot-segments": "http://127.0.0.1:9/callback/%2e%2e/evil",
    "redirect-scheme-relative": "//evil.example/callback",
    "redirect-backslash": "http://127.0.0.1:9\\@evil.example/callback",
    "redirect-other-path": "http://127.0.0.1:9/other",
    "redirect-javascript": "javascript:alert(document.cookie)",
    "redirect-data-uri": "data:text/html,<script>alert(1)</script>",
    "redirect-fragment": "http://127.0.0.1:9/callback#@evil.example",
    "redirect-https-downgrade-host": "http://evil.example/callback",
}


@pytest.fixture(scope="module")
def oauth_client(proxy):
    return Client(proxy.sidecar.base, redirect_uri=REGISTERED)


@pytest.mark.parametrize("name", list(REDIRECTS))
def test_open_redirect_vector(name, proxy, oauth_client, recorder):
    before = recorder.count()
    _, challenge = pkce()
    r = httpx.get(oauth_client.authorize_url(challenge, redirect_uri=REDIRECTS[name]), timeout=10)
    assert r.status_code == 400, f"{name}: {r.status_code} {r.headers.get('location')}"
    assert "location" not in r.headers, "never redirect to an unregistered URI"
    assert recorder.count() == before


def authorize_error(r: httpx.Response) -> str | None:
    """The OAuth error of an authorization answer: in the redirect to the registered URI, or
    in a 400 page; None when the request went on (to the IdP)."""
    if r.status_code in (302, 303) and r.headers["location"].startswith(REGISTERED):
        return httpx.URL(r.headers["location"]).params.get("error")
    if r.status_code == 400:
        return "page"
    return None


PKCE = {
    "pkce-plain": {"code_challenge_method": "plain"},
    "pkce-missing-challenge": {"code_challenge": ""},
    "pkce-unknown-method": {"code_challenge_method": "S512"},
    "pkce-short-challenge": {"code_challenge": "abc"},
    "response-type-token": {"response_type": "token"},
    "response-type-code-token": {"response_type": "code token"},
}


@pytest.mark.parametrize("name", list(PKCE))
def test_authorization_request_vector(name, proxy, oauth_client, recorder):
    before = recorder.count()
    _, challenge = pkce()
    r = httpx.get(oauth_client.authorize_url(challenge, **PKCE[name]), timeout=10)
    assert authorize_error(r) in {"invalid_request", "unsupported_response_type", "page"}, (
        f"{name}: {r.status_code} {r.headers.get('location')}")
    assert recorder.count() == before


@pytest.fixture(scope="module")
def loopback_443():
    """A listener on 127.0.0.1:443 (we may be root) counting connections: a metadata fetch of
    a loopback client ID would arrive here."""
    try:
        server = socket.create_server(("127.0.0.1", 443))
    except OSError:
        yield None
        return
    hits = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            hits.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield hits
    server.close()


CIMD = {
    "cimd-aws-metadata": "https://169.254.169.254/latest/meta-data/iam",
    "cimd-aws-metadata-ipv6": "https://[fd00:ec2::254]/latest/meta-data",
    "cimd-ipv4-mapped-metadata": "https://[::ffff:169.254.169.254]/latest",
    "cimd-loopback": "https://127.0.0.1/client.json",
    "cimd-loopback-decimal": "https://2130706433/client.json",
    "cimd-loopback-hex": "https://0x7f.1/client.json",
    "cimd-loopback-ipv6": "https://[::1]/client.json",
    "cimd-localhost-name": "https://localhost/client.json",
    "cimd-private-10": "https://10.0.0.1/client.json",
    "cimd-unspecified": "https://0.0.0.0/client.json",
    "cimd-plain-http": "http://client.example/client.json",
    "cimd-userinfo": "https://user@client.example/client.json",
}


@pytest.mark.parametrize("name", list(CIMD))
def test_client_metadata_vector(name, proxy, recorder, loopback_443):
    before = recorder.count()
    _, challenge = pkce()
    params = {"response_type": "code", "client_id": CIMD[name], "redirect_uri": REGISTERED,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
              "scope": "mcp:tools", "resource": f"{proxy.sidecar.base}/mcp"}
    r = httpx.get(f"{proxy.sidecar.base}/authorize?{urlencode(params)}", timeout=15)
    assert r.status_code == 401, f"{name}: {r.status_code} {r.text[:300]}"
    assert r.json()["error"] == "invalid_client"
    assert "location" not in r.headers
    if loopback_443 is not None:
        assert not loopback_443, f"{name}: the sidecar connected to the metadata URL"
    assert recorder.count() == before


def test_code_injection_across_clients(proxy, recorder):
    base = proxy.sidecar.base
    owner, other = Client(base), Client(base, name="attacker client")
    verifier, final = owner.login()
    code, _ = browser.code_of(final)
    before = recorder.count()
    stolen = other.exchange(code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # With the right client but the wrong verifier, the code is refused too.
    wrong = owner.exchange(code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert recorder.count() == before


def test_callback_with_forged_state(proxy, recorder):
    before = recorder.count()
    r = httpx.get(f"{proxy.sidecar.base}/callback",
                  params={"code": "stolen-code", "state": uuid.uuid4().hex}, timeout=10)
    assert r.status_code in (400, 403), r.text
    assert "location" not in r.headers
    assert recorder.count() == before


def test_consent_replay(proxy, oauth_client, recorder):
    before = recorder.count()
    with httpx.Client(timeout=15) as ua:
        page = browser.until_page(oauth_client.authorize_url(pkce()[1]), browser.is_consent_page,
                                  client=ua)
        form = browser.forms(page.text)[0]
        data = browser.fill(form, "approve", "alice")
        first = ua.post(f"{proxy.sidecar.base}/consent", data=data)
        assert first.status_code in (302, 303), first.text
        replay = ua.post(f"{proxy.sidecar.base}/consent", data=data)
        assert replay.status_code in (400, 403), f"replayed consent: {replay.status_code}"
        # Without the browser's cookies (another browser) it is refused as well.
        cross = httpx.post(f"{proxy.sidecar.base}/consent", data=data, timeout=10)
        assert cross.status_code in (400, 403)
    assert recorder.count() == before


def test_catalogue_size():
    """The issue asks for at least 60 vectors."""
    assert len(TOKENS) + len(TRANSPORT) + len(REDIRECTS) + len(PKCE) + len(CIMD) + 3 >= 60
