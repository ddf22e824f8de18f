//! The mutating admission webhook for Pods: `POST /mutate-pods` takes an
//! `admission.k8s.io/v1` AdmissionReview and answers with the injection patch or a denial.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt};

use crate::caches::Caches;
use crate::inject::{self, InjectSettings, Outcome, Skip};
use crate::kubelets::NativeDefault;
use crate::metrics::{Metrics, ResultLabel};
use crate::names::{DEFAULT_POLICY_ANNOTATION, INJECT_LABEL, NAMESPACE_LABEL, POLICY_ANNOTATION};
use crate::stored_policy::StoredPolicy;

/// The API server's default webhook timeout (`timeoutSeconds`), when the operator is not told.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// When the webhook answers at the latest, given the webhook configuration's `timeoutSeconds`:
/// one second before the API server gives up (half the timeout when that is 1 s).
pub fn answer_deadline(timeout_seconds: u64) -> Duration {
    let timeout = Duration::from_secs(timeout_seconds.max(1));
    timeout
        .saturating_sub(Duration::from_secs(1))
        .max(timeout / 2)
}

/// What the webhook handler needs.
#[derive(Clone)]
pub struct WebhookState {
    /// Confirms cache misses (a policy or namespace label created a moment ago).
    pub client: Client,
    /// Policies and namespaces, from watches.
    pub caches: Caches,
    /// Injection settings (the native-sidecar default comes from `native`).
    pub settings: Arc<InjectSettings>,
    /// Native sidecar or regular container, for pods that do not say.
    pub native: NativeDefault,
    /// Metrics.
    pub metrics: Metrics,
    /// Answer by then, even without a decision (see [`answer_deadline`]).
    pub deadline: Duration,
}

/// The webhook routes.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate-pods", post(mutate_pods))
        .with_state(state)
}

async fn mutate_pods(State(state): State<WebhookState>, body: Bytes) -> Json<serde_json::Value> {
    let start = Instant::now();
    let (response, label) = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let req: Result<AdmissionRequest<DynamicObject>, _> = r.try_into();
            req.map_err(|e| e.to_string())
        }) {
        Ok(req) => match tokio::time::timeout(state.deadline, admit(&state, &req, start)).await {
            Ok(decision) => decision,
            // Answer before the API server gives up, with a reason it can show.
            Err(_) => (
                AdmissionResponse::from(&req).deny(format!(
                    "mcp-warden: no answer from the Kubernetes API within {} ms; the pod is \
                     retried by its controller",
                    state.deadline.as_millis()
                )),
                "error",
            ),
        },
        Err(e) => (
            AdmissionResponse::invalid(format!("not an AdmissionReview with a request: {e}")),
            "error",
        ),
    };
    state
        .metrics
        .injections
        .get_or_create(&ResultLabel { result: label })
        .inc();
    state
        .metrics
        .webhook_duration
        .observe(start.elapsed().as_secs_f64());
    Json(encode_review(response.into_review()))
}

/// The review as JSON, with the patch base64-encoded like Go's `[]byte` (kube-core writes a
/// number array, which the API server decodes too, but base64 is what every client expects).
fn encode_review(review: AdmissionReview<DynamicObject>) -> serde_json::Value {
    let mut value = serde_json::to_value(&review).expect("reviews serialise");
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] = serde_json::Value::String(STANDARD.encode(patch));
    }
    value
}

/// What the webhook knows about the pod's namespace.
#[derive(Default)]
struct NamespaceInfo {
    opted_in: bool,
    default_policy: Option<String>,
}

impl NamespaceInfo {
    fn of(
        labels: &std::collections::BTreeMap<String, String>,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self {
            opted_in: labels.get(NAMESPACE_LABEL).map(String::as_str) == Some("enabled"),
            default_policy: annotations.get(DEFAULT_POLICY_ANNOTATION).cloned(),
        }
    }
}

/// Decides one admission request.
async fn admit(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
    start: Instant,
) -> (AdmissionResponse, &'static str) {
    let allow = AdmissionResponse::from(req);
    if req.operation != Operation::Create || req.kind.kind != "Pod" {
        return (allow, "skipped");
    }
    let Some(object) = &req.object else {
        return (allow, "skipped");
    };
    let mut pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(pod) => pod,
        Err(e) => {
            return (
                allow.deny(format!("mcp-warden: unreadable pod: {e}")),
                "error",
            );
        }
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.namespace())
        .unwrap_or_else(|| "default".into());
    pod.metadata.namespace = Some(namespace.clone());

    let pod_label = pod.labels().get(INJECT_LABEL).cloned();
    if pod_label.as_deref() == Some("false") {
        return (allow, "skipped");
    }
    // Right after start-up the caches may still be listing: wait for them, bounded by the
    // answer deadline, then refuse with a message saying that a retry will work.
    let margin = Duration::from_millis(250);
    let wait = state.deadline.saturating_sub(start.elapsed() + margin);
    if !state.caches.wait_synced(wait).await {
        return (
            allow.deny(
                "mcp-warden: the operator is starting and has not yet read the McpAuthPolicies \
                 and Namespaces; the pod is retried by its controller (or retry it yourself)"
                    .to_owned(),
            ),
            "error",
        );
    }
    let ns = match namespace_info(state, &namespace, pod_label.is_none()).await {
        Ok(ns) => ns,
        Err(e) => {
            return (
                allow.deny(format!(
                    "mcp-warden: cannot read namespace {namespace}: {e}"
                )),
                "error",
            );
        }
    };
    let policy_name = match inject::wants_injection(&pod, ns.opted_in, ns.default_policy.as_deref())
    {
        Err(Skip::AlreadyInjected) => return (allow, "already_injected"),
        Err(Skip::NoPolicy) => {
            // Opted in by the namespace only: Helm hooks, `kubectl run`, other operators'
            // pods. Admitted as they are, and told so.
            let mut res = allow;
            res.warnings = Some(vec![format!(
                "mcp-warden: namespace {namespace} is labelled {NAMESPACE_LABEL}=enabled, but \
                     neither this pod ({POLICY_ANNOTATION}) nor the namespace \
                     ({DEFAULT_POLICY_ANNOTATION}) names an McpAuthPolicy: admitted WITHOUT the \
                     auth sidecar"
            )]);
            return (res, "skipped");
        }
        Err(_) => return (allow, "skipped"),
        Ok(name) => name,
    };
    let stored = match &policy_name {
        None => None,
        Some(name) => match policy(state, &namespace, name).await {
            Ok(p) => p,
            Err(e) => {
                return (
                    allow.deny(format!(
                        "mcp-warden: cannot read McpAuthPolicy {namespace}/{name}: {e}"
                    )),
                    "error",
                );
            }
        },
    };
    // Fail closed: a policy this operator cannot read is never half-applied.
    let policy = match stored.as_deref().map(|s| (s, &s.policy)) {
        None => None,
        Some((_, Ok(p))) => Some(p),
        Some((stored, Err(e))) => {
            tracing::warn!(policy = %stored, field = %e.path, error = %e.message, "injection denied: unreadable policy");
            return (
                allow.deny(format!(
                    "mcp-warden: McpAuthPolicy {stored} cannot be used: this operator ({}) \
                     cannot read it ({e}); was it written for another mcp-warden version? Fix \
                     the policy or run a matching operator",
                    env!("CARGO_PKG_VERSION")
                )),
                "denied",
            );
        }
    };
    let mut settings = std::borrow::Cow::Borrowed(&*state.settings);
    let native = state.native.native();
    if settings.native_sidecar != native {
        settings.to_mut().native_sidecar = native;
    }
    let outcome = inject::inject(&pod, policy_name.as_deref(), policy, &settings);
    let label = outcome.metric_label();
    match outcome {
        Outcome::Injected {
            patch, warnings, ..
        } => match allow.clone().with_patch(patch) {
            Ok(mut res) => {
                if !warnings.is_empty() {
                    res.warnings = Some(warnings);
                }
                (res, label)
            }
            Err(e) => (allow.deny(format!("mcp-warden: {e}")), "error"),
        },
        Outcome::Denied(why) => {
            tracing::info!(%namespace, pod = ?pod.metadata.generate_name, %why, "injection denied");
            (allow.deny(why), label)
        }
        Outcome::Skipped(_) => (allow, label),
    }
}

/// The namespace's opt-in label and default policy, from the cache. A pod without the inject
/// label only reaches the webhook through the namespace entry, i.e. when the API server saw the
/// namespace label: if the cache disagrees it is behind, and one GET settles it.
async fn namespace_info(
    state: &WebhookState,
    namespace: &str,
    via_namespace_entry: bool,
) -> kube::Result<NamespaceInfo> {
    let cached = state
        .caches
        .namespace(namespace)
        .map(|ns| NamespaceInfo::of(ns.labels(), ns.annotations()));
    match cached {
        Some(info) if info.opted_in || !via_namespace_entry => Ok(info),
        _ => {
            let ns = Api::<Namespace>::all(state.client.clone())
                .get_opt(namespace)
                .await?;
            Ok(ns
                .map(|ns| NamespaceInfo::of(ns.labels(), ns.annotations()))
                .unwrap_or_default())
        }
    }
}

/// The policy, from the cache; a miss (a policy created a moment ago) is confirmed with a GET.
async fn policy(
    state: &WebhookState,
    namespace: &str,
    name: &str,
) -> kube::Result<Option<Arc<StoredPolicy>>> {
    if let Some(p) = state.caches.policy(namespace, name) {
        return Ok(Some(p));
    }
    Ok(
        Api::<StoredPolicy>::namespaced(state.client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(Arc::new),
    )
}
