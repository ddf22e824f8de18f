//! The operator binary with an unreachable API server: the admin server comes up first and
//! stays up, `/readyz` fails, `/metrics` lists the operator families.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod fixtures;

use fixtures::{Kill, free_port};

#[tokio::test]
async fn admin_server_stays_up_without_kubernetes() {
    let dir = std::env::temp_dir().join(format!("mcpw-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n",
            free_port()
        ),
    )
    .unwrap();
    let admin = free_port();
    let _child = Kill(
        Command::new(env!("CARGO_BIN_EXE_mcp-warden-operator"))
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--webhook-listen", &format!("127.0.0.1:{}", free_port())])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(res) = client.get(format!("{base}/healthz")).send().await
            && res.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "admin server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still up after the first API attempts failed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "mcp_warden_operator_reconcile_total{result=\"ok\"} 0",
        "mcp_warden_operator_injections_total{result=\"injected\"} 0",
        "# TYPE mcp_warden_operator_reconcile_duration_seconds histogram",
        "# TYPE mcp_warden_operator_webhook_duration_seconds histogram",
        "# TYPE mcp_warden_operator_certificate_expiry_timestamp_seconds gauge",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sidecar resources the API server would refuse in every injected pod stop the operator at
/// start-up, before it admits anything.
#[test]
fn refuses_sidecar_requests_above_their_limits() {
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_mcp-warden-operator"))
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--webhook-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--sidecar-memory-request", "256Mi", "--log-format", "text"])
            .env("KUBECONFIG", "/nonexistent")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the operator kept running with a sidecar request above its limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("--sidecar-memory-request 256Mi is above --sidecar-memory-limit 128Mi"),
        "{stderr}"
    );
}
