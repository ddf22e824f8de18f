//! Test peers for the sidecar's in-process tests: a loopback IdP that serves discovery and a
//! JWKS (and can be switched off), an app that echoes what it received, and token minting.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::stream;
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_warden_policy::PolicyDocument;
use mcp_warden_sidecar::app::AppState;
use mcp_warden_sidecar::connection::Limits;
use mcp_warden_sidecar::metrics::Metrics;
use mcp_warden_sidecar::proxy::Upstream;
use mcp_warden_sidecar::runtime::{BuildContext, Runtime};
use mcp_warden_sidecar::workers::Workers;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// An EC P-256 signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        SigningKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A loopback identity provider: discovery + JWKS, keys swappable, can go down.
pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub down: Arc<AtomicBool>,
    pub jwks_hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct IdpState {
    issuer: Arc<Mutex<String>>,
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl Idp {
    pub async fn start(keys: Vec<Value>) -> Idp {
        let state = IdpState {
            issuer: Arc::default(),
            keys: Arc::new(Mutex::new(keys)),
            down: Arc::default(),
            hits: Arc::default(),
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<IdpState>| async move {
                    if s.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let issuer = s.issuer.lock().unwrap().clone();
                    Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                        .into_response()
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<IdpState>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    if s.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    Json(json!({"keys": s.keys.lock().unwrap().clone()})).into_response()
                }),
            )
            .with_state(state.clone());
        let addr = serve(router).await;
        let issuer = format!("http://{addr}");
        *state.issuer.lock().unwrap() = issuer.clone();
        Idp {
            addr,
            issuer,
            keys: state.keys,
            down: state.down,
            jwks_hits: state.hits,
        }
    }
}

/// An app that reports what reached it, streams SSE on GET, and fails on demand.
pub async fn start_app() -> SocketAddr {
    async fn echo(headers: HeaderMap, body: String) -> Response {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        let mut response = Json(json!({"headers": headers, "body": body})).into_response();
        response
            .headers_mut()
            .insert("mcp-session-id", "session-1".parse().unwrap());
        response
    }
    async fn events() -> impl IntoResponse {
        let ticks = stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((
                Ok::<_, std::convert::Infallible>(Event::default().data(format!("tick {n}"))),
                n + 1,
            ))
        });
        Sse::new(ticks)
    }
    serve(axum::Router::new().route("/mcp", post(echo).get(events).delete(echo))).await
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub const RESOURCE_PATH: &str = "/mcp";

/// A running sidecar (in-process) in front of `upstream`.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub base: String,
    pub state: Arc<AppState>,
    pub registry: Arc<Registry>,
    /// What [`Sidecar::reload`] builds a policy with.
    ctx: BuildContext,
    /// Serving stops when this is dropped.
    _serving: tokio::sync::watch::Sender<mcp_warden_sidecar::shutdown::Phase>,
}

/// A runtime for `doc`, its keys fetched.
async fn built(doc: PolicyDocument, ctx: &BuildContext) -> Runtime {
    let runtime = Runtime::build(doc, ctx).await.expect("runtime builds");
    if let Some(source) = runtime.verifier.remote() {
        let _ = source.refresh().await;
    }
    runtime
}

pub fn policy_yaml(issuer: &str, resource: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {{name: test-policy}}
spec:
  resource: {{url: "{resource}", scopesSupported: [mcp:tools, offline_access]}}
  mode: jwt
  jwt:
    issuer: "{issuer}"
    requiredScopes: [mcp:tools]
  forward:
    claimsToHeaders: {{sub: X-Auth-Subject}}
{extra_spec}"#
    )
}

impl Sidecar {
    /// Starts a sidecar; `policy` gets `{resource}` replaced by its own URL + `/mcp`.
    pub async fn start(policy: impl Fn(&str) -> String, upstream: &str) -> Sidecar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let doc = PolicyDocument::from_yaml(&policy(&format!("{base}{RESOURCE_PATH}")))
            .expect("valid policy");
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let ctx = BuildContext {
            resource_override: None,
            secrets_dir: std::env::temp_dir(),
            http: reqwest::Client::new(),
            metrics: metrics.clone(),
            audit: mcp_warden_sidecar::audit::Writers::new(&metrics),
            oauth: mcp_warden_sidecar::oauth::Shared::register(&mut registry),
        };
        let runtime = built(doc, &ctx).await;
        let state = Arc::new(AppState {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            upstream: Upstream::new(upstream).unwrap(),
            metrics,
        });
        // Served as the binary serves it: one serving thread, the default limits.
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 2048,
            max_streams: 100,
            max_header_bytes: 32 * 1024,
        };
        let (serving, phase) = mcp_warden_sidecar::shutdown::channel();
        Workers::start(listener, vec![state.clone()], limits, phase).expect("serving thread");
        Sidecar {
            addr,
            base,
            state,
            registry: Arc::new(registry),
            ctx,
            _serving: serving,
        }
    }

    /// Puts `policy` (as [`Sidecar::start`] takes it) in force, as a reload does.
    pub async fn reload(&self, policy: impl Fn(&str) -> String) {
        let doc = PolicyDocument::from_yaml(&policy(&self.url())).expect("valid policy");
        let runtime = built(doc, &self.ctx).await;
        self.state.runtime.store(Arc::new(runtime));
    }

    pub fn url(&self) -> String {
        format!("{}{RESOURCE_PATH}", self.base)
    }

    pub fn metrics(&self) -> String {
        mcp_warden_sidecar::metrics::render(&self.registry)
    }
}

pub fn claims(idp: &Idp, aud: &str, scope: &str) -> Value {
    json!({"iss": idp.issuer, "aud": aud, "sub": "alice", "scope": scope, "exp": now() + 300, "iat": now()})
}
