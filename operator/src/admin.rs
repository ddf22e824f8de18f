//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`. It starts before anything talks to
//! Kubernetes and stays up when the API server is unreachable (then `/readyz` fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared readiness flags.
#[derive(Clone, Default)]
pub struct Health {
    api_reachable: Arc<AtomicBool>,
    webhook_serving: Arc<AtomicBool>,
    caches_synced: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Health {
    /// Records whether the last call to the API server worked.
    pub fn set_api_reachable(&self, ok: bool) {
        self.api_reachable.store(ok, Ordering::Relaxed);
    }

    /// Records that the webhook serves with a valid certificate.
    pub fn set_webhook_serving(&self, ok: bool) {
        self.webhook_serving.store(ok, Ordering::Relaxed);
    }

    /// Records that the webhook's watch caches (policies, namespaces) hold a full listing.
    pub fn set_caches_synced(&self, ok: bool) {
        self.caches_synced.store(ok, Ordering::Relaxed);
    }

    /// Records that shutdown began: `/readyz` fails from now on so the webhook Service stops
    /// sending admission requests here, while the webhook still answers those on their way.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why this replica is not ready, or `None` when it is: the API server answers, the webhook
    /// serves with its caches synced, and no shutdown is under way.
    pub fn not_ready(&self) -> Option<&'static str> {
        let up = |flag: &AtomicBool| flag.load(Ordering::Relaxed);
        if up(&self.draining) {
            Some("shutting down")
        } else if !up(&self.api_reachable) {
            Some("Kubernetes API unreachable")
        } else if !up(&self.webhook_serving) {
            Some("webhook certificate not loaded")
        } else if !up(&self.caches_synced) {
            Some("policy and namespace caches not synced")
        } else {
            None
        }
    }

    /// Ready when [`Health::not_ready`] finds nothing.
    pub fn ready(&self) -> bool {
        self.not_ready().is_none()
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    health: Health,
}

/// The admin routes.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, health })
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String) {
        let res = app
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_health_and_metrics_are_served() {
        let health = Health::default();
        let app = router(Metrics::new(), health.clone());
        assert_eq!(get_path(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get_path(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_api_reachable(true);
        health.set_webhook_serving(true);
        assert_eq!(
            get_path(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced"
        );
        health.set_caches_synced(true);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.set_draining();
        let (status, text) = get_path(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("shutting down"), "{text}");
        let (status, text) = get_path(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("mcp_warden_operator_injections"));
    }
}
