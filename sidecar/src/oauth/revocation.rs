//! Revoked sessions, refused on every replica within a fraction of a second, with no store round
//! trip per request.
//!
//! Revoking a session (a refresh-token family: `/revoke`, refresh-token reuse, a user no longer
//! allowed, the provider ending the grant) adds its id (the access tokens' `sid`) to this
//! replica's deny set and appends it to a log in the store (a Redis stream shared by the
//! replicas). Every replica reads the log every [`SYNC_INTERVAL`] into its own deny set, which the
//! request path checks in memory. Entries live until the session's last access token has expired
//! (`accessTokenTtlSeconds` plus the verifier's leeway), so the set stays small.
//!
//! A replica that cannot read the log does not know what was revoked meanwhile: once its last
//! successful read is older than [`STALE_AFTER`], it answers 503 to every proxy-issued token until
//! it reads the log again (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::crypto::random_token;
use super::metrics::{OAuthMetrics, RevokeReason};
use super::now;
use crate::store::{Store, StoreError};

/// How often each replica reads the revocation log.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// How long a replica keeps accepting proxy-issued tokens after its last successful read of the
/// revocation log; past it, requests get 503 until the log is readable again.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// Seconds an access token is accepted past its `exp` (the resource side's leeway).
pub const TOKEN_LEEWAY_SECONDS: u64 = 60;
/// Log entries read per store call.
const READ_BATCH: usize = 1000;
/// How often expired deny-set entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// One revocation, as logged.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The session (refresh-token family) id.
    sid: String,
    /// Until when (Unix seconds) its access tokens must be refused.
    until: u64,
    /// When it was revoked (Unix milliseconds), for the propagation metric.
    at_ms: u64,
    /// The replica that revoked it.
    by: String,
}

/// Whether a session's access tokens may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not revoked, as far as a recent read of the log shows.
    Valid,
    /// Revoked.
    Revoked,
    /// Unknown: the log could not be read for longer than [`STALE_AFTER`].
    Unknown,
}

/// This process's deny set of revoked sessions, shared by every policy reload.
pub struct Revocations {
    denied: RwLock<HashMap<Box<str>, u64>>,
    /// Milliseconds from `started` to the last successful read, plus one (0: never).
    synced: AtomicU64,
    started: Instant,
    stale: AtomicBool,
    replica: String,
    metrics: OAuthMetrics,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Revocations {
    /// An empty deny set, never synced yet.
    pub fn new(metrics: OAuthMetrics) -> Self {
        Revocations {
            denied: RwLock::default(),
            synced: AtomicU64::new(0),
            started: Instant::now(),
            // Set (with the gauge) by the first failed read; jwt mode never reads.
            stale: AtomicBool::new(false),
            replica: random_token(9),
            metrics,
        }
    }

    /// Whether access tokens of session `sid` may be used. In memory only.
    pub fn status(&self, sid: &str) -> Status {
        let denied = self
            .denied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sid)
            .is_some_and(|until| *until >= now());
        if denied {
            Status::Revoked
        } else if self.status_is_stale() {
            Status::Unknown
        } else {
            Status::Valid
        }
    }

    fn deny(&self, sid: &str, until: u64) {
        let mut denied = self
            .denied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = denied.entry(sid.into()).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// Revokes session `sid` for `lifetime` (the longest an access token of it stays valid):
    /// at once on this replica, and on the others once they read the log entry appended to `log`.
    pub async fn revoke(
        &self,
        store: &dyn Store,
        log: &str,
        sid: &str,
        lifetime: Duration,
        reason: RevokeReason,
    ) -> Result<(), StoreError> {
        let until = now() + lifetime.as_secs();
        self.deny(sid, until);
        let entry = Entry {
            sid: sid.to_owned(),
            until,
            at_ms: unix_millis(),
            by: self.replica.clone(),
        };
        let bytes = serde_json::to_vec(&entry).expect("entries serialise");
        store.append(log, &bytes, lifetime).await?;
        self.metrics.session_revoked(reason);
        Ok(())
    }

    /// Reads the log after `cursor` to its end into the deny set. Propagation is observed for
    /// entries from other replicas, except on the first read (a catch-up on older entries).
    async fn read(
        &self,
        store: &dyn Store,
        log: &str,
        cursor: &mut Option<String>,
    ) -> Result<(), StoreError> {
        let catching_up = cursor.is_none();
        loop {
            let batch = store.read_log(log, cursor.as_deref(), READ_BATCH).await?;
            let full = batch.entries.len() == READ_BATCH;
            for raw in &batch.entries {
                let Ok(entry) = serde_json::from_slice::<Entry>(raw) else {
                    tracing::warn!("unreadable revocation log entry skipped");
                    continue;
                };
                if entry.until < now() {
                    continue;
                }
                self.deny(&entry.sid, entry.until);
                if !catching_up && entry.by != self.replica {
                    let delay = unix_millis().saturating_sub(entry.at_ms) as f64 / 1000.0;
                    self.metrics.revocation_propagation.0.observe(delay);
                }
            }
            *cursor = batch.cursor;
            if !full {
                return Ok(());
            }
        }
    }

    fn mark_synced(&self) {
        let at = self.started.elapsed().as_millis() as u64 + 1;
        self.synced.store(at, Ordering::Relaxed);
        if self.stale.swap(false, Ordering::Relaxed) {
            self.metrics.revocation_sync_stale.set(0);
            tracing::info!("revocation log readable: access tokens are checked against it again");
        }
    }

    fn note_failure(&self, error: &StoreError) {
        if self.status_is_stale() && !self.stale.swap(true, Ordering::Relaxed) {
            self.metrics.revocation_sync_stale.set(1);
            tracing::warn!(
                error = %error,
                "revocation log unreadable for {STALE_AFTER:?}: refusing proxy-issued tokens with 503 until it is readable"
            );
        }
    }

    fn status_is_stale(&self) -> bool {
        let synced = self.synced.load(Ordering::Relaxed);
        let age = self.started.elapsed().as_millis() as u64;
        synced == 0 || age.saturating_sub(synced - 1) > STALE_AFTER.as_millis() as u64
    }

    fn prune(&self) {
        let now = now();
        self.denied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, until| *until >= now);
    }

    /// Starts following `log` in `store` on the current Tokio runtime; the task ends when the
    /// returned guard is dropped.
    pub fn follow(self: &Arc<Self>, store: Arc<dyn Store>, log: String) -> SyncTask {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return SyncTask(None);
        };
        let this = self.clone();
        SyncTask(Some(runtime.spawn(async move {
            let mut cursor = None;
            let mut tick = tokio::time::interval(SYNC_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pruned = Instant::now();
            loop {
                tick.tick().await;
                match this.read(&*store, &log, &mut cursor).await {
                    Ok(()) => this.mark_synced(),
                    Err(e) => this.note_failure(&e),
                }
                if pruned.elapsed() >= PRUNE_EVERY {
                    this.prune();
                    pruned = Instant::now();
                }
            }
        })))
    }
}

/// The task following the revocation log; aborted on drop (a policy reload starts a new one).
pub struct SyncTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for SyncTask {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_revocation_reaches_another_replica_through_the_store() {
        let store: Arc<dyn Store> = MemoryStore::new(100);
        let a = Arc::new(Revocations::new(OAuthMetrics::default()));
        let b = Arc::new(Revocations::new(OAuthMetrics::default()));
        assert_eq!(b.status("s1"), Status::Unknown, "never synced: fail closed");
        let _ta = a.follow(store.clone(), "log".into());
        let _tb = b.follow(store.clone(), "log".into());
        tokio::time::sleep(SYNC_INTERVAL * 2).await;
        assert_eq!(b.status("s1"), Status::Valid);
        a.revoke(
            &*store,
            "log",
            "s1",
            Duration::from_secs(60),
            RevokeReason::Revoke,
        )
        .await
        .unwrap();
        assert_eq!(
            a.status("s1"),
            Status::Revoked,
            "at once on the revoking replica"
        );
        tokio::time::sleep(SYNC_INTERVAL * 3).await;
        assert_eq!(b.status("s1"), Status::Revoked);
        assert_eq!(b.status("s2"), Status::Valid);
    }

    #[tokio::test]
    async fn a_replica_that_cannot_read_the_log_fails_closed() {
        let r = Revocations::new(OAuthMetrics::default());
        r.mark_synced();
        assert_eq!(r.status("s"), Status::Valid);
        r.synced.store(1, Ordering::Relaxed);
        // Pretend the last read was longer ago than the bound.
        let r = Revocations {
            started: Instant::now() - STALE_AFTER - Duration::from_secs(1),
            ..r
        };
        assert_eq!(r.status("s"), Status::Unknown);
        r.note_failure(&StoreError::Unavailable("down".into()));
        assert_eq!(r.metrics.revocation_sync_stale.get(), 1);
        r.mark_synced();
        assert_eq!(r.status("s"), Status::Valid);
        assert_eq!(r.metrics.revocation_sync_stale.get(), 0);
    }
}
