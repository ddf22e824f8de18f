//! The reconciler against a mock API server that checks every request it makes, with a real
//! loopback issuer (and a dead one).

#[path = "fake/api.rs"]
mod fake_api;
mod support;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use mcp_warden_operator::metrics::Metrics;
use mcp_warden_operator::reconcile::{Context, Settings, error_policy, reconcile};
use mcp_warden_policy::{McpAuthPolicy, PolicyDocument};
use serde_json::{Value, json};
use support::{ApiServer, Seen, dead_url, issuer, mock_client};

const NS: &str = "tools";

fn jwt_policy(issuer: &str, status: Option<Value>) -> McpAuthPolicy {
    let mut v = json!({
        "apiVersion": "mcpwarden.dev/v1alpha1",
        "kind": "McpAuthPolicy",
        "metadata": {"name": "corp-sso", "namespace": NS, "uid": "1234-5678", "generation": 2},
        "spec": {
            "resource": {"url": "https://mcp.example.com/mcp"},
            "mode": "jwt",
            "jwt": {"issuer": issuer}
        }
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).unwrap()
}

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Metrics::new(),
        Settings {
            issuer_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    ))
}

fn pod(name: &str, phase: &str, status_annotation: Option<&str>) -> Value {
    let mut annotations = json!({});
    if let Some(a) = status_annotation {
        annotations["mcpwarden.dev/status"] = json!(a);
    }
    json!({"metadata": {"name": name, "namespace": NS, "annotations": annotations,
            "labels": {"mcpwarden.dev/policy": "corp-sso"}},
           "spec": {"containers": [
               {"name": "app", "ports": [{"name": "app-http", "containerPort": 8000}]},
               {"name": "mcp-warden", "ports": [{"name": "http", "containerPort": 8001},
                                                {"name": "warden-admin", "containerPort": 9090}]}
           ]},
           "status": {"phase": phase}})
}

fn owner_ok(body: &Value) {
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "McpAuthPolicy");
    assert_eq!(owner["uid"], "1234-5678");
    assert_eq!(owner["controller"], true);
}

/// ConfigMap, pod list, NetworkPolicy: the steps every healthy reconciliation takes.
async fn expect_render_steps(api: &mut ApiServer, issuer: &str) {
    let cm = api
        .expect(
            "PATCH",
            "/api/v1/namespaces/tools/configmaps/mcp-warden-corp-sso",
        )
        .await;
    assert!(
        cm.uri.contains("fieldManager=mcp-warden-operator"),
        "{}",
        cm.uri
    );
    assert!(cm.uri.contains("force=true"));
    owner_ok(&cm.body);
    k8s_rules::assert_valid(&cm.body);
    assert_eq!(
        (&cm.body["apiVersion"], &cm.body["kind"]),
        (&json!("v1"), &json!("ConfigMap"))
    );
    assert_eq!(
        cm.body["metadata"]["labels"]["mcpwarden.dev/policy"],
        "corp-sso"
    );
    let rendered = cm.body["data"]["policy.yaml"].as_str().unwrap();
    let doc = PolicyDocument::from_yaml(rendered).unwrap();
    assert_eq!(doc.metadata.name, "corp-sso");
    assert_eq!(doc.spec.jwt.unwrap().issuer, issuer);
    cm.echo();

    let pods = api.expect("GET", "/api/v1/namespaces/tools/pods").await;
    assert!(
        pods.uri
            .contains("labelSelector=mcpwarden.dev%2Fpolicy%3Dcorp-sso"),
        "{}",
        pods.uri
    );
    pods.reply(
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
            pod("a", "Running", Some(r#"{"port":8001,"adminPort":9090}"#)),
            pod("b", "Succeeded", None),
        ]}),
    );

    let np = api
        .expect(
            "PATCH",
            "/apis/networking.k8s.io/v1/namespaces/tools/networkpolicies/mcp-warden-corp-sso",
        )
        .await;
    owner_ok(&np.body);
    k8s_rules::assert_valid(&np.body);
    assert_eq!(np.body["apiVersion"], "networking.k8s.io/v1");
    // By name, the sidecar's only: never the app's 8000.
    let ports: Vec<&str> = np.body["spec"]["ingress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["http", "mcp-warden", "warden-admin"]);
    assert_eq!(
        np.body["spec"]["podSelector"]["matchLabels"]["mcpwarden.dev/policy"],
        "corp-sso"
    );
    np.echo();
}

/// No pod is bound yet, and with `--network-policy=false` the reconciler deletes a
/// NetworkPolicy an earlier setting left (none here).
async fn expect_no_bound_pods(api: &mut ApiServer) {
    api.expect("GET", "/api/v1/namespaces/tools/pods")
        .await
        .reply(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        );
    api.expect(
        "DELETE",
        "/apis/networking.k8s.io/v1/namespaces/tools/networkpolicies/mcp-warden-corp-sso",
    )
    .await
    .not_found();
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

async fn expect_status(api: &mut ApiServer, policy: &McpAuthPolicy) -> Value {
    let seen: Seen = api
        .expect(
            "PATCH",
            "/apis/mcpwarden.dev/v1alpha1/namespaces/tools/mcpauthpolicies/corp-sso/status",
        )
        .await;
    assert!(seen.uri.contains("fieldManager=mcp-warden-operator"));
    assert_eq!(seen.body["apiVersion"], "mcpwarden.dev/v1alpha1");
    assert_eq!(seen.body["kind"], "McpAuthPolicy");
    let status = seen.body["status"].clone();
    let mut whole = serde_json::to_value(policy).unwrap();
    whole["status"] = status.clone();
    seen.reply(200, whole);
    status
}

async fn expect_events(api: &mut ApiServer, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ev = api
            .expect("POST", "/apis/events.k8s.io/v1/namespaces/tools/events")
            .await;
        assert_eq!(ev.body["regarding"]["name"], "corp-sso");
        out.push((
            ev.body["type"].as_str().unwrap().to_owned(),
            ev.body["reason"].as_str().unwrap().to_owned(),
        ));
        ev.echo();
    }
    out.sort();
    out
}

#[tokio::test]
async fn create_renders_config_and_reports_ready() {
    let idp = issuer().await;
    let (client, mut api) = mock_client();
    let policy = jwt_policy(&idp.url, None);
    let ctx = context(client);
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    expect_render_steps(&mut api, &idp.url).await;
    let status = expect_status(&mut api, &policy).await;
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "IssuerReachable")["reason"], "Reachable");
    assert_eq!(condition(&status, "ConfigRendered")["status"], "True");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 2);
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(
        status["boundWorkloads"], 1,
        "the finished pod does not count"
    );
    assert_eq!(status["configMap"], "mcp-warden-corp-sso");
    assert_eq!(status["configHash"].as_str().unwrap().len(), 16);
    let events = expect_events(&mut api, 3).await;
    assert_eq!(
        events,
        [
            ("Normal".into(), "Reachable".into()),
            ("Normal".into(), "Ready".into()),
            ("Normal".into(), "Rendered".into())
        ]
    );
    let action = run.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let text = ctx.metrics.encode();
    assert!(
        text.contains(r#"mcp_warden_operator_reconcile_total{result="ok"} 1"#),
        "{text}"
    );
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn issuer_down_is_a_condition_and_requeues_soon() {
    let dead = dead_url().await;
    let (client, mut api) = mock_client();
    let policy = jwt_policy(&dead, None);
    let ctx = context(client);
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    expect_render_steps(&mut api, &dead).await;
    let status = expect_status(&mut api, &policy).await;
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("IssuerUnreachable"))
    );
    let issuer = condition(&status, "IssuerReachable");
    assert_eq!(issuer["reason"], "DiscoveryFailed");
    assert!(
        issuer["message"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{issuer}"
    );
    let events = expect_events(&mut api, 3).await;
    assert!(
        events.contains(&("Warning".into(), "IssuerUnreachable".into())),
        "{events:?}"
    );
    assert_eq!(
        run.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn update_keeps_transition_times_and_sends_no_events() {
    let idp = issuer().await;
    let (client, mut api) = mock_client();
    let cond = |t: &str, r: &str| {
        json!({"type": t, "status": "True", "reason": r, "message": "old",
               "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
    };
    let old_status = json!({"observedGeneration": 1, "boundWorkloads": 1, "conditions": [
        cond("Ready", "Ready"), cond("ConfigRendered", "Rendered"), cond("IssuerReachable", "Reachable")
    ]});
    let policy = jwt_policy(&idp.url, Some(old_status));
    let ctx = context(client);
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    expect_render_steps(&mut api, &idp.url).await;
    let status = expect_status(&mut api, &policy).await;
    for c in status["conditions"].as_array().unwrap() {
        assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z", "{c}");
        assert_eq!(c["observedGeneration"], 2);
    }
    run.await.unwrap().unwrap();
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn invalid_spec_becomes_a_condition_without_touching_children() {
    let (client, mut api) = mock_client();
    let mut policy = jwt_policy("https://login.example.com", None);
    policy.spec.jwt = None;
    let ctx = context(client);
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    let status = expect_status(&mut api, &policy).await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.jwt: required")
    );
    let events = expect_events(&mut api, 2).await;
    assert!(events.contains(&("Warning".into(), "InvalidSpec".into())));
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    assert!(
        ctx.metrics
            .encode()
            .contains(r#"mcp_warden_operator_reconcile_total{result="invalid"} 1"#)
    );
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn oauth_proxy_creates_the_keys_secret() {
    let (client, mut api) = mock_client();
    let policy: McpAuthPolicy = serde_json::from_value(json!({
        "apiVersion": "mcpwarden.dev/v1alpha1",
        "kind": "McpAuthPolicy",
        "metadata": {"name": "corp-sso", "namespace": NS, "uid": "1234-5678", "generation": 1},
        "spec": {
            "resource": {"url": "https://mcp.example.com/mcp"},
            "mode": "oauthProxy",
            "oauthProxy": {"provider": "github", "clientId": "abc",
                           "clientSecretRef": {"name": "gh", "key": "secret"},
                           "access": {"anyAuthenticatedUser": true}}
        }
    }))
    .unwrap();
    let ctx = Arc::new(Context::new(
        client,
        Metrics::new(),
        Settings {
            network_policy: false,
            ..Default::default()
        },
    ));
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    api.expect(
        "GET",
        "/api/v1/namespaces/tools/secrets/mcp-warden-corp-sso-keys",
    )
    .await
    .not_found();
    let secret = api
        .expect(
            "PATCH",
            "/api/v1/namespaces/tools/secrets/mcp-warden-corp-sso-keys",
        )
        .await;
    owner_ok(&secret.body);
    k8s_rules::assert_valid(&secret.body);
    use base64::Engine;
    let b64 = |k: &str| {
        let raw = secret.body["data"][k].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap(),
        )
        .unwrap()
    };
    // The first key is active at once; every key names its activation time.
    let pem = b64("signing.pem");
    assert!(pem.starts_with("# active-at: "), "{pem}");
    assert_eq!(pem.matches("-----BEGIN PRIVATE KEY-----").count(), 1);
    let enc = b64("encryption.keys");
    assert_eq!(enc.lines().count(), 2);
    assert!(enc.starts_with("# active-at: "), "{enc}");
    secret.echo();
    let ev = api
        .expect("POST", "/apis/events.k8s.io/v1/namespaces/tools/events")
        .await;
    assert_eq!(ev.body["reason"], "KeysRotated");
    ev.echo();
    let cm = api
        .expect(
            "PATCH",
            "/api/v1/namespaces/tools/configmaps/mcp-warden-corp-sso",
        )
        .await;
    let doc = PolicyDocument::from_yaml(cm.body["data"]["policy.yaml"].as_str().unwrap()).unwrap();
    let proxy = doc.spec.oauth_proxy.unwrap();
    assert_eq!(
        proxy.signing_key_secret_ref.unwrap().name,
        "mcp-warden-corp-sso-keys"
    );
    cm.echo();
    expect_no_bound_pods(&mut api).await;
    let status = expect_status(&mut api, &policy).await;
    assert_eq!(condition(&status, "IssuerReachable")["status"], "Unknown");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("in memory"),
        "{status}"
    );
    expect_events(&mut api, 3).await;
    run.await.unwrap().unwrap();
    drop(ctx);
    api.done().await;
}

fn github_policy() -> McpAuthPolicy {
    serde_json::from_value(json!({
        "apiVersion": "mcpwarden.dev/v1alpha1",
        "kind": "McpAuthPolicy",
        "metadata": {"name": "corp-sso", "namespace": NS, "uid": "1234-5678", "generation": 1},
        "spec": {
            "resource": {"url": "https://mcp.example.com/mcp"},
            "mode": "oauthProxy",
            "oauthProxy": {"provider": "github", "clientId": "abc",
                           "clientSecretRef": {"name": "gh", "key": "secret"},
                           "access": {"anyAuthenticatedUser": true}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn an_unreadable_keys_secret_is_reported_not_replaced() {
    let (client, mut api) = mock_client();
    let policy = github_policy();
    let ctx = Arc::new(Context::new(
        client,
        Metrics::new(),
        Settings {
            network_policy: false,
            ..Default::default()
        },
    ));
    let run = tokio::spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    api.expect(
        "GET",
        "/api/v1/namespaces/tools/secrets/mcp-warden-corp-sso-keys",
    )
    .await
    .reply(
        200,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "mcp-warden-corp-sso-keys", "namespace": NS},
               "data": {"signing.pem": b64("-----BEGIN PRIVATE KEY-----\ntruncated"),
                        "encryption.keys": b64("k1:AAAA\n")}}),
    );
    // No PATCH of the Secret: the next request is the ConfigMap.
    api.expect(
        "PATCH",
        "/api/v1/namespaces/tools/configmaps/mcp-warden-corp-sso",
    )
    .await
    .echo();
    expect_no_bound_pods(&mut api).await;
    let status = expect_status(&mut api, &policy).await;
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("KeysUnreadable"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("mcp-warden-corp-sso-keys"),
        "{ready}"
    );
    let events = expect_events(&mut api, 3).await;
    assert!(
        events.contains(&("Warning".to_owned(), "KeysUnreadable".to_owned())),
        "{events:?}"
    );
    run.await.unwrap().unwrap();
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn deleted_policy_is_left_to_the_garbage_collector() {
    let (client, api) = mock_client();
    let mut policy = jwt_policy("https://login.example.com", None);
    policy.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let ctx = context(client);
    let action = reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn api_errors_are_retried_with_growing_backoff() {
    let (client, mut api) = mock_client();
    let policy = Arc::new(jwt_policy("https://login.example.com", None));
    let ctx = context(client);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let run = tokio::spawn(reconcile(policy.clone(), ctx.clone()));
        api.expect(
            "PATCH",
            "/api/v1/namespaces/tools/configmaps/mcp-warden-corp-sso",
        )
        .await
        .reply(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
                       "reason": "InternalError", "message": "etcd timeout"}),
        );
        // The failure is in the status too, not only in the operator's log.
        let status = expect_status(&mut api, &policy).await;
        let ready = condition(&status, "Ready");
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("ApiError"))
        );
        assert!(ready["message"].as_str().unwrap().contains("etcd timeout"));
        // A Warning Event (the recorder folds the repeats into the first one).
        let event = api.expect_any().await;
        assert!(event.uri.contains("/events"), "{}", event.uri);
        event.echo();
        let err = run.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("etcd timeout"), "{err}");
        delays.push(error_policy(policy.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert!(
        ctx.metrics
            .encode()
            .contains(r#"mcp_warden_operator_reconcile_total{result="error"} 3"#)
    );
    drop(ctx);
    api.done().await;
}

fn dynamic(spec: Value) -> Arc<kube::api::DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "mcpwarden.dev/v1alpha1",
            "kind": "McpAuthPolicy",
            "metadata": {"name": "corp-sso", "namespace": NS, "uid": "1234-5678", "generation": 3},
            "spec": spec
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn fields_of_a_newer_version_are_reported_and_nothing_is_rendered() {
    use mcp_warden_operator::reconcile::reconcile_object;
    let (client, mut api) = mock_client();
    let ctx = context(client);
    let object = dynamic(json!({
        "resource": {"url": "https://mcp.example.com/mcp"},
        "mode": "jwt",
        "jwt": {"issuer": "https://login.example.com", "futureRestriction": {"x": 1}}
    }));
    let run = tokio::spawn(reconcile_object(object, ctx.clone()));
    // No ConfigMap: the status is the first and only write.
    let policy = jwt_policy("https://login.example.com", None);
    let status = expect_status(&mut api, &policy).await;
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("UnknownFields"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.jwt.futureRestriction"),
        "{ready}"
    );
    assert_eq!(status["observedGeneration"], 3);
    expect_events(&mut api, 1).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn an_unreadable_policy_fails_alone_with_a_condition() {
    use mcp_warden_operator::reconcile::reconcile_object;
    let (client, mut api) = mock_client();
    let ctx = context(client);
    let object = dynamic(json!({"resource": {"url": 42}, "mode": "jwt"}));
    let run = tokio::spawn(reconcile_object(object, ctx.clone()));
    let policy = jwt_policy("https://login.example.com", None);
    let status = expect_status(&mut api, &policy).await;
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("Unreadable"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("spec.resource.url"), "{message}");
    expect_events(&mut api, 1).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    drop(ctx);
    api.done().await;
}

#[tokio::test]
async fn a_rollout_does_not_flood_the_issuer() {
    // A 100-pod rollout reconciles the policy about 100 times (pod events); the issuer sees
    // one discovery and one JWKS request, not 200.
    let idp = issuer().await;
    let (client, mut api) = mock_client();
    let ctx = context(client);
    let policy = jwt_policy(&idp.url, None);
    let whole = serde_json::to_value(&policy).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let seen = api.expect_any().await;
            if seen.method == "GET" && seen.uri.contains("/pods") {
                seen.reply(
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
                );
            } else if seen.uri.contains("/status") {
                let mut reply = whole.clone();
                reply["status"] = seen.body["status"].clone();
                seen.reply(200, reply);
            } else {
                seen.echo();
            }
        }
    });
    for _ in 0..100 {
        reconcile(Arc::new(policy.clone()), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(
        idp.requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one discovery and one JWKS request"
    );
    server.abort();
}

#[tokio::test]
async fn the_controller_reconciles_good_policies_next_to_one_it_cannot_read() {
    // Version skew: the API server lists a policy this operator cannot decode (a mode it does
    // not know) next to a good one. The controller's LIST must not fail: the good policy is
    // rendered and Ready, the broken one gets Ready=False (Unreadable, naming the field) and a
    // Warning Event, and nothing is rendered for it.
    let idp = issuer().await;
    let fake = fake_api::FakeApi::default();
    let policies = "/apis/mcpwarden.dev/v1alpha1/namespaces/tools/mcpauthpolicies";
    let mut good = serde_json::to_value(jwt_policy(&idp.url, None)).unwrap();
    good["metadata"]["resourceVersion"] = json!("1");
    let mut broken = good.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["metadata"]["uid"] = json!("8765-4321");
    broken["spec"]["mode"] = json!("mtls");
    fake.put(&format!("{policies}/corp-sso"), good);
    fake.put(&format!("{policies}/broken"), broken);
    let url = fake.start().await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let ctx = context(client);
    let controller = tokio::spawn(mcp_warden_operator::reconcile::run(ctx.clone()));
    let ready = |name: &str| {
        let object = fake.get(&format!("{policies}/{name}"))?;
        let status = object.get("status")?;
        Some(condition(status, "Ready").clone())
    };
    let warning = || {
        fake.log().into_iter().find(|r| {
            r.method == "POST"
                && r.path.ends_with("/events")
                && r.body["regarding"]["name"] == "broken"
        })
    };
    let (good_ready, broken_ready, warning) =
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let (Some(g), Some(b), Some(w)) = (ready("corp-sso"), ready("broken"), warning())
                {
                    break (g, b, w);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both policies get a status, and the broken one an Event");
    controller.abort();
    assert_eq!(
        (&good_ready["status"], &good_ready["reason"]),
        (&json!("True"), &json!("Ready")),
        "{good_ready}"
    );
    assert!(
        fake.get("/api/v1/namespaces/tools/configmaps/mcp-warden-corp-sso")
            .is_some()
    );
    assert_eq!(
        (&broken_ready["status"], &broken_ready["reason"]),
        (&json!("False"), &json!("Unreadable")),
        "{broken_ready}"
    );
    let message = broken_ready["message"].as_str().unwrap();
    assert!(message.contains("spec.mode"), "{message}");
    assert!(
        fake.get("/api/v1/namespaces/tools/configmaps/mcp-warden-broken")
            .is_none()
    );
    k8s_rules::assert_valid(&warning.body);
    assert_eq!(
        (&warning.body["type"], &warning.body["reason"]),
        (&json!("Warning"), &json!("Unreadable"))
    );
}
