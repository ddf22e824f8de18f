//! The OAuth proxy's state store: byte values under string keys, every key with a TTL.
//!
//! Two backends implement [`Store`]: Redis (standalone, sentinel or cluster; shared by all
//! replicas) and an in-memory map (local runs and a single replica). Callers namespace their keys
//! with [`key`], which puts a policy's keys in one Redis Cluster slot.

use std::time::Duration;

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
    /// The store refused the write because it is full (in-memory size bound).
    #[error("state store is full ({0} entries)")]
    Full(usize),
}

impl StoreError {
    /// Seconds a client should wait before retrying, for the `Retry-After` header of a 503.
    pub fn retry_after(&self) -> u64 {
        match self {
            StoreError::Unavailable(_) | StoreError::Full(_) => 5,
            StoreError::Corrupt(_) | StoreError::Config(_) => 30,
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

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A store key for one policy: `mcpw:{<namespace>/<policy>}:<kind>:<id>`.
///
/// The braces are a Redis Cluster hash tag, so all keys of one policy live in one slot (a Lua
/// script or transaction may touch several of them). `kind` is a short fixed word (`client`,
/// `code`, `refresh`, …); `id` is any string (opaque ids, hashes).
pub fn key(namespace: &str, policy: &str, kind: &str, id: &str) -> String {
    format!("mcpw:{{{namespace}/{policy}}}:{kind}:{id}")
}
