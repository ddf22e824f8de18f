//! The operator binary against a fake API server: SIGTERM while it leads, with a reconcile in
//! flight and an idle keep-alive HTTPS connection to its webhook. It must fail `/readyz` at
//! once, release the lease at once, keep answering admission during the drain period (also on
//! the idle connection), and then exit.

#[path = "fake/api.rs"]
mod fake_api;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use fake_api::FakeApi;
use serde_json::{Value, json};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/mcp-warden/leases/mcp-warden-operator";
const TLS_SECRET: &str = "/api/v1/namespaces/mcp-warden/secrets/mcp-warden-webhook-tls";

mod fixtures;

use fixtures::{Kill, free_port};

async fn eventually(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn opted_out_review() -> Value {
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "tools", "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"mcpwarden.dev/inject": "false"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
}

/// A fake cluster with one policy, and the operator binary leading it.
struct Running {
    api: FakeApi,
    child: Kill,
    admin: String,
    webhook: String,
    _dir: std::path::PathBuf,
}

async fn start_leader(api: FakeApi, extra: &[&str]) -> Running {
    api.put(
        "/apis/mcpwarden.dev/v1alpha1/namespaces/tools/mcpauthpolicies/corp-sso",
        json!({"apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
               "metadata": {"name": "corp-sso", "namespace": "tools", "uid": "u-1",
                            "generation": 1, "resourceVersion": "1"},
               "spec": {"resource": {"url": "https://mcp.example.com/mcp"}, "mode": "jwt",
                        "jwt": {"issuer": "https://login.example.com"}}}),
    );
    api.put(
        "/api/v1/namespaces/tools",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "tools", "resourceVersion": "1"}}),
    );
    let url = api.start().await;
    let dir = std::env::temp_dir().join(format!(
        "mcpw-shutdown-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = FakeApi::kubeconfig(&url, &dir);
    let (admin, webhook) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("operator.log")).unwrap();
    let child = Kill(
        Command::new(env!("CARGO_BIN_EXE_mcp-warden-operator"))
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--webhook-listen", &format!("127.0.0.1:{webhook}")])
            .args([
                "--webhook-url",
                &format!("https://127.0.0.1:{webhook}/mutate-pods"),
            ])
            .args(["--pod-name", "op-a", "--log-format", "text"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    Running {
        api,
        child,
        admin: format!("http://127.0.0.1:{admin}"),
        webhook: format!("https://127.0.0.1:{webhook}/mutate-pods"),
        _dir: dir,
    }
}

/// A client trusting only the webhook CA the operator stored in its Secret.
fn webhook_client(api: &FakeApi) -> reqwest::Client {
    let secret = api.get(TLS_SECRET).expect("TLS Secret stored");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ca.crt"].as_str().unwrap())
        .unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn released(r: &fake_api::Request) -> bool {
    r.method == "PUT"
        && r.path == LEASE
        && r.body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null)
}

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn sigterm_releases_the_lease_drains_the_webhook_and_exits() {
    mcp_warden_operator::install_crypto_provider();
    let mut op = start_leader(
        FakeApi::hanging_reconciles(),
        &["--shutdown-drain-seconds", "2"],
    )
    .await;
    let plain = reqwest::Client::new();
    let readyz = format!("{}/readyz", op.admin);
    let api = op.api.clone();
    eventually(
        "leadership and a reconcile in flight",
        Duration::from_secs(30),
        async || {
            api.saw(|r| r.method == "POST" && r.path.ends_with("/leases"))
                && api.saw(|r| r.method == "PATCH" && r.path.contains("/configmaps/"))
        },
    )
    .await;
    eventually("readiness", Duration::from_secs(20), async || {
        status(&plain, &readyz).await == Some(200)
    })
    .await;

    // One review over HTTPS; the connection then stays open, idle, in the client's pool.
    let hooks = webhook_client(&op.api);
    let res = hooks
        .post(&op.webhook)
        .json(&opted_out_review())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // And a TCP connection that never even starts TLS.
    let _silent = tokio::net::TcpStream::connect(
        op.webhook
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap(),
    )
    .await
    .unwrap();

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &op.child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // Not ready any more, yet still answering admission (on the idle connection too).
    eventually("/readyz failing", Duration::from_secs(5), async || {
        status(&plain, &readyz).await == Some(503)
    })
    .await;
    let res = hooks
        .post(&op.webhook)
        .json(&opted_out_review())
        .send()
        .await
        .expect("the webhook answers during the drain period");
    let review: Value = res.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], true);

    // The lease was handed back, with the reconcile still hanging in the fake API.
    eventually("the lease release", Duration::from_secs(5), async || {
        api.saw(released)
    })
    .await;

    // And the process ends, within 5 s of the signal.
    let code = loop {
        if let Some(code) = op.child.0.try_wait().unwrap() {
            break code;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit status {code}");
    println!("exited {:?} after SIGTERM", signalled.elapsed());
}

/// With nothing in flight the controller could stop first and the process exit without
/// handing the lease back (it did about every other time); repeated to catch that race.
#[tokio::test]
async fn an_idle_leader_always_hands_the_lease_over() {
    mcp_warden_operator::install_crypto_provider();
    for _ in 0..5 {
        let mut op = start_leader(FakeApi::default(), &["--shutdown-drain-seconds", "0"]).await;
        let api = op.api.clone();
        eventually(
            "leadership, and the controller idle",
            Duration::from_secs(30),
            async || api.saw(|r| r.method == "PATCH" && r.path.ends_with("/status")),
        )
        .await;
        let killed = Command::new("kill")
            .args(["-TERM", &op.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let code = tokio::task::spawn_blocking(move || {
            let code = op.child.0.wait().unwrap();
            (code, op)
        });
        let (code, op) = tokio::time::timeout(Duration::from_secs(10), code)
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(code.success(), "exit status {code}");
        assert!(op.api.saw(released), "the lease was not released");
    }
}
