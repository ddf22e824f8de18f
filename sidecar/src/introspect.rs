//! RFC 7662 token introspection (`spec.jwt.introspection`): tokens that are not JWTs (or every
//! token, with `always`) are sent to the issuer's introspection endpoint; an active answer is
//! checked like a JWT's claims (`iss`, `aud`, `exp`, `nbf`, scopes) and cached for at most
//! `cacheSeconds`, never past the token's `exp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_warden_policy::IntrospectionSpec;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use url::Url;

use crate::metrics::{IntrospectionResult, Metrics};
use crate::verify::{Claims, MAX_TOKEN_LEN, Principal, TokenError};

/// Most answers kept in the cache.
const CACHE_CAPACITY: usize = 10_000;
/// Largest introspection or metadata response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Time limit of one introspection request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a token must satisfy, and how to reach the endpoint.
pub struct Settings {
    /// Policy name (metrics, logs).
    pub policy: String,
    /// Exact issuer; an answer's `iss`, when present, must equal it.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Clock skew for `exp`/`nbf`, seconds.
    pub leeway: u64,
    /// Plain http allowed for a discovered endpoint on a non-loopback host.
    pub allow_insecure_http: bool,
    /// The client's secret, read from the secrets directory.
    pub client_secret: String,
}

/// Introspects tokens for one policy and caches the active answers.
pub struct Introspector {
    settings: Settings,
    spec: IntrospectionSpec,
    endpoint: OnceCell<String>,
    http: reqwest::Client,
    metrics: Metrics,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

struct Cached {
    principal: Arc<Principal>,
    valid_until: u64,
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Whether a token has the shape of a compact JWS (three parts, a JSON header with `alg`).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("alg"))
}

/// `application/x-www-form-urlencoded` encoding of one credential (RFC 6749 §2.3.1).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Introspector {
    /// An introspector for `spec`.
    pub fn new(
        spec: IntrospectionSpec,
        settings: Settings,
        http: reqwest::Client,
        metrics: Metrics,
    ) -> Self {
        let endpoint = OnceCell::new_with(spec.endpoint.clone());
        Introspector {
            settings,
            spec,
            endpoint,
            http,
            metrics,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this token goes to introspection rather than local JWT verification.
    pub fn handles(&self, token: &str) -> bool {
        self.spec.always || !looks_like_jwt(token)
    }

    /// Checks `token`; the flag says whether the answer came from the cache.
    pub async fn verify(&self, token: &str) -> Result<(Arc<Principal>, bool), TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        if let Some(hit) = self.cached(token) {
            return Ok((hit, true));
        }
        // Boxed: only a miss pays for it, and every request's future stays small.
        let claims = match Box::pin(self.introspect(token)).await {
            Ok(claims) => claims,
            Err(why) => {
                tracing::warn!(policy = %self.settings.policy, error = %why, "token introspection failed");
                self.metrics
                    .introspection(&self.settings.policy, IntrospectionResult::Error);
                return Err(TokenError::IntrospectionUnavailable);
            }
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            self.metrics
                .introspection(&self.settings.policy, IntrospectionResult::Inactive);
            return Err(TokenError::Inactive);
        }
        self.metrics
            .introspection(&self.settings.policy, IntrospectionResult::Active);
        let principal = Arc::new(self.check(claims)?);
        self.remember(token, &principal);
        Ok((principal, false))
    }

    /// The claims of an active answer, checked as a JWT's would be.
    fn check(&self, mut claims: Map<String, Value>) -> Result<Principal, TokenError> {
        claims.remove("active");
        if let Some(iss) = claims.get("iss")
            && iss.as_str() != Some(self.settings.issuer.as_str())
        {
            return Err(TokenError::WrongIssuer);
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let accepted = |aud: &str| {
            self.settings
                .audiences
                .iter()
                .any(|a| a == aud || a.trim_end_matches('/') == aud.trim_end_matches('/'))
        };
        if !audiences.into_iter().any(accepted) {
            return Err(TokenError::WrongAudience);
        }
        let now = now();
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(TokenError::Malformed)?;
        if expires_at + self.settings.leeway <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64)
            && nbf > now + self.settings.leeway
        {
            return Err(TokenError::NotYetValid);
        }
        let claims = Claims::from(claims);
        let scopes = claims.granted();
        Ok(Principal {
            claims,
            scopes,
            expires_at,
        })
    }

    fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        let cache = self.cache.lock().expect("introspection cache lock");
        let hit = cache.get(token)?;
        (hit.valid_until > now()).then(|| hit.principal.clone())
    }

    fn remember(&self, token: &str, principal: &Arc<Principal>) {
        let now = now();
        let valid_until = principal
            .expires_at
            .min(now + u64::from(self.spec.cache_seconds));
        let mut cache = self.cache.lock().expect("introspection cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, c| c.valid_until > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(
            token.into(),
            Cached {
                principal: principal.clone(),
                valid_until,
            },
        );
    }

    /// One introspection request; `Err` when no usable answer came back.
    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, String> {
        let endpoint = self.endpoint.get_or_try_init(|| self.discover()).await?;
        let attributes = || vec![opentelemetry::KeyValue::new("url.full", endpoint.clone())];
        crate::telemetry::client("token introspection", attributes, self.ask(endpoint, token)).await
    }

    /// Posts `token` to the introspection `endpoint` and reads the answer.
    async fn ask(&self, endpoint: &str, token: &str) -> Result<Map<String, Value>, String> {
        let response = self
            .http
            .post(endpoint)
            .basic_auth(
                form_encode(&self.spec.client_id),
                Some(form_encode(&self.settings.client_secret)),
            )
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!(
                "token={}&token_type_hint=access_token",
                form_encode(token)
            ))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        if response.status() == http::StatusCode::BAD_REQUEST {
            // `unsupported_token_type` (RFC 7009 §2.2.1, which introspection endpoints reuse):
            // the issuer will not vouch for this kind of token (e.g. its own JWTs), so it is
            // not an active token here.
            let body = read_limited(response).await.unwrap_or_default();
            let error = serde_json::from_slice::<Map<String, Value>>(&body)
                .ok()
                .and_then(|b| b.get("error").and_then(Value::as_str).map(str::to_owned));
            if error.as_deref() == Some("unsupported_token_type") {
                return Ok(Map::from_iter([("active".to_owned(), Value::Bool(false))]));
            }
            return Err(format!(
                "{endpoint}: status 400 ({})",
                error.unwrap_or_default()
            ));
        }
        if !response.status().is_success() {
            return Err(format!("{endpoint}: status {}", response.status()));
        }
        let body = read_limited(response).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{endpoint}: not a JSON object: {e}"))
    }

    /// `introspection_endpoint` from the issuer's metadata (OpenID discovery, then RFC 8414).
    async fn discover(&self) -> Result<String, String> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let parsed = Url::parse(issuer).map_err(|e| format!("issuer: {e}"))?;
        let origin = parsed.origin().ascii_serialization();
        let path = parsed.path().trim_end_matches('/');
        let mut last = String::new();
        for url in [
            format!("{issuer}/.well-known/openid-configuration"),
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
        ] {
            let response = match self.http.get(&url).timeout(REQUEST_TIMEOUT).send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    last = format!("{url}: status {}", r.status());
                    continue;
                }
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let meta: Map<String, Value> = serde_json::from_slice(&read_limited(response).await?)
                .map_err(|e| format!("{url}: {e}"))?;
            if meta.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
                return Err(format!("{url}: the metadata names another issuer"));
            }
            let endpoint = meta
                .get("introspection_endpoint")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{url}: no introspection_endpoint"))?;
            let parsed = Url::parse(endpoint).map_err(|e| format!("{endpoint}: {e}"))?;
            let secure = parsed.scheme() == "https"
                || (parsed.scheme() == "http"
                    && (self.settings.allow_insecure_http
                        || mcp_warden_policy::is_loopback_host(&parsed)));
            if !secure {
                return Err(format!("{endpoint}: introspection must use https"));
            }
            return Ok(endpoint.to_owned());
        }
        Err(last)
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("response larger than {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn introspector(cache_seconds: u32) -> Introspector {
        let spec = IntrospectionSpec {
            endpoint: Some("http://127.0.0.1:9/introspect".into()),
            client_id: "w".into(),
            client_secret_ref: mcp_warden_policy::SecretRef {
                name: "s".into(),
                key: "k".into(),
            },
            cache_seconds,
            always: false,
        };
        let settings = Settings {
            policy: "p".into(),
            issuer: "https://idp.example".into(),
            audiences: vec!["https://mcp.example/mcp".into()],
            leeway: 0,
            allow_insecure_http: false,
            client_secret: "secret".into(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        Introspector::new(
            spec,
            settings,
            reqwest::Client::new(),
            Metrics::register(&mut registry),
        )
    }

    fn answer(extra: Value) -> Map<String, Value> {
        let mut claims = serde_json::json!({
            "active": true, "iss": "https://idp.example", "aud": "https://mcp.example/mcp",
            "exp": now() + 3600, "scope": "mcp:tools", "sub": "u"
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims.as_object().unwrap().clone()
    }

    #[test]
    fn active_answers_are_checked_like_jwts() {
        let i = introspector(60);
        let p = i.check(answer(serde_json::json!({}))).unwrap();
        assert!(p.scopes.covers_all(["mcp:tools".to_string()].iter()));
        assert_eq!(p.claims.get("active"), None);
        let err = |extra| i.check(answer(extra)).err();
        use serde_json::json;
        assert_eq!(
            err(json!({"iss": "https://other"})),
            Some(TokenError::WrongIssuer)
        );
        assert_eq!(
            err(json!({"aud": ["https://x"]})),
            Some(TokenError::WrongAudience)
        );
        assert_eq!(err(json!({"exp": now() - 1})), Some(TokenError::Expired));
        assert_eq!(err(json!({"exp": null})), Some(TokenError::Malformed));
        assert_eq!(
            err(json!({"nbf": now() + 600})),
            Some(TokenError::NotYetValid)
        );
        let mut no_aud = answer(json!({}));
        no_aud.remove("aud");
        assert_eq!(i.check(no_aud).err(), Some(TokenError::WrongAudience));
    }

    #[test]
    fn cache_never_outlives_exp_or_cache_seconds() {
        let i = introspector(60);
        let soon = Arc::new(
            i.check(answer(serde_json::json!({"exp": now() + 5})))
                .unwrap(),
        );
        i.remember("t1", &soon);
        let later = Arc::new(i.check(answer(serde_json::json!({}))).unwrap());
        i.remember("t2", &later);
        let cache = i.cache.lock().unwrap();
        assert_eq!(cache["t1"].valid_until, now() + 5);
        assert!(cache["t2"].valid_until <= now() + 60);
    }

    /// The cost of a request whose token is in the cache (no introspection request):
    /// `cargo test --release -p mcp-warden-sidecar --lib cache_hit_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, run explicitly in release mode"]
    fn cache_hit_cost() {
        let i = introspector(3600);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let token = "Hk3v0aQwq8r2mZ-opaque-access-token-43-chars";
        let p = Arc::new(i.check(answer(serde_json::json!({}))).unwrap());
        i.remember(token, &p);
        for size in [1usize, 9_000] {
            for n in 0..size {
                i.remember(&format!("filler-{n}"), &p);
            }
            let rounds = 1_000_000u32;
            let started = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..rounds {
                    let (_, cached) = i.verify(token).await.unwrap();
                    assert!(cached);
                }
            });
            let per = started.elapsed() / rounds;
            println!("introspection cache hit, {size} entries: {per:?} per token");
        }
    }

    #[test]
    fn tells_jwts_from_opaque_tokens() {
        let header = "eyJhbGciOiJFUzI1NiJ9"; // {"alg":"ES256"}
        assert!(looks_like_jwt(&format!("{header}.e30.sig")));
        assert!(!looks_like_jwt("Hk3v0aQwq8r2mZ_opaque-token"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt(&format!("{header}.e30.sig.extra")));
        assert!(!looks_like_jwt("e30.e30.sig")); // `{}`: no alg
    }
}
