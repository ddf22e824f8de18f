//! The resource server end to end, in-process over real loopback sockets: a JWKS-serving IdP,
//! the sidecar, and an app behind it.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

struct World {
    idp: Idp,
    key: SigningKey,
    sidecar: Sidecar,
    http: reqwest::Client,
}

async fn world(extra_spec: &str) -> World {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(vec![key.jwk.clone()]).await;
    let app = start_app().await;
    let issuer = idp.issuer.clone();
    let extra = extra_spec.to_owned();
    let sidecar = Sidecar::start(
        move |resource| policy_yaml(&issuer, resource, &extra),
        &format!("http://{app}"),
    )
    .await;
    World {
        idp,
        key,
        sidecar,
        http: reqwest::Client::new(),
    }
}

impl World {
    fn token(&self, scope: &str) -> String {
        self.key
            .sign(&claims(&self.idp, &self.sidecar.url(), scope))
    }

    async fn post(&self, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self.http.post(self.sidecar.url()).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

fn www(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

#[tokio::test]
async fn valid_token_reaches_the_app_with_identity_but_without_credentials() {
    let w = world("").await;
    let r = w
        .http
        .post(w.sidecar.url())
        .bearer_auth(w.token("mcp:tools"))
        .header("x-auth-subject", "mallory")
        .json(&call("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["mcp-session-id"], "session-1");
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-subject"], "alice");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "token passthrough: {seen}"
    );
    assert_eq!(seen["body"].as_str().unwrap(), call("echo").to_string());
}

#[tokio::test]
async fn missing_token_gets_the_rfc9728_challenge_on_every_method() {
    let w = world("").await;
    let expected = format!(
        r#"Bearer resource_metadata="{}/.well-known/oauth-protected-resource/mcp", scope="mcp:tools""#,
        w.sidecar.base
    );
    for method in ["GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT"] {
        let r = w
            .http
            .request(method.parse().unwrap(), w.sidecar.url())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert_eq!(www(&r), expected, "{method}");
    }
    // A token in the query string is not a credential.
    let r = w
        .http
        .get(format!(
            "{}?access_token={}",
            w.sidecar.url(),
            w.token("mcp:tools")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nor is another scheme.
    let r = w
        .http
        .get(w.sidecar.url())
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), www(&r)), (401, expected));
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn refused_tokens_say_invalid_token_with_a_bounded_reason() {
    let w = world("").await;
    let aud = w.sidecar.url();
    let good = claims(&w.idp, &aud, "mcp:tools");
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let other_key = SigningKey::generate("k1");
    let unknown_kid = SigningKey::generate("nobody");
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = w.key.jwk.to_string();
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "malformed"),
        ("garbage segments", "a.b.c".into(), "malformed"),
        (
            "expired",
            w.key.sign(&with(json!({"exp": now() - 600}))),
            "expired",
        ),
        (
            "not yet valid",
            w.key.sign(&with(json!({"nbf": now() + 600}))),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            w.key.sign(&with(json!({"iss": "https://evil.example"}))),
            "wrong_issuer",
        ),
        (
            "wrong audience",
            w.key
                .sign(&with(json!({"aud": "https://other.example/mcp"}))),
            "wrong_audience",
        ),
        (
            "no audience",
            w.key
                .sign(&json!({"iss": w.idp.issuer, "exp": now() + 60, "scope": "mcp:tools"})),
            "wrong_audience",
        ),
        ("forged signature", other_key.sign(&good), "bad_signature"),
        ("unknown kid", unknown_kid.sign(&good), "unknown_kid"),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "k1"}), &good),
            "disallowed_alg",
        ),
        (
            "hs256 with the public key",
            hs256_with_public_key,
            "disallowed_alg",
        ),
    ];
    for (name, token, reason) in &cases {
        let r = w.post(Some(token), call("echo")).await;
        assert_eq!(r.status(), 401, "{name}");
        let challenge = www(&r);
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata="),
            "{name}: {challenge}"
        );
        let metrics = w.sidecar.metrics();
        let line = format!(
            r#"mcp_warden_requests_total{{policy="test-policy",outcome="unauthorized",reason="{reason}"}}"#
        );
        assert!(metrics.contains(&line), "{name}: no {line} in\n{metrics}");
    }
    // A trailing-slash variant of the audience is the same resource.
    let slash = w.key.sign(&with(json!({"aud": format!("{aud}/")})));
    assert_eq!(w.post(Some(&slash), call("echo")).await.status(), 200);
    // Array audiences and `scp` arrays work.
    let arrays = w.key.sign(&with(
        json!({"aud": ["x", aud], "scope": null, "scp": ["mcp:tools"]}),
    ));
    assert_eq!(w.post(Some(&arrays), call("echo")).await.status(), 200);
}

#[tokio::test]
async fn insufficient_scope_is_403_with_the_full_needed_set() {
    let rules = "  rules:\n  - {method: tools/call, tools: [\"delete_*\"], scopes: [mcp:admin]}\n";
    let w = world(rules).await;
    let r = w.post(Some(&w.token("profile")), call("echo")).await;
    assert_eq!(r.status(), 403);
    let challenge = www(&r);
    assert!(
        challenge.contains(r#"scope="mcp:tools", error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(
            r#"resource_metadata="{}/.well-known/"#,
            w.sidecar.base
        )),
        "{challenge}"
    );

    // The tool rule asks for more; a broad grant covers narrower scopes.
    let tools_only = w.token("mcp:tools");
    assert_eq!(w.post(Some(&tools_only), call("echo")).await.status(), 200);
    let r = w.post(Some(&tools_only), call("delete_repo")).await;
    assert_eq!(r.status(), 403);
    assert!(
        www(&r).contains(r#"scope="mcp:tools mcp:admin""#),
        "{}",
        www(&r)
    );
    assert_eq!(
        w.post(Some(&w.token("mcp:tools mcp:admin")), call("delete_repo"))
            .await
            .status(),
        200
    );
    let hierarchical = w.token("mcp:tools mcp");
    assert_eq!(
        w.post(Some(&hierarchical), call("echo")).await.status(),
        200
    );

    // A body that is not JSON-RPC is a bad request, not a crash or a bypass.
    let r = w
        .http
        .post(w.sidecar.url())
        .bearer_auth(&tools_only)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A body over the limit is refused unread, and the connection is not offered for reuse.
    let r = w
        .http
        .post(w.sidecar.url())
        .bearer_auth(&tools_only)
        .body(vec![b' '; mcp_warden_sidecar::rules::MAX_RPC_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close");
}

#[tokio::test]
async fn protected_resource_metadata_at_both_paths() {
    let w = world("").await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = w
            .http
            .get(format!("{}{path}", w.sidecar.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["resource"], w.sidecar.url());
        assert_eq!(doc["authorization_servers"], json!([w.idp.issuer]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["mcp:tools"]),
            "offline_access is not listed"
        );
    }
    let r = w
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/other",
            w.sidecar.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "unknown well-known paths are not metadata and not a bypass either"
    );
}

#[tokio::test]
async fn origins_are_checked_and_allowed_ones_get_cors() {
    let w = world("  cors: {allowedOrigins: [\"http://localhost:6274\"]}\n").await;
    let r = w
        .http
        .post(w.sidecar.url())
        .header("origin", "https://evil.example")
        .bearer_auth(w.token("mcp:tools"))
        .json(&call("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = w
        .http
        .post(w.sidecar.url())
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:6274"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("WWW-Authenticate")
    );
    let r = w
        .http
        .request(reqwest::Method::OPTIONS, w.sidecar.url())
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
}

#[tokio::test]
async fn sse_streams_flow_through_unbuffered() {
    let w = world("").await;
    let r = w
        .http
        .get(w.sidecar.url())
        .bearer_auth(w.token("mcp:tools"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut r = r;
    let mut seen = String::new();
    // The app never ends this stream: events must arrive while it stays open.
    while !seen.contains("tick 2") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("event in time");
        seen.push_str(std::str::from_utf8(&chunk.unwrap().expect("stream still open")).unwrap());
    }
    assert!(seen.contains("data: tick 0"));
}

#[tokio::test]
async fn an_unreachable_app_is_a_clean_502() {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(vec![key.jwk.clone()]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let issuer = idp.issuer.clone();
    let sidecar = Sidecar::start(
        move |r| policy_yaml(&issuer, r, ""),
        &format!("http://{closed}"),
    )
    .await;
    let token = key.sign(&claims(&idp, &sidecar.url(), "mcp:tools"));
    let r = reqwest::Client::new()
        .post(sidecar.url())
        .bearer_auth(token)
        .json(&call("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
}

#[tokio::test]
async fn cached_keys_survive_an_idp_outage_and_new_kids_are_refetched() {
    let w = world("").await;
    let first = w.token("mcp:tools");
    assert_eq!(w.post(Some(&first), call("echo")).await.status(), 200);
    w.idp.down.store(true, Ordering::SeqCst);
    // A token never seen before, signed by a known key: verified with the cached keys.
    let fresh = w.key.sign(&json!({"iss": w.idp.issuer, "aud": w.sidecar.url(), "scope": "mcp:tools", "exp": now() + 120, "jti": "2"}));
    assert_eq!(w.post(Some(&fresh), call("echo")).await.status(), 200);
    w.idp.down.store(false, Ordering::SeqCst);

    // Key rotation at the IdP: a new kid triggers one refetch.
    let rotated = SigningKey::generate("k2");
    w.idp.keys.lock().unwrap().push(rotated.jwk.clone());
    let hits = w.idp.jwks_hits.load(Ordering::SeqCst);
    let token = rotated.sign(&claims(&w.idp, &w.sidecar.url(), "mcp:tools"));
    assert_eq!(w.post(Some(&token), call("echo")).await.status(), 200);
    assert_eq!(w.idp.jwks_hits.load(Ordering::SeqCst), hits + 1);

    // Made-up kids do not hammer the IdP: within the refetch interval nothing more is fetched.
    for i in 0..5 {
        let bogus = SigningKey::generate(&format!("bogus-{i}"));
        let r = w
            .post(
                Some(&bogus.sign(&claims(&w.idp, &w.sidecar.url(), "mcp:tools"))),
                call("echo"),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    assert_eq!(w.idp.jwks_hits.load(Ordering::SeqCst), hits + 1);
}

#[tokio::test]
async fn verified_tokens_are_cached_until_expiry() {
    let w = world("").await;
    let token = w.token("mcp:tools");
    // The third and later are answered from the serving thread's own copy: hits all the same.
    for _ in 0..4 {
        assert_eq!(w.post(Some(&token), call("echo")).await.status(), 200);
    }
    assert!(
        w.sidecar
            .metrics()
            .contains("mcp_warden_token_cache_hits_total 3"),
        "{}",
        w.sidecar.metrics()
    );
}

#[tokio::test]
async fn a_reloaded_policy_applies_from_the_next_request() {
    let w = world("").await;
    let token = w.token("mcp:tools");
    // Enough requests for the serving thread to hold the policy and the token of its own.
    for _ in 0..4 {
        assert_eq!(w.post(Some(&token), call("echo")).await.status(), 200);
    }
    let policy = |rules: &'static str| {
        let issuer = w.idp.issuer.clone();
        move |resource: &str| policy_yaml(&issuer, resource, rules)
    };
    let admin = "  rules:\n  - {method: tools/call, tools: [echo], scopes: [mcp:admin]}\n";
    let replaced = std::sync::Arc::downgrade(&w.sidecar.state.runtime.load_full());
    w.sidecar.reload(policy(admin)).await;
    // The serving thread lets go of the replaced policy even without a request to see the change.
    for _ in 0..100 {
        if replaced.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replaced.strong_count(), 0, "the replaced policy is freed");
    assert_eq!(w.post(Some(&token), call("echo")).await.status(), 403);
    w.sidecar.reload(policy("")).await;
    assert_eq!(w.post(Some(&token), call("echo")).await.status(), 200);
}

#[tokio::test]
async fn ambiguous_credentials_are_a_bad_request() {
    let w = world("").await;
    let r = w
        .http
        .post(w.sidecar.url())
        .header("authorization", format!("Bearer {}", w.token("mcp:tools")))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn refusals_do_not_invite_an_expect_continue_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let w = world("").await;
    let mut socket = tokio::net::TcpStream::connect(w.sidecar.addr)
        .await
        .unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        w.sidecar.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    // The refusal comes without waiting for the body (well inside the drain wait).
    let n = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut answer))
        .await
        .expect("the 401 is sent without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 401 "), "{text}");
    assert!(!text.contains("100 continue"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
}

/// With the audit trail on and no scope rules, a request body reaches the app as it arrives
/// (the audit writer reads the messages from a copy afterwards): the app sees the start of the
/// body while the client is still sending the rest.
#[tokio::test]
async fn audited_request_bodies_stream_to_the_app() {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use futures_util::StreamExt as _;
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::{Bytes, Frame};

    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let app = axum::Router::new().route(
        "/mcp",
        post(move |body: axum::body::Body| async move {
            let mut chunks = body.into_data_stream();
            let mut all = Vec::new();
            while let Some(chunk) = chunks.next().await {
                all.extend_from_slice(&chunk.unwrap());
                if let Some(tx) = first_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
            all
        }),
    );
    let app = serve(app).await;
    let key = SigningKey::generate("k1");
    let idp = Idp::start(vec![key.jwk.clone()]).await;
    let log = std::env::temp_dir().join(format!("audit-stream-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let issuer = idp.issuer.clone();
    let audit = format!("  audit: {{destination: {}}}\n", log.display());
    let sidecar = Sidecar::start(
        move |r| policy_yaml(&issuer, r, &audit),
        &format!("http://{app}"),
    )
    .await;
    let token = key.sign(&claims(&idp, &sidecar.url(), "mcp:tools"));

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), rx))
    }));
    let stream = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // hyper's connection-level client adds no Host field; HTTP/1.1 requires one.
    let request = http::Request::post(sidecar.url())
        .header("host", sidecar.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = tokio::spawn(sender.send_request(request));
    let message = call("search").to_string();
    let (head, tail) = message.split_at(20);
    tx.send(Bytes::from(head.to_owned())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .expect("the app gets the start of the body while the client still sends the rest")
        .unwrap();
    tx.send(Bytes::from(tail.to_owned())).await.unwrap();
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, message.as_bytes());

    // The audit line still names the call, read from the body after it went through.
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event: Value = serde_json::from_str(line.lines().next().expect("an audit line")).unwrap();
    assert_eq!(event["method"], "tools/call");
    assert_eq!(event["tool"], "search");
    assert_eq!(event["outcome"], "allowed");
    assert_eq!(event["caller"]["sub"], "alice");
    let _ = std::fs::remove_file(&log);
}

/// The response head [`raw_app`] sends: an `X-Request-Id` and CORS fields of the app's own,
/// fields repeated and in mixed case, a `Date`, and a field its `Connection` names.
const RAW_APP_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nX-Request-Id: app-chosen\r\nAccess-Control-Allow-Origin: https://app.example\r\nVary: Accept\r\nX-Multi: a\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nx-multi: b\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok";

/// An app that answers every request (a head without a body) with [`RAW_APP_HEAD`].
async fn raw_app() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        conn.write_all(RAW_APP_HEAD).await.unwrap();
                    }
                }
            });
        }
    });
    addr
}

/// A sidecar (with CORS for `http://localhost:6274`) in front of [`raw_app`], and a token.
async fn raw_world() -> (Idp, Sidecar, String) {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(vec![key.jwk.clone()]).await;
    let app = raw_app().await;
    let issuer = idp.issuer.clone();
    let cors = "  cors: {allowedOrigins: [\"http://localhost:6274\"]}\n";
    let sidecar = Sidecar::start(
        move |r| policy_yaml(&issuer, r, cors),
        &format!("http://{app}"),
    )
    .await;
    let token = key.sign(&claims(&idp, &sidecar.url(), "mcp:tools"));
    (idp, sidecar, token)
}

#[tokio::test]
async fn an_http1_client_gets_the_apps_fields_as_sent_and_the_sidecars_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_idp, sidecar, token) = raw_world().await;
    let mut client = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    let path = sidecar
        .url()
        .parse::<http::Uri>()
        .unwrap()
        .path()
        .to_owned();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost:6274\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\nok") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the response in time")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8(seen).unwrap();
    // The app's end-to-end fields byte for byte, in its order; its CORS origin, its
    // `Connection` and the field that names are not passed on.
    let (app, added) = head
        .split_once("Content-Length: 2\r\n")
        .expect("the app's fields as sent");
    assert_eq!(
        app,
        "HTTP/1.1 200 OK\r\nX-Request-Id: app-chosen\r\nVary: Accept\r\nX-Multi: a\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nx-multi: b\r\n"
    );
    // Then the sidecar's: CORS for the allowed origin, `Vary: Origin` added to the app's; no
    // second `X-Request-Id`, `Date` or `Content-Length`.
    let mut lines: Vec<&str> = added.trim_end_matches("\r\n\r\nok").split("\r\n").collect();
    lines.sort_unstable();
    assert_eq!(
        lines[0],
        "access-control-allow-origin: http://localhost:6274"
    );
    assert!(lines[1].starts_with("access-control-expose-headers: "));
    assert_eq!(lines[2..], ["vary: Origin"]);
}

#[tokio::test]
async fn an_http2_client_gets_the_same_fields() {
    let (_idp, sidecar, token) = raw_world().await;
    let stream = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(sidecar.url())
        .header("origin", "http://localhost:6274")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let all = |name: &str| -> Vec<&str> {
        let values = response.headers().get_all(name).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    };
    assert_eq!(all("x-request-id"), ["app-chosen"]);
    assert_eq!(
        all("access-control-allow-origin"),
        ["http://localhost:6274"]
    );
    assert_eq!(all("access-control-expose-headers").len(), 1);
    assert_eq!(all("vary"), ["Accept", "Origin"]);
    assert_eq!(all("x-multi"), ["a", "b"]);
    assert_eq!(all("date"), ["Tue, 01 Dec 2026 00:00:00 GMT"]);
    assert!(all("x-hop").is_empty() && all("connection").is_empty());
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert_eq!(&body.unwrap().to_bytes()[..], b"ok");
}
