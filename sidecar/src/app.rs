//! The public port: protected-resource metadata, the OAuth facade (proxy mode), and the
//! authenticate-then-proxy path for everything else.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::challenge::error_body;
use crate::metrics::{Metrics, Outcome, Reason};
use crate::origin::{OriginCheck, Origins, is_preflight};
use crate::proxy::Upstream;
use crate::rules::MAX_RPC_BODY;
use crate::runtime::Runtime;
use crate::scopes;
use crate::verify::TokenError;

/// Shared by every request.
pub struct AppState {
    /// The policy in force; swapped whole on reload.
    pub runtime: ArcSwap<Runtime>,
    /// The app.
    pub upstream: Upstream,
    /// Metric families.
    pub metrics: Metrics,
}

/// The public router.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

type Answer = (Response, Outcome, Reason);

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let runtime = state.runtime.load_full();
    let (response, outcome, reason) = serve(&state, &runtime, request).await;
    state.metrics.observe(
        &runtime.policy,
        outcome,
        reason,
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn serve(state: &AppState, rt: &Runtime, request: Request) -> Answer {
    let path = request.uri().path();
    if path == rt.metadata_root || path == rt.metadata_suffixed {
        return (
            metadata(rt, request.method()),
            Outcome::Metadata,
            Reason::None,
        );
    }
    if let Some(endpoints) = rt.endpoints.as_ref().filter(|e| (e.handles)(path)) {
        let response = endpoints
            .router
            .clone()
            .oneshot(request)
            .await
            .into_response();
        return (response, Outcome::Metadata, Reason::None);
    }
    let origin = match rt.origins.check(request.headers()) {
        OriginCheck::Forbidden => {
            let response = error_body(
                StatusCode::FORBIDDEN,
                "forbidden",
                "requests from this origin are not allowed",
            );
            return (response, Outcome::Forbidden, Reason::Origin);
        }
        OriginCheck::Allowed(origin) => Some(origin),
        OriginCheck::Absent => None,
    };
    let (mut response, outcome, reason) = match &origin {
        Some(origin) if is_preflight(request.method(), request.headers()) => {
            (Origins::preflight(origin), Outcome::Preflight, Reason::None)
        }
        _ => authorize_and_forward(state, rt, request).await,
    };
    if let Some(origin) = &origin {
        Origins::decorate(origin, &mut response);
    }
    (response, outcome, reason)
}

fn metadata(rt: &Runtime, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD && method != Method::OPTIONS {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    // Public, so any origin may read it (browser clients fetch it cross-origin).
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        ),
    ];
    if method == Method::OPTIONS {
        return (StatusCode::NO_CONTENT, headers).into_response();
    }
    (headers, rt.metadata.clone()).into_response()
}

/// The bearer token of a request, if it has exactly one `Authorization: Bearer` header.
enum Credentials<'a> {
    None,
    Bearer(&'a str),
    Ambiguous,
}

fn credentials(request: &Request) -> Credentials<'_> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::None;
    };
    if values.next().is_some() {
        return Credentials::Ambiguous;
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Ambiguous;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Credentials::Bearer(token.trim())
        }
        // Another scheme (Basic…) is not a bearer token: challenge as if none was sent.
        _ => Credentials::None,
    }
}

async fn authorize_and_forward(state: &AppState, rt: &Runtime, request: Request) -> Answer {
    let token = match credentials(&request) {
        Credentials::Bearer(token) => token,
        Credentials::None => {
            return (
                rt.challenge.unauthorized(None),
                Outcome::Unauthorized,
                Reason::MissingToken,
            );
        }
        Credentials::Ambiguous => {
            let response = error_body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "exactly one Authorization header is allowed",
            );
            return (response, Outcome::BadRequest, Reason::InvalidRequest);
        }
    };
    let principal = match rt.verifier.verify(token).await {
        Ok((principal, cached)) => {
            if cached {
                state.metrics.token_cache_hits.inc();
            }
            principal
        }
        Err(TokenError::KeysUnavailable) => {
            let mut response = error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token issuer's keys are not available yet",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return (response, Outcome::Unauthorized, Reason::KeysUnavailable);
        }
        Err(e) => {
            return (
                rt.challenge.unauthorized(Some(e)),
                Outcome::Unauthorized,
                e.reason(),
            );
        }
    };

    let (request, needed) = if rt.rules.is_empty() || request.method() != Method::POST {
        (request, rt.required_scopes.clone())
    } else {
        match rule_scopes(rt, request).await {
            Ok(found) => found,
            Err(answer) => return answer,
        }
    };
    if !principal.scopes.missing(&needed).is_empty() {
        let response = rt
            .challenge
            .forbidden(&scopes::join(needed.iter().map(String::as_str)));
        return (response, Outcome::Forbidden, Reason::InsufficientScope);
    }

    let (mut parts, body) = request.into_parts();
    rt.forwarding.apply(&mut parts.headers, &principal);
    match state
        .upstream
        .forward(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => (response, Outcome::Allowed, Reason::None),
        Err(response) => (
            response,
            Outcome::UpstreamError,
            Reason::UpstreamUnavailable,
        ),
    }
}

/// Reads a POST body (bounded) to find the scopes the policy's rules ask for, and rebuilds the
/// request around the buffered bytes.
async fn rule_scopes(rt: &Runtime, request: Request) -> Result<(Request, Vec<String>), Answer> {
    let (parts, body) = request.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_RPC_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let response = error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large",
            );
            return Err((response, Outcome::BadRequest, Reason::InvalidRequest));
        }
    };
    let extra = rt.rules.required_for(&bytes).map_err(|e| {
        (
            error_body(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
            Outcome::BadRequest,
            Reason::InvalidRequest,
        )
    })?;
    let mut needed = rt.required_scopes.clone();
    for scope in extra {
        if !needed.contains(&scope) {
            needed.push(scope);
        }
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), needed))
}
