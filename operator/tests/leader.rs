//! Leader election on a Lease, against a mock API server.

mod support;

use std::time::Duration;

use mcp_warden_operator::leader::LeaseLock;
use serde_json::json;
use support::mock_client;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/mcp-warden/leases/mcp-warden-operator";

fn lock(client: kube::Client) -> LeaseLock {
    LeaseLock::new(
        client,
        "mcp-warden",
        "mcp-warden-operator",
        "pod-a",
        Duration::from_secs(15),
    )
}

fn lease(holder: &str, renewed: &str) -> serde_json::Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "mcp-warden-operator", "namespace": "mcp-warden", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 3}})
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (client, mut api) = mock_client();
    let l = lock(client);
    let attempt = tokio::spawn(async move { l.try_acquire().await.unwrap() });
    api.expect("GET", LEASE).await.not_found();
    let created = api
        .expect(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/mcp-warden/leases",
        )
        .await;
    assert_eq!(created.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(created.body["spec"]["leaseDurationSeconds"], 15);
    created.echo();
    assert!(attempt.await.unwrap());
    api.done().await;
}

#[tokio::test]
async fn respects_a_live_holder_and_takes_over_an_expired_one() {
    let (client, mut api) = mock_client();
    let l = lock(client);
    let now = k8s_openapi::jiff::Timestamp::now();
    let fresh = now.to_string();
    let l2 = l.clone();
    let attempt = tokio::spawn(async move { l2.try_acquire().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &fresh));
    assert!(!attempt.await.unwrap(), "pod-b holds a live lease");

    let stale = (now - k8s_openapi::jiff::SignedDuration::from_secs(60)).to_string();
    let l3 = l.clone();
    let attempt = tokio::spawn(async move { l3.try_acquire().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &stale));
    let replaced = api.expect("PUT", LEASE).await;
    assert_eq!(replaced.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(replaced.body["spec"]["leaseTransitions"], 4);
    assert_eq!(
        replaced.body["metadata"]["resourceVersion"], "7",
        "optimistic concurrency"
    );
    replaced.echo();
    assert!(attempt.await.unwrap());

    // Losing the race (409) is not leadership.
    let attempt = tokio::spawn(async move { l.try_acquire().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &stale));
    api.expect("PUT", LEASE).await.reply(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
               "reason": "Conflict", "message": "the object has been modified"}),
    );
    assert!(!attempt.await.unwrap());
    api.done().await;
}

#[tokio::test]
async fn release_hands_the_lease_over_only_when_held() {
    let (client, mut api) = mock_client();
    let l = lock(client);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let l2 = l.clone();
    let task = tokio::spawn(async move { l2.release().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-a", &now));
    let put = api.expect("PUT", LEASE).await;
    assert!(
        put.body["spec"]
            .get("holderIdentity")
            .is_none_or(|h| h.is_null())
    );
    assert_eq!(put.body["spec"]["leaseDurationSeconds"], 1);
    put.echo();
    task.await.unwrap();

    // Someone else's lease is left alone.
    let task = tokio::spawn(async move { l.release().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &now));
    task.await.unwrap();
    api.done().await;
}
