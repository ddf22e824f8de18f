//! How the OAuth endpoints refuse: RFC 6749 JSON errors with the right status, redirects back to
//! the client carrying `iss` (RFC 9207), plain pages when the client cannot be trusted with a
//! redirect, and 503 + `Retry-After` when the state store is down. Upstream error text is never
//! passed on.

use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::metrics::OpResult;
use super::page;
use crate::store::StoreError;

/// A refused OAuth request.
#[derive(Debug)]
pub enum Reject {
    /// A JSON error (token, register, revoke endpoints).
    Json {
        /// HTTP status.
        status: StatusCode,
        /// RFC 6749 / 7591 error code.
        error: &'static str,
        /// Human-readable text, safe to show.
        description: String,
    },
    /// An HTML error page (the browser leg when redirecting is unsafe).
    Page {
        /// HTTP status.
        status: StatusCode,
        /// Text for the user.
        message: String,
    },
    /// The state store cannot be reached.
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after: u64,
    },
    /// Too many requests from one client or address.
    RateLimited {
        /// Seconds for `Retry-After`.
        retry_after: u64,
    },
}

impl Reject {
    /// 400 with an RFC 6749 error code.
    pub fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Reject::Json {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    /// 401 `invalid_client`: unknown, stale or unauthenticated client. Clients react by
    /// registering again, which a 400 would not make them do.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Reject::Json {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }

    /// A page for the browser.
    pub fn page(status: StatusCode, message: impl Into<String>) -> Self {
        Reject::Page {
            status,
            message: message.into(),
        }
    }

    /// The bounded metric label for this refusal.
    pub fn result(&self) -> OpResult {
        match self {
            Reject::Json { error, .. } => match *error {
                "invalid_client" => OpResult::InvalidClient,
                "invalid_grant" => OpResult::InvalidGrant,
                "invalid_target" => OpResult::InvalidTarget,
                "invalid_scope" => OpResult::InvalidScope,
                "invalid_redirect_uri" => OpResult::InvalidRedirectUri,
                "invalid_client_metadata" => OpResult::InvalidClientMetadata,
                "unsupported_grant_type" => OpResult::UnsupportedGrantType,
                "access_denied" => OpResult::AccessDenied,
                "server_error" | "temporarily_unavailable" => OpResult::UpstreamError,
                _ => OpResult::InvalidRequest,
            },
            Reject::Page { .. } => OpResult::InvalidRequest,
            Reject::Unavailable { .. } => OpResult::Unavailable,
            Reject::RateLimited { .. } => OpResult::RateLimited,
        }
    }
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "oauth state store error");
        Reject::Unavailable {
            retry_after: e.retry_after(),
        }
    }
}

fn retry(status: StatusCode, error: &str, retry_after: u64) -> Response {
    let body = serde_json::json!({"error": error, "error_description": "try again later"});
    let mut r = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Json {
                status,
                error,
                description,
            } => {
                let body = serde_json::json!({"error": error, "error_description": description});
                let mut r = (
                    status,
                    [(header::CACHE_CONTROL, "no-store")],
                    axum::Json(body),
                )
                    .into_response();
                if status == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"mcp-warden\""),
                    );
                }
                r
            }
            Reject::Page { status, message } => {
                let mut r = (status, Html(page::error_page(&message))).into_response();
                page::protect(r.headers_mut());
                r
            }
            Reject::Unavailable { retry_after } => retry(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                retry_after,
            ),
            Reject::RateLimited { retry_after } => {
                retry(StatusCode::TOO_MANY_REQUESTS, "slow_down", retry_after)
            }
        }
    }
}
