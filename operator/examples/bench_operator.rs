//! Benchmark (not a test) of the operator's two hot paths, all in one process on loopback:
//!
//! 1. Admission: AdmissionReview requests over real HTTPS (rustls, keep-alive) to the webhook
//!    server answering from its watch caches, 1,000 sequential reviews per case, injection vs
//!    pass-through; p50/p99 of the HTTPS round trip and of the handler alone (the webhook's own
//!    work: parse, decide, build the patch, serialise).
//! 2. Reconcile: 100 jwt policies reconciled against an instantly answering fake API (and a
//!    loopback OpenID issuer), one after the other; p50/p99 and total.
//!
//! `cargo run -p mcp-warden-operator --example bench_operator [-- REVIEWS]`. Use `--release`
//! for figures comparable with a deployed operator; a debug build is several times slower.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Namespace;
use mcp_warden_operator::caches::Caches;
use mcp_warden_operator::inject::InjectSettings;
use mcp_warden_operator::kubelets::NativeDefault;
use mcp_warden_operator::metrics::Metrics;
use mcp_warden_operator::reconcile::{Context, Settings, reconcile};
use mcp_warden_operator::webhook::{WebhookState, answer_deadline, router};
use mcp_warden_operator::{certs, install_crypto_provider};
use mcp_warden_policy::McpAuthPolicy;
use serde_json::{Value, json};
use tower::ServiceExt;

fn policy(name: &str, issuer: &str) -> McpAuthPolicy {
    serde_json::from_value(json!({
        "apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
        "metadata": {"name": name, "namespace": "tools", "uid": format!("uid-{name}"),
                     "generation": 1},
        "spec": {"resource": {"url": "https://mcp.example.com/mcp"}, "mode": "jwt",
                 "jwt": {"issuer": issuer}}
    }))
    .unwrap()
}

fn review(labels: Value, annotations: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "tools", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "mcp-7d9c-", "labels": labels,
                             "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "mcp:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}]}},
            "dryRun": false
        }
    }))
    .unwrap()
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

/// CPU time of this process so far (user + system; Linux), for a figure that other load on the
/// machine distorts less than wall-clock percentiles.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 (utime, stime), counted after the command name; 100 ticks per second.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A client for code that must make no API request: every request fails loudly.
fn no_api() -> kube::Client {
    let service = tower::service_fn(|req: Request<kube::client::Body>| async move {
        panic!("unexpected API request {} {}", req.method(), req.uri());
        #[allow(unreachable_code)]
        Ok::<Response<kube::client::Body>, Infallible>(Response::new(kube::client::Body::empty()))
    });
    kube::Client::new(service, "default")
}

/// A fake API that answers everything at once: writes echo their body, lists are empty.
fn instant_api() -> kube::Client {
    let service = tower::service_fn(|req: Request<kube::client::Body>| async move {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let reply = match parts.method.as_str() {
            "GET" => json!({"kind": "List", "apiVersion": "v1",
                            "metadata": {"resourceVersion": "1"}, "items": []}),
            _ => {
                let mut body = body;
                if body.get("metadata").is_none() {
                    // A status patch: answer with a whole policy.
                    body["metadata"] = json!({"name": "echo"});
                    body["spec"] = json!({"resource": {"url": "https://mcp.example.com/mcp"},
                        "mode": "jwt", "jwt": {"issuer": "https://login.example.com"}});
                }
                body
            }
        };
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(kube::client::Body::from(Bytes::from(
                    serde_json::to_vec(&reply).unwrap(),
                )))
                .unwrap(),
        )
    });
    kube::Client::new(service, "default")
}

async fn issuer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let meta = json!({"issuer": url, "jwks_uri": format!("{url}/jwks"),
        "authorization_endpoint": format!("{url}/auth"), "token_endpoint": format!("{url}/token"),
        "response_types_supported": ["code"]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let meta = meta.clone();
                async move { axum::Json(meta) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async {
                axum::Json(json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn admission(reviews: usize) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "tools",
        "labels": {"mcpwarden.dev/injection": "enabled"}}}))
    .unwrap();
    let state = WebhookState {
        client: no_api(),
        caches: Caches::from_objects(
            vec![policy("corp-sso", "https://login.example.com")],
            vec![namespace],
        ),
        settings: Arc::new(InjectSettings::default()),
        native: NativeDefault::Fixed(true),
        metrics: Metrics::new(),
        deadline: answer_deadline(5),
    };
    let names = vec!["127.0.0.1".to_owned()];
    let (bundle, _) = certs::ensure(
        None,
        &names,
        k8s_openapi::jiff::Timestamp::now().as_second(),
    )
    .unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        bundle.cert_pem.clone().into(),
        bundle.key_pem.clone().into(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/mutate-pods", listener.local_addr().unwrap());
    let app = router(state.clone());
    tokio::spawn(
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.clone().into_make_service()),
    );
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let cases = [
        (
            "injection",
            review(
                json!({"app": "mcp", "mcpwarden.dev/inject": "true"}),
                json!({"mcpwarden.dev/policy": "corp-sso"}),
            ),
        ),
        (
            "pass-through (namespace opt-in, no policy)",
            review(json!({"app": "mcp"}), json!({})),
        ),
    ];
    println!("admission, {reviews} sequential reviews per case (ms):");
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "case", "https p50", "https p99", "handler p50", "handler p99", "handler CPU"
    );
    for (name, body) in &cases {
        for _ in 0..100 {
            let res = client.post(&url).body(body.clone()).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
        }
        let mut https = Vec::with_capacity(reviews);
        for _ in 0..reviews {
            let start = Instant::now();
            let res = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let out = res.bytes().await.unwrap();
            https.push(start.elapsed());
            assert!(out.starts_with(b"{"));
        }
        let mut handler = Vec::with_capacity(reviews);
        let cpu = cpu_time();
        for _ in 0..reviews {
            let req = http::Request::post("/mutate-pods")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let start = Instant::now();
            let res = app.clone().oneshot(req).await.unwrap();
            let _ = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            handler.push(start.elapsed());
        }
        let cpu_each = (cpu_time() - cpu).as_secs_f64() * 1000.0 / reviews as f64;
        let (hp50, hp99) = percentiles(https);
        let (op50, op99) = percentiles(handler);
        println!("{name:<44} {hp50:>10.3} {hp99:>10.3} {op50:>12.3} {op99:>12.3} {cpu_each:>12.3}");
    }
}

async fn reconciles(count: usize) {
    let issuer = issuer().await;
    let ctx = Arc::new(Context::new(
        instant_api(),
        Metrics::new(),
        Settings::default(),
    ));
    let policies: Vec<Arc<McpAuthPolicy>> = (0..count)
        .map(|i| Arc::new(policy(&format!("policy-{i}"), &issuer)))
        .collect();
    // Warm-up: connection pools, first-use costs.
    reconcile(policies[0].clone(), ctx.clone()).await.unwrap();
    let mut each = Vec::with_capacity(count);
    let all = Instant::now();
    for p in &policies {
        let start = Instant::now();
        reconcile(p.clone(), ctx.clone()).await.unwrap();
        each.push(start.elapsed());
    }
    let total = all.elapsed();
    let (p50, p99) = percentiles(each);
    println!(
        "reconcile, {count} jwt policies one after the other (fake API answering at once, \
         loopback issuer): total {:.1} ms, per policy p50 {p50:.3} ms, p99 {p99:.3} ms",
        total.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    install_crypto_provider();
    let reviews = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    admission(reviews).await;
    reconciles(100).await;
}
