//! Watch caches the webhook answers from: every `McpAuthPolicy` and the metadata of every
//! Namespace, kept current by kube-runtime reflectors (one LIST, then a WATCH). An admission
//! review therefore costs no API round trip. Every replica runs these caches (every replica
//! serves admission); the controller, which runs on the leader only, keeps its own watches.
//! Policies are decoded one by one ([`StoredPolicy`]): one this operator cannot read is cached
//! as such (and refused by the webhook) instead of failing the listing of every other policy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use mcp_warden_policy::McpAuthPolicy;

use crate::stored_policy::StoredPolicy;

/// The webhook's view of policies and namespaces.
#[derive(Clone)]
pub struct Caches {
    policies: Store<StoredPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Set once both stores are listed. (A store's own readiness future wakes only one waiter,
    /// so everyone else waits on this.)
    synced: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Caches {
    /// Caches fed by watches through `client`, and the future that drives them (spawn it; it
    /// runs until dropped, retrying failed watches with backoff).
    pub fn watch(client: Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (policies, policy_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        let caches = Self {
            policies,
            namespaces,
            synced: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let policy_stream = reflector::reflector(
            policy_writer,
            watcher(
                Api::<StoredPolicy>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let namespace_stream = reflector::reflector(
            namespace_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let me = caches.clone();
        let drive = async move {
            tokio::join!(
                policy_stream.for_each(|event| {
                    if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = &event {
                        log_unreadable(p);
                    }
                    log_errors("McpAuthPolicies")(event)
                }),
                namespace_stream.for_each(log_errors("Namespaces")),
                async move {
                    let _ = me.policies.wait_until_ready().await;
                    let _ = me.namespaces.wait_until_ready().await;
                    me.synced.send_replace(true);
                    tracing::info!("webhook caches synced");
                },
            );
        };
        (caches, drive)
    }

    /// Caches holding exactly these objects, already synced (tests and benchmarks).
    pub fn from_objects(policies: Vec<McpAuthPolicy>, namespaces: Vec<Namespace>) -> Self {
        let (policy_store, mut policy_writer) = reflector::store();
        let (namespace_store, mut namespace_writer) = reflector::store();
        policy_writer.apply_watcher_event(&watcher::Event::Init);
        for p in policies {
            policy_writer.apply_watcher_event(&watcher::Event::InitApply(p.into()));
        }
        policy_writer.apply_watcher_event(&watcher::Event::InitDone);
        namespace_writer.apply_watcher_event(&watcher::Event::Init);
        for ns in namespaces {
            let meta = PartialObjectMeta::<Namespace> {
                types: None,
                metadata: ns.metadata,
                _phantom: std::marker::PhantomData,
            };
            namespace_writer.apply_watcher_event(&watcher::Event::InitApply(meta));
        }
        namespace_writer.apply_watcher_event(&watcher::Event::InitDone);
        Self {
            policies: policy_store,
            namespaces: namespace_store,
            synced: Arc::new(tokio::sync::watch::channel(true).0),
        }
    }

    /// Whether both caches hold a full listing.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until both caches hold a full listing.
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Waits up to `limit` for both caches to hold a full listing; `true` once they do.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        self.is_synced()
            || tokio::time::timeout(limit, self.wait_until_synced())
                .await
                .is_ok()
    }

    /// The policy `namespace/name` (or why it cannot be read), if cached.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<Arc<StoredPolicy>> {
        self.policies.get(&ObjectRef::new(name).within(namespace))
    }

    /// The metadata (labels, annotations) of Namespace `name`, if cached.
    pub fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(name))
    }
}

/// Says in the log that a policy cannot be read (the controller also says it in its status).
fn log_unreadable(stored: &StoredPolicy) {
    if let Err(e) = &stored.policy {
        tracing::error!(
            policy = %stored, field = %e.path, error = %e.message,
            "McpAuthPolicy cannot be read by this operator version; pods naming it are refused"
        );
    }
}

fn log_errors<T>(
    what: &'static str,
) -> impl FnMut(Result<T, watcher::Error>) -> std::future::Ready<()> {
    move |event| {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching {what} for the webhook");
        }
        std::future::ready(())
    }
}
