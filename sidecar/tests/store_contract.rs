//! The same store contract against the in-memory store and real Redis (a `redis-server` started
//! by the test on a free loopback port), plus Redis outages, ACL credentials, sentinel failover
//! and cluster.

#[path = "store/contract.rs"]
mod contract;
#[path = "store/probes.rs"]
mod probes;
#[path = "store/redis_server.rs"]
mod redis_server;
#[path = "store/stall_proxy.rs"]
mod stall_proxy;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_warden_policy::{RedisMode, RedisSpec, SecretRef};
use mcp_warden_sidecar::store::{self, MemoryStore, Store, StoreError};
use probes::{TIMEOUT_MS, assert_unavailable, load, until_available, until_available_for_writes};
use prometheus_client::registry::Registry;
use redis_server::{Cluster, RedisServer};

type Guard = Box<dyn Any + Send>;

fn spec(url: String) -> RedisSpec {
    RedisSpec {
        url,
        mode: RedisMode::Standalone,
        extra_nodes: vec![],
        sentinel_master: None,
        username: None,
        password_secret_ref: None,
        timeout_millis: TIMEOUT_MS,
    }
}

async fn open(spec: &RedisSpec) -> Arc<dyn Store> {
    store::connect(
        Some(spec),
        Path::new("/nonexistent"),
        &mut Registry::default(),
    )
    .await
    .expect("open Redis store")
}

async fn memory() -> (Arc<dyn Store>, Guard) {
    (MemoryStore::new(10_000), Box::new(()))
}

async fn redis() -> (Arc<dyn Store>, Guard) {
    let server = RedisServer::start();
    let store = open(&spec(server.url())).await;
    (store, Box::new(server))
}

macro_rules! contract_tests {
    ($backend:ident, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = super::$backend().await;
                    super::contract::$case(store).await;
                }
            )*
        }
    };
}

contract_tests!(
    memory,
    [
        values_round_trip,
        put_new_stores_like_put,
        entries_expire,
        rejects_zero_ttl,
        put_if_absent_first_writer_wins,
        take_is_single_use,
        compare_and_swap_is_atomic,
        incr_counts_per_window,
        count_and_get_counts_and_reads,
        log_reads_each_entry_once_in_order,
    ]
);

contract_tests!(
    redis,
    [
        values_round_trip,
        put_new_stores_like_put,
        entries_expire,
        rejects_zero_ttl,
        put_if_absent_first_writer_wins,
        take_is_single_use,
        compare_and_swap_is_atomic,
        incr_counts_per_window,
        count_and_get_counts_and_reads,
        log_reads_each_entry_once_in_order,
    ]
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_then_restarted() {
    let mut server = RedisServer::start();
    let mut registry = Registry::default();
    let store = store::connect(
        Some(&spec(server.url())),
        Path::new("/nonexistent"),
        &mut registry,
    )
    .await
    .unwrap();
    let key = store::key("t", "p", "code", "1");
    store
        .put(&key, b"before", Duration::from_secs(60))
        .await
        .unwrap();

    server.stop();
    assert_unavailable(&store).await;
    // Still failing fast on repeated attempts (reconnects must not pile up into a hang).
    assert_unavailable(&store).await;

    server.restart();
    let took = until_available(&store, Duration::from_secs(10)).await;
    eprintln!("store available again {took:?} after Redis restarted");
    // No persistence in this test server: the restart lost the data, the store reports absence.
    assert_eq!(store.get(&key).await.unwrap(), None);
    store
        .put(&key, b"after", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.take(&key).await.unwrap().as_deref(),
        Some(&b"after"[..])
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let errors = |op: &str| -> u64 {
        let prefix = format!("mcp_warden_store_errors_total{{op=\"{op}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(errors("put"), 2, "the two failed puts were counted");
    assert!(errors("ping") >= 2, "failed pings counted");
    assert_eq!(errors("take"), 2);
    assert!(
        text.contains("mcp_warden_store_operation_duration_seconds_count{op=\"take\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_answers_unavailable_within_the_timeout() {
    let server = RedisServer::start();
    let store = open(&spec(server.url())).await;
    let key = store::key("t", "p", "state", "1");
    store
        .put(&key, b"v", Duration::from_secs(60))
        .await
        .unwrap();

    server.signal("-STOP");
    let timeout = Duration::from_millis(TIMEOUT_MS.into());
    for _ in 0..3 {
        let started = Instant::now();
        let result = store.get(&key).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            took >= timeout - Duration::from_millis(50)
                && took <= timeout + Duration::from_millis(500),
            "a hung Redis must cost the timeout ({timeout:?}), took {took:?}"
        );
        eprintln!("hung Redis: Unavailable after {took:?}");
    }
    server.signal("-CONT");
    until_available(&store, Duration::from_secs(10)).await;
    assert_eq!(
        store.take(&key).await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "state survived the stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connection_gone_silent_is_replaced() {
    let server = RedisServer::start();
    let proxy = stall_proxy::StallProxy::start(server.port).await;
    let store = open(&spec(format!("redis://127.0.0.1:{}", proxy.port))).await;
    let key = store::key("t", "p", "client", "1");
    store
        .put(&key, b"v", Duration::from_secs(60))
        .await
        .unwrap();
    let connections = proxy.accepted();

    proxy.stall_existing();
    let started = Instant::now();
    let result = store.get(&key).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    eprintln!(
        "silent connection: Unavailable after {:?}",
        started.elapsed()
    );
    // The timeout counts as a connection failure: the store dials again instead of waiting on
    // the dead connection forever.
    let took = until_available(&store, Duration::from_secs(5)).await;
    eprintln!("new connection serving after {took:?}");
    assert!(proxy.accepted() > connections, "a new connection was made");
    assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn no_redis_configured_means_the_memory_store() {
    let mut registry = Registry::default();
    let store = store::connect(None, Path::new("/nonexistent"), &mut registry)
        .await
        .unwrap();
    contract::take_is_single_use(store).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("mcp_warden_store_operation_duration_seconds_count{op=\"take\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up_is_not_fatal() {
    let port = redis_server::free_port();
    let store = open(&spec(format!("redis://127.0.0.1:{port}"))).await;
    assert_unavailable(&store).await;
    // Now Redis comes up on that port: the same store starts working without a restart.
    let _server = RedisServer::start_on(port, &[]);
    until_available(&store, Duration::from_secs(10)).await;
    store.put("k", b"v", Duration::from_secs(5)).await.unwrap();
}

fn write_secret(dir: &Path, name: &str, key: &str, value: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join(key), format!("{value}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acl_user_with_password_from_secret() {
    // One `--user` directive per rule set; each token a separate argument.
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "warden",
        "on",
        ">s3cret-pass",
        "~mcpw:*",
        "+@all",
    ]);
    let secrets = server.dir().join("secrets");
    write_secret(&secrets, "redis-auth", "password", "s3cret-pass");
    write_secret(&secrets, "redis-auth", "wrong", "nope");

    let mut good = spec(server.url());
    good.username = Some("warden".into());
    good.password_secret_ref = Some(SecretRef {
        name: "redis-auth".into(),
        key: "password".into(),
    });
    let store = store::connect(Some(&good), &secrets, &mut Registry::default())
        .await
        .unwrap();
    let key = store::key("ns", "pol", "client", "c1");
    store
        .put(&key, b"registered", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"registered"[..])
    );

    let mut wrong = good.clone();
    wrong.password_secret_ref = Some(SecretRef {
        name: "redis-auth".into(),
        key: "wrong".into(),
    });
    let store = store::connect(Some(&wrong), &secrets, &mut Registry::default())
        .await
        .unwrap();
    assert!(
        matches!(store.get(&key).await, Err(StoreError::Unavailable(_))),
        "wrong password is refused"
    );

    let mut anonymous = good.clone();
    anonymous.username = None;
    anonymous.password_secret_ref = None;
    let store = open(&anonymous).await;
    assert!(
        matches!(store.get(&key).await, Err(StoreError::Unavailable(_))),
        "no credentials, no access"
    );

    let mut missing = good.clone();
    missing.password_secret_ref = Some(SecretRef {
        name: "redis-auth".into(),
        key: "absent".into(),
    });
    match store::connect(Some(&missing), &secrets, &mut Registry::default()).await {
        Err(StoreError::Config(msg)) => assert!(msg.contains("passwordSecretRef"), "{msg}"),
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("a missing password secret must not open a store"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_contract_and_survives_a_restart() {
    let mut cluster = Cluster::start();
    let mut spec = spec(cluster.nodes[0].url());
    spec.mode = RedisMode::Cluster;
    spec.extra_nodes = vec![format!("127.0.0.1:{}", cluster.nodes[1].port)];
    let store = open(&spec).await;
    contract::all(store.clone()).await;

    for node in &mut cluster.nodes {
        node.stop();
    }
    assert_unavailable(&store).await;
    // Restarted nodes find their cluster again from nodes.conf.
    for node in &mut cluster.nodes {
        node.restart();
    }
    let took = until_available_for_writes(&store, Duration::from_secs(20)).await;
    eprintln!("cluster writable again {took:?} after its nodes restarted");
    contract::take_is_single_use(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_follows_a_failover() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinel = RedisServer::sentinel("warden", master.port);

    let mut spec = spec(sentinel.url());
    spec.mode = RedisMode::Sentinel;
    spec.sentinel_master = Some("warden".into());
    let store = open(&spec).await;
    contract::values_round_trip(store.clone()).await;
    contract::take_is_single_use(store.clone()).await;
    let key = store::key("t", "p", "client", "before");
    store
        .put(&key, b"1", Duration::from_secs(60))
        .await
        .unwrap();

    master.stop();
    let took = until_available_for_writes(&store, Duration::from_secs(30)).await;
    eprintln!("writes accepted again {took:?} after the master died");
    let after = store::key("t", "p", "client", "after");
    store
        .put(&after, b"2", Duration::from_secs(60))
        .await
        .unwrap();
    let on_replica = redis_server::command(replica.port, &["GET", &after]).unwrap();
    assert!(
        on_replica.contains("\r\n2\r\n"),
        "the write went to the promoted replica: {on_replica:?}"
    );
}

/// Environment of the TLS child test: the `rediss://` URL to use.
const TLS_URL_ENV: &str = "MCPW_TEST_REDISS_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_verifies_the_server_certificate() {
    let pki = redis_server::TestPki::generate();
    let server = RedisServer::start_tls(&pki);
    let url = format!("rediss://localhost:{}", server.port);

    // This process trusts only the system roots: the test CA's certificate is refused.
    let store = open(&spec(url.clone())).await;
    match store.ping().await {
        Err(StoreError::Unavailable(msg)) => eprintln!("untrusted certificate refused: {msg}"),
        other => panic!("a certificate from an unknown CA must be refused, got {other:?}"),
    }

    // A child process that trusts the test CA (SSL_CERT_FILE, read by the native root store)
    // passes the whole contract over TLS. Setting the variable in this process would need
    // `unsafe` (edition 2024), hence the child.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tls_child_passes_the_contract",
            "--ignored",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", pki.file("ca.pem"))
        .env(TLS_URL_ENV, &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "TLS child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by redis_tls_verifies_the_server_certificate with SSL_CERT_FILE set"]
async fn tls_child_passes_the_contract() {
    let url =
        std::env::var(TLS_URL_ENV).expect("run through redis_tls_verifies_the_server_certificate");
    contract::all(open(&spec(url)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_latency_under_concurrent_load() {
    let server = RedisServer::start();
    for (name, store) in [
        (
            "memory",
            store::connect(None, Path::new("/nonexistent"), &mut Registry::default())
                .await
                .unwrap(),
        ),
        ("redis", open(&spec(server.url())).await),
    ] {
        let (rate, p50, p99) = load(store, 500).await;
        eprintln!("{name}: {rate:.0} ops/s, p50 {p50:?}, p99 {p99:?} (16 tasks, put+take)");
        // Loose bound for a shared 2-core machine: far below the 500 ms command timeout.
        assert!(p99 < Duration::from_millis(100), "{name}: p99 {p99:?}");
    }
}
