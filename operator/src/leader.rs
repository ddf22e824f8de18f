//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one runs the controller (all of them serve the webhook).
//!
//! Like client-go, a replica judges another holder's lease by its own clock only: the lease
//! counts as expired when its record (holder, renew time, …) has not changed for a whole lease
//! duration *since this replica last saw it change*. The remote `renewTime` is never compared
//! with the local clock, so clock skew between nodes cannot cause two leaders.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::Result;

/// A Lease-based lock.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    observed: Arc<Mutex<Option<Observation>>>,
}

/// The last lease record this replica saw, and when it first saw it (local monotonic clock).
struct Observation {
    spec: LeaseSpec,
    at: tokio::time::Instant,
}

impl LeaseLock {
    /// A lock on Lease `name` in `namespace`, held by `identity` (the pod name) for `duration`
    /// after each renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: Arc::default(),
        }
    }

    fn spec(
        &self,
        now: jiff::Timestamp,
        acquired: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the lease; `true` when this replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let expired = self.observe(&spec);
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine { spec.acquire_time } else { None };
        lease.spec = Some(self.spec(now, acquired, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !mine {
                    tracing::info!(lease = %lease.name_any(), identity = %self.identity, "became leader");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the lease record as seen now; `true` when it has not changed for its whole
    /// duration by this replica's clock.
    fn observe(&self, spec: &LeaseSpec) -> bool {
        let now = tokio::time::Instant::now();
        let mut observed = self.observed.lock().expect("not poisoned");
        let since = match observed.as_ref() {
            Some(o) if o.spec == *spec => o.at,
            _ => {
                *observed = Some(Observation {
                    spec: spec.clone(),
                    at: now,
                });
                now
            }
        };
        let Some(secs) = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
        else {
            return true;
        };
        now >= since + Duration::from_secs(secs)
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once instead of
    /// after the lease expires. Does nothing when another replica holds it.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(identity = %self.identity, "released the leader lease");
        Ok(())
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the lease until a renewal is refused or none succeeded for a whole lease
    /// duration; then returns (the caller must stop acting as leader).
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!("lost the leader lease to another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                    // Stop before another replica may see the lease as expired.
                    if last_ok.elapsed() >= self.duration * 2 / 3 {
                        return;
                    }
                }
            }
        }
    }
}

/// Runs `work` whenever this replica holds the lease: waits for the lease, runs `work` until the
/// lease is lost, stops it, and becomes a candidate again. `leading` is told each change. Returns
/// only when `work` returns. The webhook is not part of `work`: every replica serves admission,
/// leader or not.
pub async fn run_elected<F, Fut>(lock: &LeaseLock, mut work: F, leading: impl Fn(bool))
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        lock.acquire().await;
        leading(true);
        tokio::select! {
            () = work() => {
                leading(false);
                return;
            }
            () = lock.hold() => {
                leading(false);
                tracing::warn!("stopped the controller after losing the lease; the webhook keeps serving");
            }
        }
    }
}
