"""Helpers for the OAuth proxy end-to-end tests: policies, key secrets, a deployment of one or
more sidecars in oauthProxy mode in front of the real oidc-provider, and the OAuth client side
of a flow done by hand (registration, PKCE, the browser leg, token requests)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import browser

# An MCP `initialize` request and the headers Streamable HTTP wants: the call a client makes
# through the sidecar with a token.
MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

UPSTREAM_CLIENT_ID = "warden-proxy"
UPSTREAM_CLIENT_SECRET = "warden-proxy-secret-0123456789"
CALLBACK = "http://127.0.0.1:9/callback"  # nobody listens: the browser stops before it


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class KeyMaterial:
    """The `mcp-warden-<policy>-keys` Secret's two files, shared by every replica."""

    def __init__(self, redis_password: str | None = None):
        self.redis_password = redis_password
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self.signing_pem = pem.decode()
        self.encryption = f"k1:{base64.b64encode(os.urandom(32)).decode()}\n"

    def write(self, secrets_dir: Path):
        keys = secrets_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        (keys / "signing.pem").write_text(self.signing_pem)
        (keys / "encryption.keys").write_text(self.encryption)
        upstream = secrets_dir / "upstream"
        upstream.mkdir(parents=True, exist_ok=True)
        (upstream / "client-secret").write_text(UPSTREAM_CLIENT_SECRET + "\n")
        if self.redis_password is not None:
            (secrets_dir / "redis-auth").mkdir(parents=True, exist_ok=True)
            (secrets_dir / "redis-auth" / "password").write_text(self.redis_password + "\n")


def proxy_policy(name: str, base: str, idp_issuer: str, redis_url: str | None = None,
                 redis_user: str | None = None, **proxy_overrides) -> dict:
    proxy = {
        "provider": "oidc",
        "issuer": idp_issuer,
        "clientId": UPSTREAM_CLIENT_ID,
        "clientSecretRef": {"name": "upstream", "key": "client-secret"},
        "scopes": ["openid", "offline_access", "email", "profile"],
        "extraAuthorizeParams": {"prompt": "consent"},
        "allowedRedirectUris": ["http://localhost", "http://127.0.0.1"],
        "signingKeySecretRef": {"name": "keys", "key": "signing.pem"},
        "encryptionKeySecretRef": {"name": "keys", "key": "encryption.keys"},
        "allowPrivateClientMetadata": False,
        "access": {"anyAuthenticatedUser": True},
        "scopeGrants": {"mcp:tools": {"anyAuthenticatedUser": True}},
    }
    proxy.update(proxy_overrides)
    spec = {
        "resource": {"url": f"{base}/mcp", "scopesSupported": ["mcp:tools"], "name": "E2E tools"},
        "mode": "oauthProxy",
        "oauthProxy": proxy,
    }
    if redis_url:
        spec["storage"] = {"redis": {"url": redis_url, "timeoutMillis": 500}}
        if redis_user:
            spec["storage"]["redis"].update({
                "username": redis_user,
                "passwordSecretRef": {"name": "redis-auth", "key": "password"}})
    return {"apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
            "metadata": {"name": name, "namespace": "e2e"}, "spec": spec}


class ProxyDeployment:
    """`replicas` sidecars in oauthProxy mode (one key Secret, optional shared Redis) in front
    of `upstream`, and a real oidc-provider whose one static confidential client has every
    replica's `/callback` as redirect URI (the provider has no dynamic registration)."""

    def __init__(self, start_sidecar, start_idp, work: Path, upstream: str, name: str,
                 replicas: int = 1, redis_url: str | None = None,
                 redis_auth: tuple[str, str] | None = None, accounts: dict[str, dict] | None = None,
                 spec_overrides: dict | None = None, sidecar_args: list[str] | None = None,
                 idp_options: dict | None = None, **proxy_overrides):
        from harness import free_port  # tests/e2e is on sys.path via conftest

        redis_user, redis_password = redis_auth or (None, None)
        self.keys = KeyMaterial(redis_password)
        self.idp_port = free_port()
        self.idp_issuer = f"http://127.0.0.1:{self.idp_port}"

        self.public: str | None = None

        def policy(base: str) -> dict:
            # Replicas share the external URL (as behind one Service): the first one's.
            port = int(base.rsplit(":", 1)[1])
            self.keys.write(work / f"sidecar-{port}" / "secrets")
            self.public = self.public or base
            doc = proxy_policy(name, self.public, self.idp_issuer, redis_url, redis_user,
                               **proxy_overrides)
            for key, value in (spec_overrides or {}).items():
                if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
                    doc["spec"][key].update(value)
                else:
                    doc["spec"][key] = value
            return doc

        self.sidecars = [start_sidecar(upstream, policy, extra_args=sidecar_args)
                         for _ in range(replicas)]
        client = {
            "client_id": UPSTREAM_CLIENT_ID,
            "client_secret": UPSTREAM_CLIENT_SECRET,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [f"{self.public}/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        self.idp = start_idp(clients=[client], port=self.idp_port, accounts=accounts,
                             **(idp_options or {}))

    @property
    def sidecar(self):
        return self.sidecars[0]


class Client:
    """A registered OAuth client of one sidecar deployment, driven step by step."""

    def __init__(self, base: str, redirect_uri: str = "http://127.0.0.1:9/callback",
                 auth_method: str = "none", name: str = "e2e client"):
        self.base = base
        self.redirect_uri = redirect_uri
        r = httpx.post(f"{base}/register", json={
            "client_name": name, "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
        }, timeout=10)
        assert r.status_code == 201, r.text
        self.registration = r.json()
        self.client_id = self.registration["client_id"]
        self.secret = self.registration.get("client_secret")

    def authorize_url(self, challenge: str, state: str = "st-1", base: str | None = None, **extra) -> str:
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                  "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
                  "scope": "mcp:tools", "resource": f"{self.base}/mcp", **extra}
        return f"{base or self.base}/authorize?{urlencode(params)}"

    def login(self, decision: str = "approve", bases: list[str] | None = None, user: str = "alice"):
        """The browser leg; returns (verifier, final redirect URL). With several `bases`, the
        steps on our origin alternate between them (any replica may serve any step)."""
        verifier, challenge = pkce()
        url = self.authorize_url(challenge)
        if not bases:
            final = browser.run(url, decision=decision, stop_at=self.redirect_uri, user=user)
            return verifier, final
        with httpx.Client(timeout=15, transport=_Alternating(bases)) as c:
            final = browser.run(url, decision=decision, stop_at=self.redirect_uri, user=user, client=c)
        return verifier, final

    def token(self, base: str | None = None, **form) -> httpx.Response:
        data = {"client_id": self.client_id, **form}
        auth = (self.client_id, self.secret) if self.secret else None
        if auth:
            data.pop("client_id")
        return httpx.post(f"{base or self.base}/token", data=data, auth=auth, timeout=15)

    def exchange(self, code: str, verifier: str, base: str | None = None) -> httpx.Response:
        return self.token(base, grant_type="authorization_code", code=code, code_verifier=verifier,
                          redirect_uri=self.redirect_uri, resource=f"{self.base}/mcp")

    def refresh(self, refresh_token: str, base: str | None = None) -> httpx.Response:
        return self.token(base, grant_type="refresh_token", refresh_token=refresh_token)

    def full_login(self, base: str | None = None) -> dict:
        verifier, final = self.login()
        code, params = browser.code_of(final)
        assert code, f"no code in {final}"
        r = self.exchange(code, verifier, base)
        assert r.status_code == 200, r.text
        return r.json()


def consent_page(c: Client, user_agent: httpx.Client, user: str = "alice", **extra) -> httpx.Response:
    """A new flow of `c` in the browser `user_agent`, signed in as `user` at the IdP, up to
    mcp-warden's consent page (which comes after the sign-in); returns that page."""
    _, challenge = pkce()
    return browser.until_page(c.authorize_url(challenge, **extra), browser.is_consent_page,
                              user=user, client=user_agent)


class _Alternating(httpx.HTTPTransport):
    """Sends each request for one of `bases`' origin to the next base in turn: a load balancer
    spreading the steps of one flow over the replicas."""

    def __init__(self, bases: list[str]):
        super().__init__()
        self.bases = [httpx.URL(b) for b in bases]
        self.ports = {b.port for b in self.bases}
        self.turn = 0
        self.served: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1" and request.url.port in self.ports:
            target = self.bases[self.turn % len(self.bases)]
            self.turn += 1
            self.served.append(target.port)
            request.url = request.url.copy_with(port=target.port)
        return super().handle_request(request)
