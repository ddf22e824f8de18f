//! The webhook handler with real `admission.k8s.io/v1` AdmissionReview JSON in and out. Policies
//! and namespaces come from watch caches; the mock API server checks that a review makes no
//! request at all when the caches hold the answer, and the one GET that confirms a miss.

mod support;

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use mcp_warden_operator::caches::Caches;
use mcp_warden_operator::inject::InjectSettings;
use mcp_warden_operator::kubelets::{Kubelets, NativeDefault};
use mcp_warden_operator::metrics::Metrics;
use mcp_warden_operator::webhook::{WebhookState, answer_deadline, router};
use mcp_warden_policy::McpAuthPolicy;
use serde_json::{Value, json};
use support::{ApiServer, Seen, mock_client};
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

fn namespace(labels: Value, annotations: Value) -> Namespace {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "tools", "labels": labels, "annotations": annotations}}))
    .unwrap()
}

fn plain_namespace() -> Namespace {
    namespace(json!({}), json!({}))
}

fn policy() -> McpAuthPolicy {
    serde_json::from_value(policy_json()).unwrap()
}

/// A webhook whose caches hold `policies` and `namespaces`.
fn state_with(
    client: kube::Client,
    policies: Vec<McpAuthPolicy>,
    namespaces: Vec<Namespace>,
) -> WebhookState {
    state_from(client, Caches::from_objects(policies, namespaces))
}

fn state_from(client: kube::Client, caches: Caches) -> WebhookState {
    WebhookState {
        client,
        caches,
        settings: Arc::new(InjectSettings {
            sidecar_image: "ghcr.io/mcp-warden/mcp-warden-sidecar:test".into(),
            ..Default::default()
        }),
        native: NativeDefault::Fixed(true),
        metrics: Metrics::new(),
        deadline: answer_deadline(5),
    }
}

fn state(client: kube::Client) -> WebhookState {
    state_with(client, vec![policy()], vec![plain_namespace()])
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
    run_with(body, state, script).await
}

async fn run_with(
    body: Value,
    make: impl FnOnce(kube::Client) -> WebhookState,
    script: impl AsyncFnOnce(&mut ApiServer),
) -> (Value, String) {
    let (client, mut api) = mock_client();
    let st = make(client);
    let metrics = st.metrics.clone();
    let server = async move {
        script(&mut api).await;
        api
    };
    let (out, api) = tokio::join!(call(st, serde_json::to_vec(&body).unwrap()), server);
    api.done().await;
    (out["response"].clone(), metrics.encode())
}

fn decode_patch(res: &Value) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(res["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn opted_in_pod_gets_the_golden_patch() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    // Served from the caches: the mock API sees no request at all.
    let (res, metrics) = run(body.clone(), async |_| {}).await;
    assert_eq!(res["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(res["allowed"], true);
    assert_eq!(res["patchType"], "JSONPatch");
    let patch = decode_patch(&res);
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
    // Only the namespace entry of the webhook configuration sends unlabelled pods, so a cache
    // saying "not opted in" may be behind: one GET confirms it.
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

fn opted_in_namespace(annotations: Value) -> impl FnOnce(kube::Client) -> WebhookState {
    move |client| {
        state_with(
            client,
            vec![policy()],
            vec![namespace(
                json!({"mcpwarden.dev/injection": "enabled"}),
                annotations,
            )],
        )
    }
}

#[tokio::test]
async fn namespace_opt_in_without_policy_admits_the_pod_unchanged_with_a_warning() {
    let body = review("CREATE", json!({}), json!({}));
    let (res, metrics) = run_with(body, opted_in_namespace(json!({})), async |_| {}).await;
    assert_eq!(res["allowed"], true);
    assert!(res.get("patch").is_none());
    let warning = res["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("mcpwarden.dev/default-policy"),
        "{warning}"
    );
    assert!(warning.contains("WITHOUT the auth sidecar"), "{warning}");
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="skipped"} 1"#));
}

#[tokio::test]
async fn namespace_default_policy_applies_to_pods_without_one() {
    let annotations = json!({"mcpwarden.dev/default-policy": "corp-sso"});
    for labels in [json!({}), json!({"mcpwarden.dev/inject": "true"})] {
        let body = review("CREATE", labels, json!({}));
        let (res, _) = run_with(body, opted_in_namespace(annotations.clone()), async |_| {}).await;
        assert_eq!(res["allowed"], true, "{res}");
        let patch = decode_patch(&res);
        assert!(
            patch
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/metadata/labels/mcpwarden.dev~1policy"
                    && op["value"] == "corp-sso"),
            "{patch}"
        );
    }
}

#[tokio::test]
async fn missing_policy_is_denied() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let empty = |client| state_with(client, vec![], vec![plain_namespace()]);
    let (res, metrics) = run_with(body, empty, async |api| {
        // A cache miss is confirmed once (the policy may have been created a moment ago).
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
async fn a_policy_fetched_after_a_cache_miss_that_cannot_be_read_is_denied_clearly() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let empty = |client| state_with(client, vec![], vec![plain_namespace()]);
    let (res, metrics) = run_with(body, empty, async |api| {
        let mut stored = policy_json();
        stored["spec"]["jwt"]["audiences"] = json!("not-a-list");
        api.expect("GET", POLICY).await.reply(200, stored);
    })
    .await;
    assert_eq!(res["allowed"], false);
    let message = res["status"]["message"].as_str().unwrap();
    assert!(message.contains("tools/corp-sso"), "{message}");
    assert!(message.contains("spec.jwt.audiences"), "{message}");
    assert!(metrics.contains(r#"mcp_warden_operator_injections_total{result="denied"} 1"#));
}

#[tokio::test]
async fn api_failure_fails_closed_for_opted_in_pods() {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let empty = |client| state_with(client, vec![], vec![plain_namespace()]);
    let (res, metrics) = run_with(body, empty, async |api| {
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
        call(
            state_with(client, vec![], vec![plain_namespace()]),
            serde_json::to_vec(&body).unwrap()
        ),
        server
    );
    assert_eq!(out["response"]["allowed"], false);
    // timeoutSeconds 5: the answer comes one second before the API server gives up.
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("within 4000 ms"), "{message}");
}

/// Answers the caches' initial LISTs (policies, namespaces; in either order) and keeps their
/// WATCHes open, returned so that they stay open.
async fn serve_listings(api: &mut ApiServer) -> Vec<Seen> {
    serve_listings_of(api, vec![policy_json()]).await
}

/// [`serve_listings`] with these policies in the policy LIST.
async fn serve_listings_of(api: &mut ApiServer, mut policies: Vec<Value>) -> Vec<Seen> {
    let mut open = Vec::new();
    let mut listed = 0;
    while listed < 2 {
        let (req, send) = api.0.next_request().await.expect("the caches list");
        let uri = req.uri().to_string();
        let seen = Seen::new(req.method().clone(), uri.clone(), Value::Null, send);
        if uri.contains("watch=true") {
            open.push(seen);
        } else if uri.starts_with("/apis/mcpwarden.dev/v1alpha1/mcpauthpolicies") {
            listed += 1;
            let policies = std::mem::take(&mut policies);
            seen.reply(
                200,
                json!({"apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicyList",
                       "metadata": {"resourceVersion": "10"}, "items": policies}),
            );
        } else if uri.starts_with("/api/v1/namespaces") {
            listed += 1;
            seen.reply(
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": {"resourceVersion": "10"},
                       "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                                  "metadata": {"name": "tools", "labels":
                                      {"mcpwarden.dev/injection": "enabled"}}}]}),
            );
        } else {
            panic!("unexpected request {uri}");
        }
    }
    open
}

#[tokio::test]
async fn reviews_are_answered_from_watch_caches_without_api_requests() {
    let (client, mut api) = mock_client();
    let (caches, drive) = Caches::watch(client.clone());
    let driver = tokio::spawn(drive);
    let _watches = serve_listings(&mut api).await;
    caches.wait_until_synced().await;
    assert!(caches.policy("tools", "corp-sso").is_some());
    let st = state_from(client, caches);
    // Namespace opt-in and the pod-label opt-in, many reviews: not one request reaches the API.
    for labels in [json!({}), json!({"mcpwarden.dev/inject": "true"})] {
        for _ in 0..3 {
            let body = review(
                "CREATE",
                labels.clone(),
                json!({"mcpwarden.dev/policy": "corp-sso"}),
            );
            let out = call(st.clone(), serde_json::to_vec(&body).unwrap()).await;
            assert_eq!(out["response"]["patchType"], "JSONPatch", "{out}");
        }
    }
    let next =
        tokio::time::timeout(std::time::Duration::from_millis(300), api.0.next_request()).await;
    if let Ok(Some((req, _))) = next {
        assert!(
            req.uri().to_string().contains("watch=true"),
            "a review reached the API server: {}",
            req.uri()
        );
    }
    driver.abort();
}

/// `policy_json()` renamed, with `spec` patched by `edit`.
fn policy_named(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut p = policy_json();
    p["metadata"]["name"] = json!(name);
    edit(&mut p["spec"]);
    p
}

/// What the webhook answers a pod naming policy `name`.
async fn review_naming(st: &WebhookState, name: &str) -> Value {
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": name}),
    );
    call(st.clone(), serde_json::to_vec(&body).unwrap()).await["response"].clone()
}

#[tokio::test]
async fn a_policy_this_operator_cannot_read_fails_alone() {
    // Version skew: the API server holds a policy this operator cannot decode (a mode it does
    // not know) next to a good one. The caches still sync, the good policy injects, and pods
    // naming the broken one are refused, naming the field, without an API request.
    let (client, mut api) = mock_client();
    let (caches, drive) = Caches::watch(client.clone());
    let driver = tokio::spawn(drive);
    let broken = policy_named("broken", |spec| spec["mode"] = json!("mtls"));
    let _watches = serve_listings_of(&mut api, vec![policy_json(), broken]).await;
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            caches.wait_until_synced()
        )
        .await
        .is_ok(),
        "the caches never synced"
    );
    // Later, the WATCH reports another unreadable policy and another good one.
    let mut held = Vec::new();
    let watch = loop {
        let seen = api.expect_any().await;
        if seen.uri.contains("mcpauthpolicies") && seen.uri.contains("watch=true") {
            break seen;
        }
        held.push(seen);
    };
    let mut late = policy_named("late", |spec| spec["resource"]["url"] = json!(42));
    late["metadata"]["resourceVersion"] = json!("11");
    let mut second = policy_named("second", |_| {});
    second["metadata"]["resourceVersion"] = json!("12");
    watch.reply_events(&[
        json!({"type": "ADDED", "object": late}),
        json!({"type": "ADDED", "object": second}),
    ]);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while caches.policy("tools", "second").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the WATCH event after the unreadable one reached the cache");
    let st = state_from(client, caches);
    for good in ["corp-sso", "second"] {
        let res = review_naming(&st, good).await;
        assert_eq!(res["patchType"], "JSONPatch", "{good}: {res}");
    }
    for (name, field) in [("broken", "spec.mode"), ("late", "spec.resource.url")] {
        let res = review_naming(&st, name).await;
        assert_eq!(res["allowed"], false, "{name}: {res}");
        let message = res["status"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("tools/{name}")), "{message}");
        assert!(message.contains(field), "{message}");
        assert!(message.contains("cannot read"), "{message}");
    }
    assert!(
        st.metrics
            .encode()
            .contains(r#"mcp_warden_operator_injections_total{result="denied"} 2"#)
    );
    // Every answer came from the caches: nothing but WATCHes reached the API server.
    let next =
        tokio::time::timeout(std::time::Duration::from_millis(300), api.0.next_request()).await;
    if let Ok(Some((req, _))) = next {
        assert!(
            req.uri().to_string().contains("watch=true"),
            "a review reached the API server: {}",
            req.uri()
        );
    }
    driver.abort();
}

#[tokio::test(start_paused = true)]
async fn before_the_caches_sync_opted_in_pods_are_refused_with_a_retryable_message() {
    let (client, mut api) = mock_client();
    let (caches, drive) = Caches::watch(client.clone());
    let driver = tokio::spawn(drive);
    // The API server never answers the LISTs.
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = api.0.next_request().await {
            held.push(r);
        }
    });
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let out = call(
        state_from(client, caches),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("has not yet read"), "{message}");
    assert!(message.contains("retried"), "{message}");
    driver.abort();
    held.abort();
}

fn job_review() -> Value {
    let mut body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    body["request"]["object"]["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": "nightly-28512345",
        "uid": "0b4c6e0e-1111-2222-3333-444455556666", "controller": true}]);
    body
}

#[tokio::test]
async fn job_pods_get_a_warning_when_the_sidecar_is_a_regular_container() {
    let never = |client| WebhookState {
        native: NativeDefault::Fixed(false),
        ..state(client)
    };
    let (res, _) = run_with(job_review(), never, async |_| {}).await;
    assert_eq!(res["allowed"], true);
    let warnings = res["warnings"].to_string();
    assert!(warnings.contains("Job's pod never completes"), "{warnings}");
    // A native sidecar ends with the Job: no warning about it.
    let (res, _) = run_with(job_review(), state, async |_| {}).await;
    assert!(!res["warnings"].to_string().contains("Job"), "{res}");
}

#[tokio::test]
async fn auto_native_sidecar_follows_the_oldest_kubelet() {
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher::Event;
    let node = |name: &str, version: &str| -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"nodeInfo": {"kubeletVersion": version, "architecture": "", "bootID": "",
                "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""}}}))
        .unwrap()
    };
    let kubelets = Kubelets::default();
    kubelets.apply(&Event::Init);
    kubelets.apply(&Event::InitApply(node("new", "v1.31.2")));
    kubelets.apply(&Event::InitApply(node("old", "v1.28.15")));
    kubelets.apply(&Event::InitDone);
    let body = review(
        "CREATE",
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
    );
    let auto = |k: Kubelets| {
        move |client| WebhookState {
            native: NativeDefault::Kubelets(k),
            ..state(client)
        }
    };
    let (res, _) = run_with(body.clone(), auto(kubelets.clone()), async |_| {}).await;
    let patch = decode_patch(&res).to_string();
    assert!(
        patch.contains("/spec/containers/1"),
        "1.28 node: regular container: {patch}"
    );
    assert!(!patch.contains("initContainers"), "{patch}");
    kubelets.apply(&Event::Delete(node("old", "v1.28.15")));
    let (res, _) = run_with(body, auto(kubelets), async |_| {}).await;
    let patch = decode_patch(&res).to_string();
    assert!(
        patch.contains("initContainers"),
        "all nodes 1.29+: native: {patch}"
    );
}
