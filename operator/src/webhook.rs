//! The mutating admission webhook for Pods: `POST /mutate-pods` takes an
//! `admission.k8s.io/v1` AdmissionReview and answers with the injection patch or a denial.

use std::sync::Arc;
use std::time::Instant;

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
use mcp_warden_policy::McpAuthPolicy;

use crate::inject::{self, InjectSettings, Outcome, Skip};
use crate::metrics::{Metrics, ResultLabel};
use crate::names::{INJECT_LABEL, NAMESPACE_LABEL};

/// Longest time spent on one admission request (the webhook configuration allows 10 s).
pub const ADMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// What the webhook handler needs.
#[derive(Clone)]
pub struct WebhookState {
    /// Reads policies and namespaces.
    pub client: Client,
    /// Injection settings, with the native-sidecar default already resolved.
    pub settings: Arc<InjectSettings>,
    /// Metrics.
    pub metrics: Metrics,
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
        Ok(req) => match tokio::time::timeout(ADMIT_TIMEOUT, admit(&state, &req)).await {
            Ok(decision) => decision,
            // Answer before the API server gives up (10 s), with a reason it can show.
            Err(_) => (
                AdmissionResponse::from(&req).deny(format!(
                    "mcp-warden: no answer from the Kubernetes API within {}s",
                    ADMIT_TIMEOUT.as_secs()
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

/// Decides one admission request.
async fn admit(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
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
    let namespace_opted_in = match pod_label.as_deref() {
        Some("true") => false,
        _ => match namespace_enabled(&state.client, &namespace).await {
            Ok(enabled) => enabled,
            Err(e) if pod_label.as_deref() == Some("false") => {
                tracing::debug!(error = %e, "namespace lookup failed for an opted-out pod");
                false
            }
            Err(e) => {
                return (
                    allow.deny(format!(
                        "mcp-warden: cannot read namespace {namespace}: {e}"
                    )),
                    "error",
                );
            }
        },
    };
    let policy_name = match inject::wants_injection(&pod, namespace_opted_in) {
        Err(Skip::AlreadyInjected) => return (allow, "already_injected"),
        Err(_) => return (allow, "skipped"),
        Ok(name) => name,
    };
    let policy = match &policy_name {
        None => None,
        Some(name) => {
            match Api::<McpAuthPolicy>::namespaced(state.client.clone(), &namespace)
                .get_opt(name)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    return (
                        allow.deny(format!(
                            "mcp-warden: cannot read McpAuthPolicy {namespace}/{name}: {e}"
                        )),
                        "error",
                    );
                }
            }
        }
    };
    let outcome = inject::inject(
        &pod,
        policy_name.as_deref(),
        policy.as_ref(),
        &state.settings,
    );
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

async fn namespace_enabled(client: &Client, namespace: &str) -> kube::Result<bool> {
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?;
    Ok(
        ns.is_some_and(|ns| {
            ns.labels().get(NAMESPACE_LABEL).map(String::as_str) == Some("enabled")
        }),
    )
}
