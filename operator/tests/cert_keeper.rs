//! The certificate keeper against a mock API server: it watches the MutatingWebhookConfiguration
//! and repairs its caBundle at once, and the bundle it writes is always the TLS Secret's, even
//! when this replica cannot load the Secret's new certificate.

mod support;

use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mcp_warden_operator::cert_rotation::{Keeper, RETRY_INTERVAL};
use mcp_warden_operator::certs::{self, TlsBundle};
use mcp_warden_operator::metrics::Metrics;
use mcp_warden_operator::webhook_config::{Endpoint, NAMES_ANNOTATION, webhook_configuration};
use serde_json::{Value, json};
use support::{ApiServer, mock_client};

const SECRET: &str = "/api/v1/namespaces/mcp-warden/secrets/mcp-warden-webhook-tls";
const CONFIG: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mcp-warden";
const CONFIGS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn endpoint() -> Endpoint {
    Endpoint::Service {
        name: "mcp-warden-webhook".into(),
        namespace: "mcp-warden".into(),
    }
}

fn bundle() -> TlsBundle {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    certs::ensure(None, &endpoint().certificate_names(), now)
        .unwrap()
        .0
}

fn keeper(client: kube::Client) -> Keeper {
    Keeper {
        client,
        namespace: "mcp-warden".into(),
        secret: "mcp-warden-webhook-tls".into(),
        configuration: "mcp-warden".into(),
        endpoint: endpoint(),
        register: false,
        timeout_seconds: 5,
        metrics: Metrics::new(),
    }
}

/// The configuration as the chart makes it, trusting `ca`.
fn config(ca: &str) -> Value {
    let mut config = serde_json::to_value(webhook_configuration(
        "mcp-warden",
        &endpoint(),
        "mcp-warden",
        ca,
        5,
    ))
    .unwrap();
    config["metadata"]["resourceVersion"] = json!("3");
    config
}

fn secret(b: &TlsBundle) -> Value {
    let enc = |s: &str| STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "mcp-warden-webhook-tls", "namespace": "mcp-warden",
                     "resourceVersion": "5",
                     "annotations": {NAMES_ANNOTATION: b.names.join(",")}},
        "type": "kubernetes.io/tls",
        "data": {"ca.crt": enc(&b.ca_pem), "ca.key": enc(&b.ca_key_pem),
                 "tls.crt": enc(&b.cert_pem), "tls.key": enc(&b.key_pem)}})
}

fn bundles_of(config: &Value) -> Vec<String> {
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let b = h["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            String::from_utf8(STANDARD.decode(b).unwrap()).unwrap()
        })
        .collect()
}

async fn start(b: &TlsBundle) -> (ApiServer, tokio::task::JoinHandle<()>) {
    mcp_warden_operator::install_crypto_provider();
    let (client, api) = mock_client();
    let tls = RustlsConfig::from_pem(b.cert_pem.clone().into(), b.key_pem.clone().into())
        .await
        .unwrap();
    let task = tokio::spawn(keeper(client).run(b.clone(), tls));
    (api, task)
}

/// The watch's first LIST, answered with `config`.
async fn list(api: &mut ApiServer, config: Value) {
    let listed = api.expect("GET", CONFIGS).await;
    assert!(
        listed
            .uri
            .contains("fieldSelector=metadata.name%3Dmcp-warden"),
        "only this release's configuration is watched: {}",
        listed.uri
    );
    listed.reply(
        200,
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "MutatingWebhookConfigurationList",
               "metadata": {"resourceVersion": "9"}, "items": [config]}),
    );
}

#[tokio::test]
async fn a_wiped_ca_bundle_is_repaired_at_once() {
    let b = bundle();
    let (mut api, task) = start(&b).await;
    // Start-up: the bundle is already in place.
    api.expect("GET", CONFIG)
        .await
        .reply(200, config(&b.ca_pem));
    // Then `helm upgrade` (or a GitOps sync) wipes it; the watch reports that.
    list(&mut api, config("")).await;
    // Repaired without waiting for the hourly check: the Secret is re-read, the bundle written.
    api.expect("GET", SECRET).await.reply(200, secret(&b));
    api.expect("GET", CONFIG).await.reply(200, config(""));
    let put = api.expect("PUT", CONFIG).await;
    assert_eq!(bundles_of(&put.body), [b.ca_pem.clone(), b.ca_pem.clone()]);
    put.echo();
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_never_puts_an_older_bundle_back() {
    let old = bundle();
    let (mut api, task) = start(&old).await;
    api.expect("GET", CONFIG)
        .await
        .reply(200, config(&old.ca_pem));

    // Another replica renewed the CA: the Secret holds the new CA (plus the old one) and a new
    // serving certificate — whose key this replica cannot load.
    let mut renewed = bundle();
    renewed.ca_pem = format!("{}{}", renewed.ca_pem, old.ca_pem);
    renewed.key_pem = "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n".into();
    // That replica published the new bundle; the watch shows it.
    list(&mut api, config(&renewed.ca_pem)).await;
    api.expect("GET", SECRET).await.reply(200, secret(&renewed));
    // The reload fails, and the new bundle stays: no write of the old one.
    api.expect("GET", CONFIG)
        .await
        .reply(200, config(&renewed.ca_pem));
    // Retried 30 s later (not in an hour), with the same outcome.
    let mut watches = Vec::new();
    let retry = tokio::time::timeout(RETRY_INTERVAL + Duration::from_secs(1), async {
        loop {
            let seen = api.expect_any().await;
            if !seen.uri.contains("watch=true") {
                return seen;
            }
            watches.push(seen);
        }
    })
    .await
    .expect("a failed reload is retried within 30 s");
    assert_eq!(retry.uri, SECRET);
    retry.reply(200, secret(&renewed));
    let check = api.expect("GET", CONFIG).await;
    check.reply(200, config(&renewed.ca_pem));
    // Nothing else: in particular no PUT of the old bundle.
    let next = tokio::time::timeout(Duration::from_secs(5), api.expect_any()).await;
    if let Ok(seen) = next {
        assert_ne!(seen.method, "PUT", "wrote a caBundle: {}", seen.body);
    }
    task.abort();
}
