//! The webhook's TLS Secret and caBundle against a mock API server.

mod support;

use mcp_warden_operator::certs;
use mcp_warden_operator::webhook_config::{
    Endpoint, load_or_renew, sync_ca_bundle, webhook_configuration,
};
use serde_json::json;
use support::mock_client;

const SECRET: &str = "/api/v1/namespaces/mcp-warden/secrets/mcp-warden-webhook-tls";
const CONFIG: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mcp-warden";

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn names() -> Vec<String> {
    certs::service_names("mcp-warden-webhook", "mcp-warden")
}

#[tokio::test]
async fn creates_the_secret_once_and_reuses_it() {
    let (client, mut api) = mock_client();
    let c = client.clone();
    let first = tokio::spawn(async move {
        load_or_renew(&c, "mcp-warden", "mcp-warden-webhook-tls", &names(), now()).await
    });
    api.expect("GET", SECRET).await.not_found();
    let created = api
        .expect("POST", "/api/v1/namespaces/mcp-warden/secrets")
        .await;
    assert_eq!(created.body["type"], "kubernetes.io/tls");
    k8s_rules::assert_valid(&created.body);
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(created.body["data"][key].is_string(), "{key}");
    }
    let stored = created.body.clone();
    created.echo();
    let bundle = first.await.unwrap().unwrap();

    // Another replica (or a restart) reads the same material and writes nothing.
    let c = client.clone();
    let second = tokio::spawn(async move {
        load_or_renew(&c, "mcp-warden", "mcp-warden-webhook-tls", &names(), now()).await
    });
    let mut existing = stored;
    existing["metadata"]["resourceVersion"] = json!("5");
    api.expect("GET", SECRET).await.reply(200, existing.clone());
    assert_eq!(second.await.unwrap().unwrap(), bundle);

    // Losing a create race to another replica: re-read and use the winner's Secret.
    let c = client.clone();
    let third = tokio::spawn(async move {
        load_or_renew(&c, "mcp-warden", "mcp-warden-webhook-tls", &names(), now()).await
    });
    api.expect("GET", SECRET).await.not_found();
    api.expect("POST", "/api/v1/namespaces/mcp-warden/secrets")
        .await
        .reply(
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "code": 409, "reason": "AlreadyExists", "message": "exists"}),
        );
    api.expect("GET", SECRET).await.reply(200, existing);
    assert_eq!(third.await.unwrap().unwrap(), bundle);
    drop(client);
    api.done().await;
}

#[tokio::test]
async fn patches_the_ca_bundle_of_every_webhook() {
    let (client, mut api) = mock_client();
    let endpoint = Endpoint::Service {
        name: "mcp-warden-webhook".into(),
        namespace: "mcp-warden".into(),
    };
    let mut config = serde_json::to_value(webhook_configuration(
        "mcp-warden",
        &endpoint,
        "mcp-warden",
        "",
        5,
    ))
    .unwrap();
    for hook in config["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
    }
    config["metadata"]["resourceVersion"] = json!("9");
    let c = client.clone();
    let task = tokio::spawn(async move { sync_ca_bundle(&c, "mcp-warden", "NEW-CA", None).await });
    api.expect("GET", CONFIG).await.reply(200, config.clone());
    let put = api.expect("PUT", CONFIG).await;
    for hook in put.body["webhooks"].as_array().unwrap() {
        // base64("NEW-CA")
        assert_eq!(hook["clientConfig"]["caBundle"], "TkVXLUNB");
    }
    assert_eq!(put.body["metadata"]["resourceVersion"], "9");
    let updated = put.body.clone();
    put.echo();
    task.await.unwrap().unwrap();

    // Already current: read only.
    let c = client.clone();
    let task = tokio::spawn(async move { sync_ca_bundle(&c, "mcp-warden", "NEW-CA", None).await });
    api.expect("GET", CONFIG).await.reply(200, updated);
    task.await.unwrap().unwrap();

    // Missing and not ours to create: a clear error.
    let c = client.clone();
    let task = tokio::spawn(async move { sync_ca_bundle(&c, "mcp-warden", "NEW-CA", None).await });
    api.expect("GET", CONFIG).await.not_found();
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("--webhook-url"), "{err}");

    // Development mode registers it by URL.
    let url = Endpoint::Url("https://192.168.1.5:9443/mutate-pods".parse().unwrap());
    let wanted = webhook_configuration("mcp-warden", &url, "default", "CA", 10);
    let c = client.clone();
    let task =
        tokio::spawn(async move { sync_ca_bundle(&c, "mcp-warden", "CA", Some(wanted)).await });
    api.expect("GET", CONFIG).await.not_found();
    let created = api
        .expect(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        )
        .await;
    assert_eq!(
        created.body["webhooks"][0]["clientConfig"]["url"],
        "https://192.168.1.5:9443/mutate-pods"
    );
    created.echo();
    task.await.unwrap().unwrap();
    drop(client);
    api.done().await;
}

#[test]
fn configuration_passes_the_api_server_rules() {
    let endpoints = [
        Endpoint::Service {
            name: "mcp-warden-webhook".into(),
            namespace: "mcp-warden".into(),
        },
        Endpoint::Url("https://127.0.0.1:9443/mutate-pods".parse().unwrap()),
    ];
    for endpoint in &endpoints {
        let config = webhook_configuration("mcp-warden", endpoint, "mcp-warden", "CA PEM", 10);
        k8s_rules::assert_valid(&serde_json::to_value(config).unwrap());
    }
}
