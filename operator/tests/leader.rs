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

/// The attempt's result; an attempt that went on to write (and waits for an answer) fails.
async fn settle(t: tokio::task::JoinHandle<bool>) -> bool {
    tokio::time::timeout(Duration::from_millis(100), t)
        .await
        .expect("the attempt took the lease over (it is waiting for its PUT)")
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn expiry_is_judged_by_local_observation_not_the_remote_clock() {
    let (client, mut api) = mock_client();
    let l = lock(client);
    // pod-b's renewTime is a minute old by our clock (its node's clock is behind, or ours is
    // ahead): that alone must not count as expired. We first see the record now.
    let skewed = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(60))
    .to_string();
    let attempt = |l: &LeaseLock| {
        let l = l.clone();
        tokio::spawn(async move { l.try_acquire().await.unwrap() })
    };
    let t = attempt(&l);
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &skewed));
    assert!(!settle(t).await, "first sight of the record: live for 15 s");

    // pod-b renews (the record changes): the 15 s start again from this sighting.
    tokio::time::advance(Duration::from_secs(10)).await;
    let renewed = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(50))
    .to_string();
    let t = attempt(&l);
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &renewed));
    assert!(!settle(t).await);
    tokio::time::advance(Duration::from_secs(10)).await;
    let t = attempt(&l);
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &renewed));
    assert!(!settle(t).await, "unchanged for 10 s only");

    // Unchanged for a whole lease duration by our clock: taken over.
    tokio::time::advance(Duration::from_secs(6)).await;
    let t = attempt(&l);
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &renewed));
    let replaced = api.expect("PUT", LEASE).await;
    assert_eq!(replaced.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(replaced.body["spec"]["leaseTransitions"], 4);
    assert_eq!(
        replaced.body["metadata"]["resourceVersion"], "7",
        "optimistic concurrency"
    );
    replaced.echo();
    assert!(t.await.unwrap());

    // Losing the race (409) is not leadership.
    let t = attempt(&l);
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &renewed));
    api.expect("PUT", LEASE).await.reply(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
               "reason": "Conflict", "message": "the object has been modified"}),
    );
    assert!(!t.await.unwrap());
    drop(l);
    api.done().await;
}

#[tokio::test]
async fn a_fresh_looking_lease_from_a_dead_holder_still_expires() {
    // A renewTime in the future (the holder's clock is ahead) would keep the remote-clock
    // comparison waiting for ever; observed time expires it after one lease duration.
    let (client, mut api) = mock_client();
    let l = lock(client);
    let future = (k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(3600))
    .to_string();
    tokio::time::pause();
    let l2 = l.clone();
    let t = tokio::spawn(async move { l2.try_acquire().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &future));
    assert!(!settle(t).await);
    tokio::time::advance(Duration::from_secs(16)).await;
    let l2 = l.clone();
    let t = tokio::spawn(async move { l2.try_acquire().await.unwrap() });
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &future));
    api.expect("PUT", LEASE).await.echo();
    assert!(t.await.unwrap());
    drop(l);
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn losing_the_lease_stops_the_work_and_makes_the_replica_a_candidate_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (client, mut api) = mock_client();
    let l = lock(client);
    let started = Arc::new(AtomicUsize::new(0));
    let leading = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, g) = (started.clone(), leading.clone());
    let elected = tokio::spawn(async move {
        mcp_warden_operator::leader::run_elected(
            &l,
            || {
                s.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>()
            },
            |now| g.lock().unwrap().push(now),
        )
        .await;
    });
    let now = || k8s_openapi::jiff::Timestamp::now().to_string();
    api.expect("GET", LEASE).await.not_found();
    api.expect(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/mcp-warden/leases",
    )
    .await
    .echo();
    // Renewal finds pod-b holding it (say after a long pause): the work stops.
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &now()));
    // ... and the replica keeps running as a candidate, polling the lease.
    api.expect("GET", LEASE)
        .await
        .reply(200, lease("pod-b", &now()));
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(*leading.lock().unwrap(), [true, false]);
    assert!(!elected.is_finished());
    elected.abort();
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
