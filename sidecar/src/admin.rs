//! The admin port: `/metrics`, `/healthz`, `/readyz`. Kept off the public port so that neither
//! metrics nor probes are reachable through the ingress, and probes never need a token.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::registry::Registry;

use crate::app::SharedRuntime;
use crate::shutdown::Phase;

/// What the admin endpoints read.
pub struct AdminState {
    /// The metrics registry.
    pub registry: Registry,
    /// The policy in force, for readiness.
    pub runtime: SharedRuntime,
    /// Where the process is on its way out, for readiness.
    pub phase: tokio::sync::watch::Receiver<Phase>,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&state.registry),
    )
}

/// Ready once the policy's verification keys are available, until told to stop.
async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if *state.phase.borrow() != Phase::Serving {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    let runtime = state.runtime.load();
    if runtime.verifier.ready() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("policy {}: no verification keys yet", runtime.policy),
        )
    }
}
