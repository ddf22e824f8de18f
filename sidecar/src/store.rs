//! The OAuth proxy's state store: byte values under string keys, every key with a TTL.
//!
//! Two backends implement [`Store`]: Redis (standalone, sentinel or cluster; shared by all
//! replicas) and an in-memory map (local runs and a single replica). Callers namespace their keys
//! with [`key`], which puts a policy's keys in one Redis Cluster slot.

mod memory;
mod metered;
mod rate_limit;
mod redis;
mod redis_config;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mcp_warden_policy::RedisSpec;
use prometheus_client::registry::Registry;

pub use memory::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryStore};
pub use metered::{Metered, Op, OpLabels, StoreMetrics};
pub use rate_limit::{Decision, RateLimiter};
pub use redis::RedisStore;
pub use redis_config::RedisTarget;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time. Endpoints answer 503 with
    /// `Retry-After` ([`StoreError::retry_after`]) instead of hanging or losing state.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something this code did not write (wrong type, bad encoding).
    #[error("state store returned unexpected data: {0}")]
    Corrupt(String),
    /// The store configuration is unusable (bad URL, missing secret, inconsistent mode).
    #[error("state store configuration: {0}")]
    Config(String),
    /// The caller asked for something the store cannot do (a zero TTL).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The store refused the write because it is full (the in-memory store's bound, bytes).
    #[error("state store is full (budget {0} bytes)")]
    Full(usize),
}

impl StoreError {
    /// Seconds a client should wait before retrying, for the `Retry-After` header of a 503.
    pub fn retry_after(&self) -> u64 {
        match self {
            StoreError::Unavailable(_) | StoreError::Full(_) => 5,
            StoreError::Corrupt(_) | StoreError::Config(_) | StoreError::Invalid(_) => 30,
        }
    }
}

/// Byte values under string keys, every key with a TTL. Keys are namespaced by the caller
/// (see [`key`]). Implementations are shared as `Arc<dyn Store>` across tasks and replicas.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `value` under `key`, replacing any previous value, expiring after `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Stores only when `key` is absent (`SET NX`): true when stored. Locks, first writer wins.
    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Like [`Store::put`], for writes that start something new (a client registration, a
    /// cached client document). A bounded store refuses these with [`StoreError::Full`] before
    /// it is full, keeping room for flows already under way.
    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.put(key, value, ttl).await
    }

    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Atomic get-and-delete (`GETDEL`) for single-use codes and states: of two concurrent
    /// takers exactly one receives the value.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `key`; absent keys are not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Atomic compare-and-set: replaces the value with `new` (and its TTL with `ttl`) only when
    /// the current value equals `expected`; returns whether it swapped. A missing key never
    /// swaps. Used for refresh-token rotation across replicas.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Fixed-window counter: increments `key`, starting a `window`-long TTL on the first
    /// increment; returns the new count.
    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError>;

    /// Counts a request in the fixed-window counter `counter` (as [`Store::incr`], when given)
    /// and reads `keys` (as [`Store::get`]), in one round trip where the backend allows: a
    /// request's rate-limit check and the records it needs. Returns the new count and the values
    /// in the order of `keys`.
    async fn count_and_get(
        &self,
        counter: Option<(&str, Duration)>,
        keys: &[&str],
    ) -> Result<(Option<u64>, Vec<Option<Vec<u8>>>), StoreError> {
        let count = match counter {
            Some((key, window)) => Some(self.incr(key, window).await?),
            None => None,
        };
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok((count, values))
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Appends `entry` to the log under `key` (a Redis stream), keeping entries for `keep`:
    /// older ones are dropped (approximately, so readers check their own expiry), and the whole
    /// log expires `keep` after its last append.
    async fn append(&self, key: &str, entry: &[u8], keep: Duration) -> Result<(), StoreError>;

    /// At most `max` entries of the log under `key` appended after `after` (`None`: from the
    /// oldest kept), oldest first, with the cursor of the last one returned (`after` when none).
    async fn read_log(
        &self,
        key: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<LogBatch, StoreError>;
}

/// Entries read from a log ([`Store::read_log`]).
#[derive(Debug, Default)]
pub struct LogBatch {
    /// The entries, oldest first.
    pub entries: Vec<Vec<u8>>,
    /// Where the next read continues.
    pub cursor: Option<String>,
}

/// A store key for one policy: `mcpw:{<namespace>/<policy>}:<kind>:<id>`.
///
/// The braces are a Redis Cluster hash tag, so all keys of one policy live in one slot (a Lua
/// script or transaction may touch several of them). `kind` is a short fixed word (`client`,
/// `code`, `refresh`, …); `id` is any string (opaque ids, hashes).
pub fn key(namespace: &str, policy: &str, kind: &str, id: &str) -> String {
    format!("mcpw:{{{namespace}/{policy}}}:{kind}:{id}")
}

/// Rejects TTLs Redis cannot express (`PX 0`): every key must expire, and not instantly.
fn check_ttl(ttl: Duration) -> Result<(), StoreError> {
    if ttl < Duration::from_millis(1) {
        return Err(StoreError::Invalid(format!(
            "TTL must be at least 1 ms, got {ttl:?}"
        )));
    }
    Ok(())
}

/// Opens the store a policy asks for and wraps it with metrics registered in `registry`
/// (`mcp_warden_store_operation_duration_seconds{op}`, `mcp_warden_store_errors_total{op}`).
///
/// `None` gives the in-memory store, with a warning that state is neither shared between
/// replicas nor kept over restarts. Redis connections are made lazily and re-made after Redis
/// restarts, so an unreachable Redis at start-up is logged, not fatal; a configuration error
/// (bad URL, unreadable password secret) is.
pub async fn connect(
    spec: Option<&RedisSpec>,
    secrets_dir: &Path,
    registry: &mut Registry,
) -> Result<Arc<dyn Store>, StoreError> {
    let metrics = StoreMetrics::register(registry);
    open(spec, secrets_dir, &metrics, DEFAULT_MAX_BYTES).await
}

/// Like [`connect`], with metric families registered earlier (a policy reload opens a new store
/// but must not register the families twice) and the in-memory store's byte budget.
pub async fn open(
    spec: Option<&RedisSpec>,
    secrets_dir: &Path,
    metrics: &StoreMetrics,
    memory_bytes: usize,
) -> Result<Arc<dyn Store>, StoreError> {
    let inner: Arc<dyn Store> = match spec {
        None => {
            tracing::warn!(
                "no spec.storage.redis: OAuth state is kept in memory, lost on restart and not \
                 shared between replicas; run a single replica or configure Redis"
            );
            MemoryStore::with_budget(DEFAULT_MAX_ENTRIES, memory_bytes)
        }
        Some(spec) => {
            let target = RedisTarget::from_spec(spec, secrets_dir)?;
            let store = RedisStore::open(&target)?;
            match store.ping().await {
                Ok(()) => tracing::info!(target = %target, "connected to Redis"),
                Err(e) => tracing::warn!(
                    target = %target,
                    error = %e,
                    "Redis is not reachable yet; OAuth endpoints answer 503 until it is"
                ),
            }
            Arc::new(store)
        }
    };
    Ok(Arc::new(Metered::new(inner, metrics.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_cluster_slot_per_policy() {
        assert_eq!(
            key("tools", "github", "code", "abc"),
            "mcpw:{tools/github}:code:abc"
        );
        // Redis Cluster hashes only the text between the first `{` and the next `}`.
        let tag = |k: &str| {
            let open = k.find('{').unwrap();
            let close = open + k[open..].find('}').unwrap();
            k[open + 1..close].to_owned()
        };
        assert_eq!(
            tag(&key("tools", "github", "refresh", "{x}")),
            "tools/github"
        );
        assert_ne!(
            tag(&key("tools", "github", "c", "1")),
            tag(&key("tools", "gitlab", "c", "1"))
        );
    }

    #[test]
    fn outages_ask_clients_to_retry_soon() {
        assert_eq!(StoreError::Unavailable("down".into()).retry_after(), 5);
        assert_eq!(StoreError::Full(10).retry_after(), 5);
        assert_eq!(StoreError::Corrupt("x".into()).retry_after(), 30);
    }
}
