//! Test helpers: a mock Kubernetes API (kube-rs tower-test pattern) that scripts each expected
//! request, and a real loopback OpenID issuer.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// The API-server side of a mock client.
pub struct ApiServer(pub Handle<Request<Body>, Response<Body>>);

/// A client whose every request lands in the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

/// One request the code under test made.
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// JSON body (Null when empty).
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Seen {
    /// A request taken from the mock directly (for tests that serve requests in any order).
    pub fn new(
        method: Method,
        uri: String,
        body: Value,
        send: SendResponse<Response<Body>>,
    ) -> Self {
        Self {
            method,
            uri,
            body,
            send,
        }
    }

    /// Answers with a JSON body.
    pub fn reply(self, status: u16, body: Value) {
        let res = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap();
        self.send.send_response(res);
    }

    /// Answers 200 with newline-separated JSON documents (the events of a WATCH), then ends the
    /// response.
    pub fn reply_events(self, events: &[Value]) {
        let mut body = Vec::new();
        for e in events {
            body.extend(serde_json::to_vec(e).unwrap());
            body.push(b'\n');
        }
        let res = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from(Bytes::from(body)))
            .unwrap();
        self.send.send_response(res);
    }

    /// Answers 200 with the request body (what server-side apply and create return).
    pub fn echo(self) {
        let body = self.body.clone();
        self.reply(200, body);
    }

    /// Answers 404 in the API's Status shape.
    pub fn not_found(self) {
        self.reply(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    }
}

impl ApiServer {
    /// Waits for the next request and checks its method and path (query ignored).
    pub async fn expect(&mut self, method: &str, path: &str) -> Seen {
        let (req, send) =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.0.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
                .unwrap_or_else(|| panic!("client gone; expected {method} {path}"));
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_eq!(
            (parts.method.as_str(), parts.uri.path()),
            (method, path),
            "unexpected request {} {}",
            parts.method,
            parts.uri
        );
        Seen {
            method: parts.method,
            uri: parts.uri.to_string(),
            body,
            send,
        }
    }

    /// Waits (without a time limit of its own) for the next request, whatever it is.
    pub async fn expect_any(&mut self) -> Seen {
        let (req, send) = self
            .0
            .next_request()
            .await
            .expect("client gone; expected a request");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Seen {
            method: parts.method,
            uri: parts.uri.to_string(),
            body,
            send,
        }
    }

    /// Asserts the client makes no further request (all its clones must be dropped).
    pub async fn done(mut self) {
        if let Some((req, _)) = self.0.next_request().await {
            panic!("unexpected extra request {} {}", req.method(), req.uri());
        }
    }
}

/// A real OpenID issuer on loopback serving discovery and a JWKS.
pub struct Issuer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Requests served so far.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the issuer.
pub async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let meta = json!({
        "issuer": url,
        "jwks_uri": format!("{url}/jwks"),
        "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
        "response_types_supported": ["code"],
    });
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
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            next.run(req)
        },
    ));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Issuer {
        url,
        requests,
        task,
    }
}

/// A loopback URL where nothing listens.
pub async fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}
