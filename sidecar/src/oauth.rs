//! OAuth proxy mode: the sidecar as the OAuth 2.1 authorization server MCP clients see, in front
//! of an upstream identity provider that has no dynamic client registration.
//!
//! Clients register (`/register`, or a client ID metadata document) and send the user to
//! `/authorize`, which forwards them to the upstream provider with our own client id and PKCE
//! pair. The provider returns to `/callback`, where `access` decides whether the signed-in user
//! may sign in and `scopeGrants` which scopes they get; the user approves the client on our
//! consent page, and we keep the provider's tokens encrypted and give the client a code for our
//! own tokens: short-lived ES256 access tokens with `aud` = the resource, and rotating refresh
//! tokens.
//! Every piece of flow state lives in the [`Store`], so any replica can serve any step.

pub mod access;
mod authorize;
mod cimd;
mod clients;
mod consent;
pub mod crypto;
mod errors;
mod facts;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod page;
mod presets;
pub mod provider;
pub mod records;
pub mod redirect;
mod refresh;
pub mod revocation;
mod token;
pub mod upstream_token;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::request::Parts;
use mcp_warden_policy::{
    OAuthProxySpec, PolicyDocument, RateLimit, RateLimitKey, RateLimitedEndpoint, RedisSpec,
    SecretError, ValidatedResource,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{Store, StoreError};
pub use cimd::{
    check_document as check_client_metadata_document, check_url as check_client_metadata_url,
    is_public as is_public_address,
};
pub use clients::{Registration, check_registration};
pub use errors::Reject;
use provider::{Upstream, UpstreamError};

/// Largest request body the OAuth endpoints read.
pub const MAX_BODY: usize = 64 * 1024;
/// Lifetime of a registered client after its last authorization request.
pub const CLIENT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a registration never used in an authorization request.
pub const UNUSED_CLIENT_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest `state` accepted at `/authorize`, in bytes (it is stored with the flow and echoed).
pub const MAX_STATE: usize = 1024;
/// Longest `scope` parameter accepted at `/authorize`, in bytes.
pub const MAX_SCOPE_PARAM: usize = 1024;
/// How long a failed client metadata document fetch is remembered (not retried).
pub const FAILED_METADATA_TTL: Duration = Duration::from_secs(60);
/// Lifetime of an authorization flow (consent + upstream login).
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Lifetime of an authorization code.
pub const CODE_TTL: Duration = Duration::from_secs(300);
/// How long after a rotation a duplicate of the same refresh request still gets the new token.
pub const REFRESH_GRACE_SECONDS: u64 = 10;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The policy is not an oauthProxy policy or misses something.
    #[error("oauth proxy configuration: {0}")]
    Config(String),
    /// A key file is unusable.
    #[error("oauth proxy keys: {0}")]
    Keys(String),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The state store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The authorization-server facade of one policy.
pub struct OAuthProxy {
    issuer: String,
    resource: String,
    server_name: String,
    scopes_supported: Vec<String>,
    spec: OAuthProxySpec,
    namespace: String,
    policy: String,
    store: Arc<dyn Store>,
    signing: keys::SigningKeys,
    enc: crypto::EncryptionKeys,
    metrics: metrics::OAuthMetrics,
    http: reqwest::Client,
    client_secret: Option<String>,
    upstream: tokio::sync::OnceCell<Upstream>,
    cookies: page::Cookies,
    access: access::AccessPolicy,
    needs: access::Needs,
    revocations: Arc<revocation::Revocations>,
    _revocation_sync: revocation::SyncTask,
    upstream_cache: upstream_token::UpstreamTokenCache,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl OAuthProxy {
    /// Builds the proxy for an oauthProxy policy, with the state store the policy names
    /// (`storage.redis`, in-memory otherwise), registering its metric families in `registry`.
    pub async fn new(
        doc: &PolicyDocument,
        resource: &ValidatedResource,
        secrets_dir: &Path,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, OAuthError> {
        let shared = Shared::register(registry);
        Self::build(doc, resource, secrets_dir, &shared).await
    }

    /// Builds the proxy with metric families and store kept in `shared` across policy reloads.
    pub async fn build(
        doc: &PolicyDocument,
        resource: &ValidatedResource,
        secrets_dir: &Path,
        shared: &Shared,
    ) -> Result<Self, OAuthError> {
        let redis = doc.spec.storage.as_ref().and_then(|s| s.redis.as_ref());
        let store = shared.store(redis, secrets_dir).await?;
        Self::assemble(
            doc,
            resource,
            secrets_dir,
            store,
            shared.metrics.clone(),
            &shared.local_keys,
            shared.revocations.clone(),
        )
    }

    /// Builds the proxy on a given store.
    pub fn with_store(
        doc: &PolicyDocument,
        resource: &ValidatedResource,
        secrets_dir: &Path,
        store: Arc<dyn Store>,
        metrics: metrics::OAuthMetrics,
    ) -> Result<Self, OAuthError> {
        let revocations = Arc::new(revocation::Revocations::new(metrics.clone()));
        Self::assemble(
            doc,
            resource,
            secrets_dir,
            store,
            metrics,
            &LocalKeys::default(),
            revocations,
        )
    }

    fn assemble(
        doc: &PolicyDocument,
        resource: &ValidatedResource,
        secrets_dir: &Path,
        store: Arc<dyn Store>,
        metrics: metrics::OAuthMetrics,
        local: &LocalKeys,
        revocations: Arc<revocation::Revocations>,
    ) -> Result<Self, OAuthError> {
        let spec = doc.spec.oauth_proxy.clone().ok_or_else(|| {
            OAuthError::Config("spec.oauthProxy is required in oauthProxy mode".into())
        })?;
        let signing = match &spec.signing_key_secret_ref {
            Some(r) => keys::SigningKeys::load(r, secrets_dir)?,
            None => {
                tracing::warn!(
                    "no signingKeySecretRef: generated an in-memory signing key; tokens stop verifying after a restart and differ between replicas"
                );
                keys::SigningKeys::from_pem(local.signing.get_or_init(keys::generate_pem))?
            }
        };
        let enc = match &spec.encryption_key_secret_ref {
            Some(r) => crypto::EncryptionKeys::load(r, secrets_dir)?,
            None => {
                tracing::warn!(
                    "no encryptionKeySecretRef: generated an in-memory encryption key; stored sessions are lost on restart"
                );
                crypto::EncryptionKeys::parse(local.encryption.get_or_init(crypto::generate_text))?
            }
        };
        let client_secret = spec
            .client_secret_ref
            .as_ref()
            .map(|r| r.read(secrets_dir))
            .transpose()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| OAuthError::Config(format!("http client: {e}")))?;
        let upstream = tokio::sync::OnceCell::new();
        if let Some(preset) = Upstream::preset(&spec, client_secret.clone()) {
            let _ = upstream.set(preset);
        }
        let issuer = resource.origin.clone();
        let policy = doc.metadata.name.clone();
        for reason in [
            metrics::DenyReason::NotAllowed,
            metrics::DenyReason::OtherBrowser,
        ] {
            // Zero samples, so alerts on the rate see the series before the first refusal.
            let _ = metrics.access_denied.get_or_create(&metrics::DenyLabels {
                policy: policy.clone(),
                reason,
            });
        }
        let namespace = doc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let log = crate::store::key(&namespace, &policy, "revoked", "log");
        let revocation_sync = revocations.follow(store.clone(), log);
        Ok(OAuthProxy {
            upstream_cache: upstream_token::UpstreamTokenCache::default(),
            revocations,
            _revocation_sync: revocation_sync,
            access: access::AccessPolicy::new(&spec, &doc.spec.resource.scopes_supported),
            needs: access::Needs::of(&spec),
            cookies: page::Cookies::new(issuer.starts_with("https://")),
            issuer,
            resource: resource.url.clone(),
            server_name: doc
                .spec
                .resource
                .name
                .clone()
                .unwrap_or_else(|| resource.url.clone()),
            scopes_supported: doc.spec.resource.scopes_supported.clone(),
            namespace,
            policy,
            spec,
            store,
            signing,
            enc,
            metrics,
            http,
            client_secret,
            upstream,
        })
    }

    /// The issuer: the MCP origin (`scheme://host[:port]`), as in the metadata and tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Public keys of the tokens this proxy issues (also served at `/jwks`).
    pub fn verification_keys(&self) -> jsonwebtoken::jwk::JwkSet {
        self.signing.jwks()
    }

    /// Revoked sessions, for the request path (shared by every reload).
    pub fn revocations(&self) -> Arc<revocation::Revocations> {
        self.revocations.clone()
    }

    /// All authorization-server endpoints, with the state applied and bodies bounded.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(server_metadata),
            )
            .route(
                "/.well-known/oauth-authorization-server/{*path}",
                get(server_metadata),
            )
            .route("/.well-known/openid-configuration", get(server_metadata))
            .route(
                "/.well-known/openid-configuration/{*path}",
                get(server_metadata),
            )
            .route("/jwks", get(jwks))
            .route("/register", post(clients::register))
            .route("/authorize", get(authorize::authorize))
            .route("/consent", post(consent::consent))
            .route("/callback", get(consent::callback))
            .route("/token", post(token::token))
            .route("/revoke", post(token::revoke))
            .layer(axum::middleware::from_fn(cors))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        crate::store::key(&self.namespace, &self.policy, kind, id)
    }

    async fn put_json<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records serialise");
        self.store.put(&self.key(kind, id), &bytes, ttl).await
    }

    /// Like `put_json`, for records that start something new ([`Store::put_new`]).
    async fn put_new_json<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records serialise");
        self.store.put_new(&self.key(kind, id), &bytes, ttl).await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        decode(self.store.get(&self.key(kind, id)).await?)
    }

    async fn take_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        decode(self.store.take(&self.key(kind, id)).await?)
    }

    /// The rate limit of `endpoint` (`oauthProxy.rateLimits`, else the default).
    fn rate_limit(&self, endpoint: RateLimitedEndpoint) -> RateLimit {
        self.spec
            .rate_limits
            .as_ref()
            .and_then(|l| l.get(endpoint))
            .cloned()
            .unwrap_or_else(|| endpoint.default_limit())
    }

    /// Counts a request to `endpoint` when its limit is keyed by what `who` is (a call site
    /// offers the address before the client is known and the client id after), in a fixed
    /// window starting with the first request; over the limit, 429 with `Retry-After`.
    async fn limit(&self, endpoint: RateLimitedEndpoint, who: RateKey<'_>) -> Result<(), Reject> {
        let Some(counter) = self.rate_counter(endpoint, who) else {
            return Ok(());
        };
        let count = self.store.incr(&counter.key, counter.window).await?;
        counter.check(count)
    }

    /// The counter of `endpoint`'s rate limit for `who`; `None` when the limit is keyed by
    /// something else.
    fn rate_counter(&self, endpoint: RateLimitedEndpoint, who: RateKey<'_>) -> Option<RateCounter> {
        let limit = self.rate_limit(endpoint);
        let (kind, value) = match who {
            RateKey::Address(addr) => (RateLimitKey::ClientAddress, addr.0.as_str()),
            RateKey::Client(id) => (RateLimitKey::ClientId, id),
        };
        if limit.key != kind {
            return None;
        }
        let id = format!(
            "{}:{}",
            endpoint.name(),
            crypto::sha256_b64(value.as_bytes())
        );
        Some(RateCounter {
            key: self.key("rate", &id),
            window: Duration::from_secs(u64::from(limit.window_seconds.max(1))),
            requests: limit.requests,
        })
    }

    /// The upstream provider, discovered on first use for `provider: oidc` (retried on failure).
    async fn upstream(&self) -> Result<&Upstream, UpstreamError> {
        self.upstream
            .get_or_try_init(|| async {
                let issuer = self
                    .spec
                    .issuer
                    .clone()
                    .ok_or_else(|| UpstreamError::Malformed("no issuer".into()))?;
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let call = provider::Prepared {
                    method: "GET",
                    url,
                    headers: vec![("accept", "application/json".into())],
                    form: Vec::new(),
                };
                let (status, body) = provider::send(&self.http, &call).await?;
                if status != 200 {
                    return Err(UpstreamError::Malformed(format!(
                        "discovery status {status}"
                    )));
                }
                let doc = serde_json::from_slice(&body)
                    .map_err(|_| UpstreamError::Malformed("discovery is not JSON".into()))?;
                Upstream::from_discovery(&self.spec, &issuer, &doc, self.client_secret.clone())
            })
            .await
    }

    fn callback_url(&self) -> String {
        format!("{}/callback", self.issuer)
    }

    /// Whether `requested` names our resource (tolerating one trailing slash).
    fn is_our_resource(&self, requested: &str) -> bool {
        let a = requested.strip_suffix('/').unwrap_or(requested);
        let b = self.resource.strip_suffix('/').unwrap_or(&self.resource);
        a == b
    }
}

fn decode<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("record: {e}")))
        })
        .transpose()
}

async fn server_metadata(
    axum::extract::State(proxy): axum::extract::State<Arc<OAuthProxy>>,
) -> impl axum::response::IntoResponse {
    Json(metadata::render(&proxy.issuer, &proxy.scopes_supported))
}

async fn jwks(
    axum::extract::State(proxy): axum::extract::State<Arc<OAuthProxy>>,
) -> impl axum::response::IntoResponse {
    (
        [(http::header::CACHE_CONTROL, "max-age=300")],
        Json(proxy.verification_keys()),
    )
}

/// The store opened for some Redis settings (`None`: in-memory) and password.
type OpenStore = ((Option<RedisSpec>, Option<String>), Arc<dyn Store>);

/// Metric families, the open store and generated keys, made once per process and reused by
/// every policy reload: families must not be registered twice, and an in-memory store and
/// generated keys must survive a reload.
#[derive(Clone)]
pub struct Shared {
    metrics: metrics::OAuthMetrics,
    store_metrics: crate::store::StoreMetrics,
    store: Arc<tokio::sync::Mutex<Option<OpenStore>>>,
    local_keys: Arc<LocalKeys>,
    memory_bytes: usize,
    revocations: Arc<revocation::Revocations>,
}

/// Keys generated when the policy names no key secret: made once per process, so a policy
/// reload keeps the tokens and sessions issued before it.
#[derive(Default)]
struct LocalKeys {
    signing: std::sync::OnceLock<String>,
    encryption: std::sync::OnceLock<String>,
}

impl Shared {
    /// Registers the OAuth and store metric families.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = metrics::OAuthMetrics::register(registry);
        Shared {
            revocations: Arc::new(revocation::Revocations::new(metrics.clone())),
            metrics,
            store_metrics: crate::store::StoreMetrics::register(registry),
            store: Arc::default(),
            local_keys: Arc::default(),
            memory_bytes: crate::store::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the in-memory store's byte budget (used when the policy names no Redis).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// The store for `spec`: the one already open when neither the Redis settings nor the
    /// password changed.
    async fn store(
        &self,
        spec: Option<&RedisSpec>,
        secrets_dir: &Path,
    ) -> Result<Arc<dyn Store>, StoreError> {
        // A rotated password (same settings, new Secret content) needs new connections too.
        let password = spec
            .and_then(|s| s.password_secret_ref.as_ref())
            .and_then(|r| r.read(secrets_dir).ok());
        let key = (spec.cloned(), password);
        let mut slot = self.store.lock().await;
        if let Some((open_key, store)) = slot.as_ref()
            && *open_key == key
        {
            return Ok(store.clone());
        }
        let store =
            crate::store::open(spec, secrets_dir, &self.store_metrics, self.memory_bytes).await?;
        *slot = Some((key, store.clone()));
        Ok(store)
    }
}

/// Paths browser-based clients call cross-origin: the documents and the cookie-less JSON/form
/// endpoints. `/authorize`, `/consent` and `/callback` are top-level navigations, never CORS.
fn cors_path(path: &str) -> bool {
    matches!(path, "/register" | "/token" | "/revoke" | "/jwks")
        || path.starts_with("/.well-known/")
}

/// CORS for browser clients (e.g. the MCP Inspector): any origin, no credentials. These
/// endpoints authenticate with request parameters, never cookies, so `*` exposes nothing.
async fn cors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::{HeaderValue, Method, StatusCode, header};
    if !cors_path(request.uri().path()) {
        return next.run(request).await;
    }
    let mut response = if request.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(request).await
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Whether the OAuth facade serves `path` (the rest goes to the protected resource).
pub fn handles(path: &str) -> bool {
    matches!(
        path,
        "/register" | "/authorize" | "/consent" | "/callback" | "/token" | "/revoke" | "/jwks"
    ) || path == "/.well-known/oauth-authorization-server"
        || path.starts_with("/.well-known/oauth-authorization-server/")
        || path == "/.well-known/openid-configuration"
        || path.starts_with("/.well-known/openid-configuration/")
}

/// One rate limit's counter for one caller.
struct RateCounter {
    key: String,
    window: Duration,
    requests: u32,
}

impl RateCounter {
    /// 429 with `Retry-After` once `count` is over the limit.
    fn check(&self, count: u64) -> Result<(), Reject> {
        if count > u64::from(self.requests) {
            return Err(Reject::RateLimited {
                retry_after: self.window.as_secs(),
            });
        }
        Ok(())
    }
}

/// What a request is counted by for a rate limit.
#[derive(Clone, Copy)]
pub(crate) enum RateKey<'a> {
    /// The caller's address.
    Address(&'a ClientAddr),
    /// The client id, once the client is known.
    Client(&'a str),
}

/// The caller's address for rate limits: the peer's IPv4 address, or its IPv6 /64 (one host
/// commonly holds a whole /64, so single IPv6 addresses cost an attacker nothing); `unknown` in
/// in-process tests.
pub struct ClientAddr(pub String);

impl ClientAddr {
    /// The rate-limit identity of `ip`.
    pub fn of(ip: std::net::IpAddr) -> Self {
        match ip.to_canonical() {
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientAddr(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
            v4 => ClientAddr(v4.to_string()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = crate::peer::Peer::in_extensions(&parts.extensions)
            .map(|peer| ClientAddr::of(peer.ip()));
        Ok(addr.unwrap_or_else(|| ClientAddr("unknown".into())))
    }
}

#[cfg(test)]
mod client_addr_tests {
    use super::ClientAddr;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let of = |ip: &str| ClientAddr::of(ip.parse().unwrap()).0;
        assert_eq!(of("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(of("2001:db8:1:2:ffff::1"), of("2001:db8:1:2::9"));
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("192.0.2.7"), "192.0.2.7");
        assert_eq!(of("::ffff:192.0.2.7"), "192.0.2.7");
    }
}
