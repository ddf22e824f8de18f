//! Probes the Redis tests share: wait for a store to come back, check that it fails fast, and
//! measure latency under load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_warden_sidecar::store::{self, Store, StoreError};

/// Per-command timeout the Redis tests configure.
pub const TIMEOUT_MS: u32 = 500;

/// Polls until `store` answers again, returning how long that took.
pub async fn until_available(store: &Arc<dyn Store>, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => return started.elapsed(),
            Err(StoreError::Unavailable(_)) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("store did not come back within {within:?}: {e}"),
        }
    }
}

/// Every operation fails with `Unavailable`, each within the timeout plus scheduling slack.
pub async fn assert_unavailable(store: &Arc<dyn Store>) {
    let bound = Duration::from_millis(u64::from(TIMEOUT_MS) + 500);
    let minute = Duration::from_secs(60);
    let key = store::key("t", "p", "outage", "k");
    for (op, result) in [
        ("ping", store.ping().await.map(|_| ())),
        ("put", timed(bound, store.put(&key, b"v", minute)).await),
        ("get", timed(bound, store.get(&key)).await.map(|_| ())),
        ("take", timed(bound, store.take(&key)).await.map(|_| ())),
        (
            "cas",
            timed(bound, store.compare_and_swap(&key, b"a", b"b", minute))
                .await
                .map(|_| ()),
        ),
        (
            "incr",
            timed(bound, store.incr(&key, minute)).await.map(|_| ()),
        ),
        (
            "put_if_absent",
            timed(bound, store.put_if_absent(&key, b"v", minute))
                .await
                .map(|_| ()),
        ),
    ] {
        match result {
            Err(StoreError::Unavailable(msg)) => assert!(!msg.is_empty(), "{op}"),
            other => panic!("{op} while Redis is down: expected Unavailable, got {other:?}"),
        }
    }
}

/// Awaits `fut`, failing the test if it takes longer than `bound` (a hang, not an error).
pub async fn timed<T>(
    bound: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let out = fut.await;
    assert!(
        started.elapsed() <= bound,
        "operation took {:?}, bound {bound:?}",
        started.elapsed()
    );
    out
}

/// Like [`until_available`], but needs a write to succeed (a demoted master still answers PING).
pub async fn until_available_for_writes(store: &Arc<dyn Store>, within: Duration) -> Duration {
    let started = Instant::now();
    let key = store::key("t", "p", "probe", "w");
    loop {
        match store.put(&key, b"x", Duration::from_secs(5)).await {
            Ok(()) => return started.elapsed(),
            Err(StoreError::Unavailable(_)) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no writable master within {within:?}: {e}"),
        }
    }
}

/// Puts and takes `rounds` keys from each of 16 tasks; returns (ops per second, p50, p99).
pub async fn load(store: Arc<dyn Store>, rounds: usize) -> (f64, Duration, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(rounds * 2);
                for i in 0..rounds {
                    let key = store::key("load", "p", "code", &format!("{t}-{i}"));
                    let op = Instant::now();
                    store
                        .put(&key, b"authorization-code-record", Duration::from_secs(60))
                        .await
                        .unwrap();
                    latencies.push(op.elapsed());
                    let op = Instant::now();
                    assert!(store.take(&key).await.unwrap().is_some());
                    latencies.push(op.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    (
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    )
}
