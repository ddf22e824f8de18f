//! Bounded OAuth state, in-process (`oneshot`, in-memory store): registrations stay within the
//! store's byte budget and are refused before flows of registered clients are, oversized client
//! metadata and authorization parameters are refused, and unused registrations expire early.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use mcp_warden_policy::{PolicyDocument, ValidatedResource};
use mcp_warden_sidecar::oauth::OAuthProxy;
use mcp_warden_sidecar::oauth::metrics::OAuthMetrics;
use mcp_warden_sidecar::store::MemoryStore;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn router(store: Arc<MemoryStore>) -> axum::Router {
    let doc = PolicyDocument::from_yaml(&format!(
        r#"apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {{name: limits, namespace: t}}
spec:
  resource: {{url: "{RESOURCE}", scopesSupported: [mcp:tools], name: Tools}}
  mode: oauthProxy
  oauthProxy:
    provider: github
    clientId: Iv1.test
    allowedRedirectUris: [http://127.0.0.1]
    access: {{anyAuthenticatedUser: true}}
"#
    ))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("mcpw-oauth-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = OAuthProxy::with_store(
        &doc,
        &ValidatedResource::parse(RESOURCE).unwrap(),
        &dir,
        store,
        OAuthMetrics::register(&mut Registry::default()),
    )
    .unwrap();
    Arc::new(proxy).router()
}

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec(),
    )
}

async fn register(router: &axum::Router, body: &Value) -> (StatusCode, Value) {
    let req = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, body) = send(router, req).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// Sends an authorization request; `Ok` when the flow started (the user is sent to the
/// provider), otherwise the status of the refusal.
async fn authorize(router: &axum::Router, client_id: &str, extra: &str) -> Result<(), StatusCode> {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            b"a-verifier-of-enough-length-0123456789-abcdef",
        ));
    let uri = format!(
        "/authorize?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcb0\
         &code_challenge={challenge}&code_challenge_method=S256&state=s{extra}"
    );
    let resp = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let to_provider = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.starts_with("https://github.com/"));
    if resp.status().is_redirection() && to_provider {
        Ok(())
    } else {
        Err(resp.status())
    }
}

/// A registration as large as the limits allow: ten ~2 KB redirect URIs and a long name.
fn large_client() -> Value {
    let uris: Vec<String> = (0..10)
        .map(|i| format!("http://127.0.0.1:5/cb{i}/{}", "a".repeat(1970)))
        .collect();
    let mut uris = uris;
    uris[0] = "http://127.0.0.1:5/cb0".into();
    json!({"redirect_uris": uris, "client_name": "n".repeat(200),
           "token_endpoint_auth_method": "none"})
}

#[tokio::test]
async fn registrations_stay_within_the_budget_and_flows_keep_working() {
    let budget = 256 * 1024;
    let store = MemoryStore::with_budget(100_000, budget);
    let r = router(store.clone());
    let mut registered = Vec::new();
    let mut refused = None;
    // The register rate limit (60 a minute from one address) is not reached first.
    for _ in 0..60 {
        let (status, body) = register(&r, &large_client()).await;
        if status != StatusCode::CREATED {
            refused = Some((status, body));
            break;
        }
        registered.push(body["client_id"].as_str().unwrap().to_owned());
    }
    let (status, body) = refused.expect("registrations must stop before the budget is spent");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(registered.len() >= 5, "{} registrations", registered.len());
    assert!(
        store.bytes() <= budget / 4 * 3,
        "{} bytes held",
        store.bytes()
    );
    // Registered clients still get through /authorize (the flow state fits in the rest).
    for client in &registered[..3] {
        assert_eq!(authorize(&r, client, "").await, Ok(()));
    }
    assert!(store.bytes() <= budget, "{} bytes held", store.bytes());
}

#[tokio::test]
async fn oversized_client_metadata_is_refused() {
    let r = router(MemoryStore::new(10_000));
    let huge_uri = format!("http://127.0.0.1:5/{}", "a".repeat(63 * 1024));
    let eleven: Vec<String> = (0..11)
        .map(|i| format!("http://127.0.0.1:5/cb{i}"))
        .collect();
    for (body, error) in [
        (json!({"redirect_uris": [huge_uri]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": eleven}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["http://127.0.0.1:5/cb"], "client_name": "n".repeat(201)}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["http://127.0.0.1:5/cb"],
                   "client_uri": format!("https://app.example/{}", "u".repeat(2000))}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["http://127.0.0.1:5/cb"], "software_id": "s".repeat(1001)}),
            "invalid_client_metadata",
        ),
    ] {
        let (status, answer) = register(&r, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"], error);
    }
    let (status, client) = register(&r, &large_client()).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = client["client_id"].as_str().unwrap();
    let long_state = "s".repeat(1024);
    assert_eq!(
        authorize(&r, id, &long_state).await,
        Err(StatusCode::BAD_REQUEST)
    );
    let long_scope = format!("&scope={}", "x".repeat(1025));
    assert_eq!(
        authorize(&r, id, &long_scope).await,
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(authorize(&r, id, &"s".repeat(1022)).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn registrations_not_used_in_an_authorization_expire_early() {
    let r = router(MemoryStore::new(10_000));
    let (_, unused) = register(&r, &large_client()).await;
    let (_, used) = register(&r, &large_client()).await;
    let used = used["client_id"].as_str().unwrap().to_owned();
    assert_eq!(authorize(&r, &used, "").await, Ok(()));
    tokio::time::advance(Duration::from_secs(16 * 60)).await;
    assert_eq!(
        authorize(&r, unused["client_id"].as_str().unwrap(), "").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(authorize(&r, &used, "").await, Ok(()));
}
