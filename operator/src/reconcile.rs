//! The McpAuthPolicy controller: validate, render the sidecar's ConfigMap, manage key Secrets
//! and the NetworkPolicy, check the issuer, count bound pods, and report it all in `status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use mcp_warden_policy::{
    API_VERSION, AuthMode, KIND, McpAuthPolicy, McpAuthPolicySpec, McpAuthPolicyStatus,
};
use serde_json::json;

use crate::conditions::{self, Observed, types};
use crate::keys::{KeyRing, Rotation};
use crate::metrics::{Metrics, ResultLabel};
use crate::names::*;
use crate::render::{self, ENCRYPTION_KEY, SIGNING_KEY};
use crate::stored_policy::{self, StoredPolicy};
use crate::{Error, Result, issuer, netpol};

/// Annotation on the keys Secret: creation time of each key id (JSON object, Unix seconds).
pub const KEY_TIMES_ANNOTATION: &str = "mcpwarden.dev/key-created";
pub use crate::render::CONFIG_HASH_ANNOTATION;

/// Default of `--key-activation-delay` in seconds: a Secret update reaches every pod within the
/// kubelet's sync period (1 minute by default) plus its cache TTL, and the sidecar notices it
/// within its poll interval; 5 minutes leaves a wide margin.
pub const DEFAULT_KEY_ACTIVATION_DELAY: u64 = 300;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Create a NetworkPolicy admitting ingress only on the sidecar ports.
    pub network_policy: bool,
    /// Timeout of each issuer request.
    pub issuer_timeout: Duration,
    /// Age at which keys rotate.
    pub key_rotation: Duration,
    /// How long a new key is only published (verify/decrypt) before it signs and encrypts.
    pub key_activation_delay: Duration,
    /// Requeue interval when all is well (issuer re-check, key rotation, pod count).
    pub resync: Duration,
    /// How long an issuer's good answer is reused for every policy naming it.
    pub issuer_cache: Duration,
    /// Reconcile requests for one policy arriving within this window are merged into one (a
    /// rollout's pod events).
    pub debounce: Duration,
    /// Namespaces whose policies are reconciled; empty: every namespace.
    pub namespaces: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            network_policy: true,
            issuer_timeout: Duration::from_secs(5),
            key_rotation: Duration::from_secs(30 * 86_400),
            key_activation_delay: Duration::from_secs(DEFAULT_KEY_ACTIVATION_DELAY),
            resync: Duration::from_secs(300),
            issuer_cache: Duration::from_secs(300),
            debounce: Duration::from_secs(1),
            namespaces: Vec::new(),
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Client for issuer checks.
    pub http: reqwest::Client,
    /// Issuer check results by issuer.
    pub issuers: issuer::Cache,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, metrics: Metrics, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            http: issuer::client(settings.issuer_timeout),
            issuers: issuer::Cache::new(settings.issuer_cache, Duration::from_secs(25)),
            client,
            metrics,
            settings,
            failures: Mutex::default(),
        }
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn now_rfc3339() -> String {
    jiff::Timestamp::from_second(now_unix())
        .expect("now is a valid time")
        .to_string()
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Reconciles one policy; errors are transient and retried with backoff.
pub async fn reconcile(policy: Arc<McpAuthPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let result = reconcile_policy(&policy, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    let label = match &result {
        Ok((_, label)) => *label,
        Err(_) => "error",
    };
    ctx.metrics
        .reconcile
        .get_or_create(&ResultLabel { result: label })
        .inc();
    match &result {
        Ok(_) => {
            ctx.failures
                .lock()
                .expect("not poisoned")
                .remove(&key(&policy));
        }
        Err(Error::Kube(e)) => report_api_error(&policy, &ctx, e).await,
        Err(_) => {}
    }
    result.map(|(action, _)| action)
}

/// Says in the policy's status that a Kubernetes API request failed (RBAC, quota, admission
/// policies, an API server in trouble), besides the retry with backoff. Best effort: when the
/// status cannot be written either, the log has it.
async fn report_api_error(policy: &McpAuthPolicy, ctx: &Context, error: &kube::Error) {
    let ready = Observed::no(
        types::READY,
        "ApiError",
        format!("a Kubernetes API request failed; retrying with backoff: {error}"),
    );
    let old = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let carried = old.iter().filter_map(|c| {
        let type_ = [types::CONFIG_RENDERED, types::ISSUER_REACHABLE]
            .into_iter()
            .find(|t| *t == c.type_)?;
        let status = ["True", "False", "Unknown"]
            .into_iter()
            .find(|s| *s == c.status)?;
        Some(Observed {
            type_,
            status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
    });
    let observed: Vec<Observed> = std::iter::once(ready).chain(carried).collect();
    if let Err(e) = write_status(policy, ctx, &observed, None, None).await {
        tracing::debug!(policy = %key(policy), error = %e, "cannot report the API error in status");
    }
}

/// Reconciles one policy as the API server stores it. The object is read leniently: fields this
/// operator does not know (a CRD newer than the operator) are ignored and reported, and an
/// object that cannot be read at all only fails itself, never the watch of every other policy.
///
/// Unknown `spec` fields fail closed: the policy turns `Ready=False` (`UnknownFields`) and its
/// ConfigMap keeps the last configuration rendered, since a configuration without a field the
/// user set (an access restriction, say) could admit more than they meant.
pub async fn reconcile_object(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let value = serde_json::to_value(&*object)?;
    let (problem, policy) = match stored_policy::read(value) {
        Ok((policy, unknown)) => {
            let unknown: Vec<_> = unknown
                .into_iter()
                .filter(|p| p.starts_with("spec."))
                .collect();
            if unknown.is_empty() {
                return reconcile(Arc::new(policy), ctx).await;
            }
            let message = format!(
                "this operator ({}) does not know {}: the policy was written for a newer \
                 mcp-warden; the sidecars keep the last configuration rendered without it \
                 (upgrade the operator, or remove the fields)",
                env!("CARGO_PKG_VERSION"),
                unknown.join(", ")
            );
            (("UnknownFields", message), policy)
        }
        Err(e) => {
            let message = format!(
                "this operator ({}) cannot read the policy ({e}); pods naming it are refused \
                 until it is fixed (or an operator that reads it runs)",
                env!("CARGO_PKG_VERSION")
            );
            (("Unreadable", message), shell(&object))
        }
    };
    let ((reason, message), policy) = (problem, policy);
    tracing::warn!(policy = %key(&policy), %message, "policy not reconciled");
    let observed = [
        Observed::no(types::READY, reason, message.clone()),
        Observed::no(types::CONFIG_RENDERED, reason, message),
    ];
    write_status(&policy, &ctx, &observed, None, None).await?;
    ctx.metrics
        .reconcile
        .get_or_create(&ResultLabel { result: "invalid" })
        .inc();
    Ok(Action::await_change())
}

/// A policy with `object`'s metadata and status and an empty spec, to report on an object
/// whose spec cannot be read.
fn shell(object: &DynamicObject) -> McpAuthPolicy {
    let spec = serde_json::from_value(json!({"resource": {"url": ""}, "mode": "jwt"}))
        .expect("the minimal spec parses");
    let mut policy = McpAuthPolicy::new(&object.name_any(), spec);
    policy.metadata = object.metadata.clone();
    policy.status = serde_json::from_value(object.data["status"].clone()).ok();
    policy
}

fn key(policy: &McpAuthPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

/// Requeues failed reconciliations after 5 s, doubling up to 5 minutes.
pub fn error_policy(policy: Arc<McpAuthPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("not poisoned");
    let n = failures.entry(key(&policy)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(5u64.saturating_mul(1 << (*n - 1).min(6)).min(300));
    tracing::warn!(policy = %key(&policy), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// [`error_policy`] for the untyped objects the controller watches.
pub fn error_policy_object(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    error_policy(Arc::new(shell(&object)), error, ctx)
}

async fn reconcile_policy(policy: &McpAuthPolicy, ctx: &Context) -> Result<(Action, &'static str)> {
    if policy.meta().deletion_timestamp.is_some() {
        // Owned objects carry owner references; the garbage collector removes them.
        return Ok((Action::await_change(), "ok"));
    }
    let ns = policy
        .namespace()
        .ok_or_else(|| Error::Invalid("McpAuthPolicy without namespace".into()))?;
    let name = policy.name_any();
    let generation = policy.meta().generation;

    if let Err(e) = policy.spec.validate() {
        let message = e.to_string();
        let observed = [
            Observed::no(types::READY, "InvalidSpec", message.clone()),
            Observed::no(types::CONFIG_RENDERED, "InvalidSpec", message),
            Observed::unknown(types::ISSUER_REACHABLE, "NotChecked", "the spec is invalid"),
        ];
        write_status(policy, ctx, &observed, None, None).await?;
        // Permanent until the user edits the policy.
        return Ok((Action::await_change(), "invalid"));
    }

    let owner = policy
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("McpAuthPolicy without uid".into()))?;
    let labels = BTreeMap::from([(POLICY_LABEL.to_owned(), name.clone())]);

    let keys_problem = if render::needs_managed_keys(&name, &policy.spec) {
        ensure_keys(policy, ctx, &ns, &owner, &labels).await?
    } else {
        None
    };

    let (config_map, hash) = render::config_map(policy, Some(owner.clone()));
    let cm_name = config_map_name(&name);
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .patch(&cm_name, &apply(), &Patch::Apply(&config_map))
        .await?;

    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{POLICY_LABEL}={name}")))
        .await?;
    let bound: Vec<Pod> = pods
        .items
        .into_iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            p.metadata.deletion_timestamp.is_none()
                && !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .collect();

    sync_network_policy(policy, ctx, &ns, &owner, &bound).await?;

    let issuer_condition = ctx
        .issuers
        .check(&ctx.http, &issuer::target(&policy.spec))
        .await;
    let issuer_down = issuer_condition.status == "False";
    let ready = if let Some(problem) = keys_problem {
        Observed::no(types::READY, "KeysUnreadable", problem)
    } else if issuer_down {
        Observed::no(
            types::READY,
            "IssuerUnreachable",
            format!(
                "sidecars cannot verify tokens: {}",
                issuer_condition.message
            ),
        )
    } else {
        Observed::yes(
            types::READY,
            "Ready",
            ready_message(&policy.spec, bound.len()),
        )
    };
    let observed = [
        ready,
        Observed::yes(
            types::CONFIG_RENDERED,
            "Rendered",
            format!("ConfigMap {cm_name} holds the sidecar configuration (hash {hash})"),
        ),
        issuer_condition,
    ];
    let bound = i32::try_from(bound.len()).unwrap_or(i32::MAX);
    write_status(policy, ctx, &observed, Some(hash), Some((cm_name, bound))).await?;
    let _ = generation;
    let action = if issuer_down {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::requeue(ctx.settings.resync)
    };
    Ok((action, "ok"))
}

fn ready_message(spec: &McpAuthPolicySpec, bound: usize) -> String {
    let in_memory = spec.mode == AuthMode::OauthProxy
        && spec
            .storage
            .as_ref()
            .and_then(|s| s.redis.as_ref())
            .is_none();
    let mut msg = format!("{bound} pod(s) bound");
    if in_memory {
        msg.push_str(
            "; OAuth state is in memory: run a single replica or configure spec.storage.redis",
        );
    }
    msg
}

/// Applies the NetworkPolicy admitting only the sidecar ports of `bound`, or deletes it when
/// `--network-policy=false` (so turning the flag off leaves nothing behind).
async fn sync_network_policy(
    policy: &McpAuthPolicy,
    ctx: &Context,
    ns: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    bound: &[Pod],
) -> Result<()> {
    let name = policy.name_any();
    let np_name = network_policy_name(&name);
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns);
    if !ctx.settings.network_policy {
        match api.delete(&np_name, &Default::default()).await {
            Ok(_) => {
                tracing::info!(policy = %name, "deleted NetworkPolicy {np_name} (--network-policy=false)")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    let allowed = netpol::allowed_ports(bound);
    if !allowed.conflicts.is_empty() {
        publish(
            ctx,
            policy,
            EventType::Warning,
            "NetworkPolicyPortConflict",
            format!(
                "NetworkPolicy {np_name} leaves out port name(s) {:?}: a bound pod's sidecar \
                 uses them, but another bound pod's app container does too, so admitting them \
                 would open that app port; rename the app ports",
                allowed.conflicts
            ),
        )
        .await;
    }
    let np = netpol::network_policy(&name, ns, owner.clone(), &allowed.names);
    api.patch(&np_name, &apply(), &Patch::Apply(&np)).await?;
    Ok(())
}

/// Creates or rotates the keys Secret. Returns the problem to report when the existing Secret
/// cannot be read (it is then left unchanged).
async fn ensure_keys(
    policy: &McpAuthPolicy,
    ctx: &Context,
    ns: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    labels: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let name = keys_secret_name(&policy.name_any());
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let now = now_unix();
    let existing = api.get_opt(&name).await?;
    let text = |s: &Option<Secret>, key: &str| {
        s.as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let times: BTreeMap<String, i64> = existing
        .as_ref()
        .and_then(|s| s.annotations().get(KEY_TIMES_ANNOTATION))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let mut ring = match KeyRing::parse(
        &text(&existing, SIGNING_KEY),
        &text(&existing, ENCRYPTION_KEY),
        &times,
        now,
    ) {
        Ok(ring) => ring,
        Err(e) => {
            // Replacing the ring would log every user out and orphan the encrypted store:
            // leave the Secret alone and say so (Ready=False, a Warning Event).
            tracing::warn!(secret = %name, error = %e, "unreadable keys Secret left unchanged");
            return Ok(Some(format!(
                "Secret {name} holds unreadable keys ({e}); the operator leaves it unchanged: \
                 repair it, or delete it to start a new key ring (signs everyone out)"
            )));
        }
    };
    let proxy = policy.spec.oauth_proxy.as_ref();
    let access = proxy.map_or(900, |p| i64::from(p.access_token_ttl_seconds));
    let refresh = proxy.map_or(14 * 86_400, |p| i64::from(p.refresh_token_ttl_seconds));
    let rotation = Rotation {
        rotate_after: i64::try_from(ctx.settings.key_rotation.as_secs()).unwrap_or(i64::MAX),
        keep_signing: access.max(refresh) + 3600,
        keep_encryption: refresh + 3600,
        activation_delay: i64::try_from(ctx.settings.key_activation_delay.as_secs())
            .unwrap_or(i64::MAX),
    };
    let changed = ring.rotate(now, rotation)?;
    if existing.is_some() && !changed {
        return Ok(None);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_owned()),
            owner_references: Some(vec![owner.clone()]),
            labels: Some(labels.clone()),
            annotations: Some(
                [(
                    KEY_TIMES_ANNOTATION.to_owned(),
                    serde_json::to_string(&ring.created())?,
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [
                (
                    SIGNING_KEY.to_owned(),
                    ByteString(ring.signing_pem().into_bytes()),
                ),
                (
                    ENCRYPTION_KEY.to_owned(),
                    ByteString(ring.encryption_lines().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    api.patch(&name, &apply(), &Patch::Apply(&secret)).await?;
    publish(
        ctx,
        policy,
        EventType::Normal,
        "KeysRotated",
        format!(
            "Secret {name} now has {} signing key(s); the newest signs from {}",
            ring.signing.len(),
            jiff::Timestamp::from_second(ring.signing[0].active_at)
                .map(|t| t.to_string())
                .unwrap_or_default()
        ),
    )
    .await;
    Ok(None)
}

async fn write_status(
    policy: &McpAuthPolicy,
    ctx: &Context,
    observed: &[Observed],
    hash: Option<String>,
    config: Option<(String, i32)>,
) -> Result<()> {
    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.meta().generation;
    let (conditions, changed) =
        conditions::merge(&old.conditions, observed, generation, &now_rfc3339());
    let (config_map, bound_workloads) = match config {
        Some((cm, bound)) => (Some(cm), bound),
        None => (old.config_map.clone(), old.bound_workloads),
    };
    let status = McpAuthPolicyStatus {
        observed_generation: generation,
        conditions,
        bound_workloads,
        config_hash: hash.or(old.config_hash),
        config_map,
    };
    if policy.status.as_ref() != Some(&status) {
        let patch = json!({"apiVersion": API_VERSION, "kind": KIND, "status": status});
        // The answer is the whole object, read leniently: this may be a policy this operator
        // cannot read, reported as such.
        Api::<StoredPolicy>::namespaced(
            ctx.client.clone(),
            &policy.namespace().unwrap_or_default(),
        )
        .patch_status(&policy.name_any(), &apply(), &Patch::Apply(patch))
        .await?;
    }
    let mut published = std::collections::HashSet::new();
    for c in changed {
        // One event per reason: the recorder would fold repeats into one anyway.
        if !published.insert((c.status, c.reason.clone())) {
            continue;
        }
        let type_ = if c.status == "False" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            policy,
            type_,
            &c.reason,
            format!("{}: {}", c.type_, c.message),
        )
        .await;
    }
    Ok(())
}

async fn publish(
    ctx: &Context,
    policy: &McpAuthPolicy,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Runs the controller until the future is dropped (on shutdown or when the lease is lost; an
/// interrupted reconciliation is idempotent and redone by the next leader).
pub async fn run(ctx: Arc<Context>) {
    if ctx.settings.namespaces.is_empty() {
        run_in(ctx, None).await;
    } else {
        let namespaces = ctx.settings.namespaces.clone();
        futures_util::future::join_all(
            namespaces
                .iter()
                .map(|ns| run_in(ctx.clone(), Some(ns.as_str()))),
        )
        .await;
    }
}

/// One controller over `namespace`, or over the whole cluster. The keys Secrets are not watched
/// (that would need list/watch on every Secret): the periodic resync repairs them.
async fn run_in(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let by_label = || watcher::Config::default().labels(POLICY_LABEL);
    // Policies are watched untyped so that one object this version cannot read fails alone.
    let resource = ApiResource::erase::<McpAuthPolicy>(&());
    let policies = match namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
        None => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    let policy_ref = {
        let resource = resource.clone();
        move |name: &str, ns: &str| ObjectRef::new_with(name, resource.clone()).within(ns)
    };
    Controller::new_with(policies, watcher::Config::default(), resource.clone())
        .owns(api::<ConfigMap>(&client, namespace), by_label())
        .owns(api::<NetworkPolicy>(&client, namespace), by_label())
        .watches(api::<Pod>(&client, namespace), by_label(), move |pod| {
            let name = pod.labels().get(POLICY_LABEL)?;
            Some(policy_ref(name, &pod.namespace()?))
        })
        .with_config(controller::Config::default().debounce(ctx.settings.debounce))
        .run(reconcile_object, error_policy_object, ctx)
        .for_each(|res| async move {
            use kube::runtime::controller::Error as E;
            match res {
                // Logged by error_policy, or harmless (a policy deleted meanwhile).
                Ok(_) | Err(E::ReconcilerFailed(..) | E::ObjectNotFound(_)) => {}
                // Watch failures: a missing CRD, missing RBAC, an unreachable API server.
                Err(e) => tracing::warn!(error = %e, "controller watch"),
            }
        })
        .await;
}
