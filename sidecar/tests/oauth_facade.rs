//! The OAuth facade's router in-process (`oneshot`, in-memory store): metadata, registration,
//! the consent page and its CSRF defence, client authentication and error shapes, key loading.
//! Complete flows against a real identity provider are in tests/e2e/test_oauth_*.py.

#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use mcp_warden_policy::{PolicyDocument, ValidatedResource};
use mcp_warden_sidecar::oauth::metrics::OAuthMetrics;
use mcp_warden_sidecar::oauth::{OAuthError, OAuthProxy, keys};
use mcp_warden_sidecar::store::{DEFAULT_MAX_ENTRIES, MemoryStore};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn policy(extra: &str) -> PolicyDocument {
    PolicyDocument::from_yaml(&format!(
        r#"apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {{name: facade, namespace: t}}
spec:
  resource: {{url: "{RESOURCE}", scopesSupported: [mcp:tools], name: Tools}}
  mode: oauthProxy
  oauthProxy:
    provider: github
    clientId: Iv1.test
    allowedRedirectUris: [http://127.0.0.1, "https://app.example/cb"]
    access: {{anyAuthenticatedUser: true}}
    scopeGrants:
      mcp:tools: {{anyAuthenticatedUser: true}}
{extra}"#
    ))
    .unwrap()
}

fn secrets_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpw-oauth-facade-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    dir
}

fn proxy_with(doc: &PolicyDocument, dir: &std::path::Path) -> Result<OAuthProxy, OAuthError> {
    let mut registry = Registry::default();
    let resource = ValidatedResource::parse(RESOURCE).unwrap();
    OAuthProxy::with_store(
        doc,
        &resource,
        dir,
        MemoryStore::new(DEFAULT_MAX_ENTRIES),
        OAuthMetrics::register(&mut registry),
    )
}

fn router() -> axum::Router {
    Arc::new(proxy_with(&policy(""), &secrets_dir("default")).unwrap()).router()
}

async fn send(
    router: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        to_bytes(body, 1 << 20).await.unwrap().to_vec(),
    )
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

async fn register(router: &axum::Router, body: Value) -> (StatusCode, Value) {
    let req = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, body) = send(router, req).await;
    (status, json_of(&body))
}

fn challenge() -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        b"verifier-verifier-verifier-verifier-verifier-0123",
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[tokio::test]
async fn metadata_names_the_mcp_origin_as_issuer() {
    let r = router();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/mcp",
    ] {
        let (status, _, body) = send(&r, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let doc = json_of(&body);
        assert_eq!(doc["issuer"], "https://mcp.example.com");
        assert_eq!(doc["token_endpoint"], "https://mcp.example.com/token");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    }
    let (_, _, body) = send(&r, Request::get("/jwks").body(Body::empty()).unwrap()).await;
    let jwks = json_of(&body);
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private key material"
    );
}

#[tokio::test]
async fn registration_validates_and_echoes() {
    let r = router();
    let (status, body) = register(&r, json!({"redirect_uris": ["https://app.example/cb"], "client_name": "App", "token_endpoint_auth_method": "client_secret_post"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["redirect_uris"], json!(["https://app.example/cb"]));
    assert_eq!(body["client_name"], "App");
    assert!(body["client_secret"].as_str().unwrap().len() >= 40);
    assert!(
        body.get("scope").is_none() && body.get("client_uri").is_none(),
        "absent fields are omitted, not null"
    );
    let (status, body) = register(&r, json!({"redirect_uris": ["https://other.example/cb"]})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_redirect_uri"))
    );
    let (status, body) = register(
        &r,
        json!({"redirect_uris": ["http://127.0.0.1:5/cb"], "grant_types": ["client_credentials"]}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client_metadata"))
    );
    let req = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .unwrap();
    assert_eq!(send(&r, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn callback_completes_only_in_the_browser_that_started_the_flow() {
    let r = router();
    let (_, client) = register(&r, json!({"redirect_uris": ["http://127.0.0.1:7000/cb"], "token_endpoint_auth_method": "none"})).await;
    let id = client["client_id"].as_str().unwrap();
    let url = format!(
        "/authorize?response_type=code&client_id={id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A7000%2Fcb&state=s1&code_challenge={}&code_challenge_method=S256",
        challenge()
    );
    // Sign-in first (consent follows it, naming the signed-in user).
    let (status, headers, _) = send(&r, Request::get(&url).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers[header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with("https://github.com/login/oauth/authorize?"),
        "{location}"
    );
    let state = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-mcpw-flow-")
            && cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let callback = |cookie: Option<&str>| {
        let mut req = Request::get(format!("/callback?code=c&state={state}"));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        req.body(Body::empty()).unwrap()
    };
    // Another browser (no cookie, or another flow's value) cannot complete it, and the
    // attempt ends the flow.
    let forged = format!("{}=AAAA", pair.split('=').next().unwrap());
    let (status, headers, body) = send(&r, callback(Some(&forged))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!headers.contains_key(header::LOCATION));
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("different browser")
    );
    let (status, _, _) = send(&r, callback(Some(&pair))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the flow is single use");
    // A consent decision without the consent page's cookie and CSRF token is refused.
    let req = Request::post("/consent")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("tx=t&csrf=forged.AAAA&decision=approve"))
        .unwrap();
    assert_eq!(send(&r, req).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn token_endpoint_errors_have_the_right_codes() {
    let r = router();
    let token = |body: &str| {
        Request::post("/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let (status, headers, body) = send(
        &r,
        token("grant_type=authorization_code&code=x&code_verifier=y&client_id=stale"),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (_, client) = register(&r, json!({"redirect_uris": ["http://127.0.0.1:7000/cb"], "token_endpoint_auth_method": "none"})).await;
    let id = client["client_id"].as_str().unwrap();
    let (status, _, body) = send(&r, token(&format!("grant_type=password&client_id={id}"))).await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, _, body) = send(
        &r,
        token(&format!(
            "grant_type=authorization_code&code=nope&code_verifier=v&client_id={id}"
        )),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _, body) = send(
        &r,
        token(&format!(
            "grant_type=refresh_token&refresh_token=a.b&client_id={id}&client_id={id}"
        )),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "repeated parameter"
    );
    let (status, _, body) = send(&r, token(&format!("grant_type=refresh_token&refresh_token=a.b&client_id={id}&resource=https%3A%2F%2Fevil.example%2Fmcp"))).await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
}

#[tokio::test]
async fn keys_come_from_the_secret_files() {
    let dir = secrets_dir("files");
    let (a, b) = (keys::generate_pem(), keys::generate_pem());
    std::fs::write(dir.join("keys/signing.pem"), format!("{a}{b}")).unwrap();
    std::fs::write(
        dir.join("keys/encryption.keys"),
        format!(
            "k2:{}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
    )
    .unwrap();
    let doc = policy(
        "    signingKeySecretRef: {name: keys, key: signing.pem}\n    encryptionKeySecretRef: {name: keys, key: encryption.keys}\n",
    );
    let proxy = proxy_with(&doc, &dir).unwrap();
    let jwks = proxy.verification_keys();
    assert_eq!(jwks.keys.len(), 2, "first key signs, both verify");
    assert_eq!(
        jwks.keys[0].common.key_id.as_deref(),
        Some(keys::SigningKeys::from_pem(&a).unwrap().current_kid())
    );
    assert_eq!(proxy.issuer(), "https://mcp.example.com");
    std::fs::write(dir.join("keys/encryption.keys"), "garbage").unwrap();
    assert!(matches!(proxy_with(&doc, &dir), Err(OAuthError::Keys(_))));
    std::fs::remove_file(dir.join("keys/signing.pem")).unwrap();
    assert!(matches!(proxy_with(&doc, &dir), Err(OAuthError::Secret(_))));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn browser_clients_get_cors_on_the_json_endpoints_only() {
    let r = router();
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/token")
        .header(header::ORIGIN, "https://inspector.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&r, preflight).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    let (status, body) = register(
        &r,
        json!({"redirect_uris": ["http://127.0.0.1:5/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let req = Request::get("/.well-known/oauth-authorization-server")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&r, req).await.1[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );
    let req = Request::get("/authorize?client_id=x")
        .body(Body::empty())
        .unwrap();
    assert!(
        !send(&r, req)
            .await
            .1
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "browser leg: no CORS"
    );
}
