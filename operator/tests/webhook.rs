//! The webhook handler with real `admission.k8s.io/v1` AdmissionReview JSON in and out; the
//! policy and namespace reads go to a mock API server that checks each request.

mod support;

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http_body_util::BodyExt;
use mcp_warden_operator::inject::InjectSettings;
use mcp_warden_operator::metrics::Metrics;
use mcp_warden_operator::webhook::{WebhookState, router};
use serde_json::{Value, json};
use support::{ApiServer, mock_client};
use tower::ServiceExt;

fn review(operation: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "tools",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "mcp", "labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "mcp:1",
                                         "ports": [{"containerPort": 8080}]}]}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn state(client: kube::Client) -> WebhookState {
    WebhookState {
        client,
        settings: Arc::new(InjectSettings {
            sidecar_image: "ghcr.io/mcp-warden/mcp-warden-sidecar:test".into(),
            native_sidecar: true,
            ..Default::default()
        }),
        metrics: Metrics::new(),
    }
}

async fn call(state: WebhookState, body: Vec<u8>) -> Value {
    let res = router(state)
        .oneshot(
            http::Request::post("/mutate-pods")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    out
}

const POLICY: &str = "/apis/mcpwarden.dev/v1alpha1/namespaces/tools/mcpauthpolicies/corp-sso";

fn policy_json() -> Value {
    json!({
        "apiVersion": "mcpwarden.dev/v1alpha1",
        "kind": "McpAuthPolicy",
        "metadata": {"name": "corp-sso", "namespace": "tools"},
        "spec": {"resource": {"url": "https://mcp.example.com/mcp"}, "mode": "jwt",
                 "jwt": {"issuer": "https://login.example.com"}}
    })
}

async fn run(body: Value, script: impl AsyncFnOnce(&mut ApiServer)) -> (Value, String) {
    let (client, mut api) = mock_client();
    let st = state(client);
    let metrics = st.metrics.clone();
    let server = async move {
        script(&mut api).await;
        api
    };
    let (out, api) = tokio::join!(call(st, serde_json::to_vec(&body).unwrap()), server);
    api.done().await;
    (out["response"].clone(), metrics.encode())
}

#[tokio::test]
async fn opted_in_pod_gets_the_golden_patch() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let (res, metrics) = run(body.clone(), async |api| {
        api.expect("GET", POLICY).await.reply(200, policy_json());
    })
    .await;
    assert_eq!(res["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(res["allowed"], true);
    assert_eq!(res["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(res["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/plain-native.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(patch, golden["patch"]);
    // The submitted pod with the patch applied is one the API server accepts.
    let mut pod = body["request"]["object"].clone();
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod["metadata"]["namespace"] = json!("tools");
    k8s_rules::assert_valid(&pod);
    // The app port has no name: kubectl shows the admission warning.
    assert!(res["warnings"][0].as_str().unwrap().contains("has no name"));
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="injected"} 1"#));
    assert!(metrics.contains("mcp_warden_operator_webhook_duration_seconds_count 1"));
}

#[tokio::test]
async fn pod_outside_opted_in_namespaces_is_allowed_untouched() {
    let body = review("CREATE", json!({}), json!({}));
    let (res, metrics) = run(body, async |api| {
        api.expect("GET", "/api/v1/namespaces/tools").await.reply(
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "tools", "labels": {}}}),
        );
    })
    .await;
    assert_eq!(res["allowed"], true);
    assert!(res.get("patch").is_none());
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="skipped"} 1"#));
}

#[tokio::test]
async fn namespace_opt_in_without_policy_is_denied_clearly() {
    let body = review("CREATE", json!({}), json!({}));
    let (res, _) = run(body, async |api| {
        api.expect("GET", "/api/v1/namespaces/tools").await.reply(
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "tools", "labels": {"mcpwarden.dev/injection": "enabled"}}}),
        );
    })
    .await;
    assert_eq!(res["allowed"], false);
    let msg = res["status"]["message"].as_str().unwrap();
    assert!(msg.contains("no mcpwarden.dev/policy annotation"), "{msg}");
}

#[tokio::test]
async fn missing_policy_is_denied() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let (res, metrics) = run(body, async |api| {
        api.expect("GET", POLICY).await.not_found();
    })
    .await;
    assert_eq!(res["allowed"], false);
    assert!(
        res["status"]["message"]
            .as_str()
            .unwrap()
            .contains("tools/corp-sso")
    );
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="denied"} 1"#));
}

#[tokio::test]
async fn api_failure_fails_closed_for_opted_in_pods() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let (res, metrics) = run(body, async |api| {
        api.expect("GET", POLICY).await.reply(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
                   "reason": "InternalError", "message": "etcd down"}),
        );
    })
    .await;
    assert_eq!(res["allowed"], false);
    assert!(
        res["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read")
    );
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="error"} 1"#));
}

#[tokio::test]
async fn updates_and_garbage_are_not_mutated() {
    let body = review(
        "UPDATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let (res, _) = run(body, async |_| {}).await;
    assert_eq!(res["allowed"], true);
    assert!(res.get("patch").is_none());

    let (client, api) = mock_client();
    let out = call(state(client), b"{\"kind\": \"nonsense\"".to_vec()).await;
    assert_eq!(out["response"]["allowed"], false);
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_api_server_gets_a_denial_before_the_webhook_timeout() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let (client, mut api) = mock_client();
    let server = async move {
        // Take the request and never answer it.
        let seen = api.expect("GET", POLICY).await;
        (api, seen)
    };
    let (out, (_api, _seen)) = tokio::join!(
        call(state(client), serde_json::to_vec(&body).unwrap()),
        server
    );
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("within 8s")
    );
}
