//! The browser leg, first half: `/authorize` checks the client's request and sends the browser to
//! the upstream provider, bound to it by a random per-flow cookie (its hash is in the flow
//! record). The second half, from `/callback` to our code, is in [`super::consent`].
//!
//! Until the redirect URI is known to belong to the client, errors are shown as a page (never a
//! redirect: that would make us an open redirector). After that, errors go back to the client
//! with `error`, its `state` and our `iss` (RFC 9207), never with upstream error text.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, header};
use serde::Deserialize;
use url::Url;

use super::crypto::{random_token, sha256_b64};
use super::metrics::{DenyReason, OpResult};
use super::records::{AuthRequest, Pending};
use mcp_warden_policy::RateLimitedEndpoint;

use super::{
    ClientAddr, FLOW_TTL, MAX_SCOPE_PARAM, MAX_STATE, OAuthProxy, RateKey, Reject, redirect,
};

const FLOW_COOKIE: &str = "mcpw-flow";

/// Query of `GET /authorize`.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
}

/// An error sent back to the client's redirect URI.
pub(super) fn redirect_error(
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    Redirect::to(&redirect_url(
        issuer,
        redirect_uri,
        state,
        error,
        description,
    ))
    .into_response()
}

/// The client's redirect URI carrying an RFC 6749 §4.1.2.1 error, its `state` and our `iss`.
pub(super) fn redirect_url(
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> String {
    let mut url = Url::parse(redirect_uri).expect("registered redirect URIs parse");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        q.append_pair("error_description", description);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", issuer);
    }
    url.into()
}

pub(super) fn host_of(uri: &str) -> String {
    Url::parse(uri).ok().map_or_else(
        || uri.to_owned(),
        |u| {
            u.host_str()
                .map_or_else(|| format!("{}:", u.scheme()), str::to_owned)
        },
    )
}

/// `GET /authorize`.
pub async fn authorize(
    State(proxy): State<Arc<OAuthProxy>>,
    addr: ClientAddr,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    match authorize_inner(&proxy, &addr, q).await {
        Ok(r) => r,
        Err(e) => {
            proxy.metrics.authorization(e.result());
            e.into_response()
        }
    }
}

async fn authorize_inner(
    proxy: &OAuthProxy,
    addr: &ClientAddr,
    q: AuthorizeQuery,
) -> Result<Response, Reject> {
    proxy
        .limit(RateLimitedEndpoint::Authorize, RateKey::Address(addr))
        .await?;
    // Stored with the flow and echoed: bounded before anything is looked up (a page, not a
    // redirect: the redirect URI is not checked yet).
    if q.state.as_ref().is_some_and(|s| s.len() > MAX_STATE)
        || q.scope.as_ref().is_some_and(|s| s.len() > MAX_SCOPE_PARAM)
    {
        return Err(Reject::page(
            StatusCode::BAD_REQUEST,
            "The request's state or scope is too long.",
        ));
    }
    let client_id = q
        .client_id
        .as_deref()
        .ok_or_else(|| Reject::page(StatusCode::BAD_REQUEST, "The request has no client_id."))?;
    let client = proxy.client(client_id).await?;
    proxy
        .limit(
            RateLimitedEndpoint::Authorize,
            RateKey::Client(&client.client_id),
        )
        .await?;
    let redirect_uri = match (&q.redirect_uri, client.redirect_uris.as_slice()) {
        (Some(uri), registered) if redirect::matches_registered(registered, uri) => uri.clone(),
        (Some(_), _) => {
            return Err(Reject::page(
                StatusCode::BAD_REQUEST,
                "The redirect_uri is not registered for this client.",
            ));
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(Reject::page(
                StatusCode::BAD_REQUEST,
                "The request has no redirect_uri.",
            ));
        }
    };
    proxy.keep_client(&client).await?;
    let state = q.state.as_deref();
    let fail = |error: &str, description: &str| {
        proxy.metrics.authorization(match error {
            "invalid_target" => OpResult::InvalidTarget,
            "invalid_scope" => OpResult::InvalidScope,
            _ => OpResult::InvalidRequest,
        });
        Ok(redirect_error(
            &proxy.issuer,
            &redirect_uri,
            state,
            error,
            description,
        ))
    };
    if q.response_type.as_deref() != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = q
        .code_challenge
        .clone()
        .filter(|c| (43..=128).contains(&c.len()))
    else {
        return fail("invalid_request", "PKCE code_challenge is required");
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if q.resource
        .as_deref()
        .is_some_and(|r| !proxy.is_our_resource(r))
    {
        return fail(
            "invalid_target",
            "the resource is not served by this authorization server",
        );
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in q
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        // offline_access is implied: refresh tokens are always issued.
        if s == "offline_access" || scopes.iter().any(|x| x == s) {
            continue;
        }
        if !proxy.scopes_supported.is_empty() && !proxy.scopes_supported.iter().any(|x| x == s) {
            return fail("invalid_scope", "a requested scope is not supported");
        }
        // A scope no `scopeGrants` entry names is never granted (RFC 6749 §3.3 lets the
        // server grant less than asked; the token response says what was granted).
        if proxy.access.grantable(s) {
            scopes.push(s.to_owned());
        }
    }
    if q.scope.as_deref().is_none_or(|s| s.trim().is_empty()) {
        scopes = proxy
            .scopes_supported
            .iter()
            .filter(|s| proxy.access.grantable(s))
            .cloned()
            .collect();
    }
    let request = AuthRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: q.redirect_uri.is_some(),
        state: q.state.clone(),
        code_challenge: challenge,
        scopes,
        resource: proxy.resource.clone(),
    };
    proxy.start_upstream(request).await
}

/// The cookie binding one flow to the browser that started it, named after the upstream
/// `state` so that parallel flows in one browser do not overwrite each other's.
pub(super) fn flow_cookie(state: &str) -> String {
    format!("{FLOW_COOKIE}-{}", &sha256_b64(state.as_bytes())[..16])
}

impl OAuthProxy {
    /// Stores the flow under a fresh upstream `state`, binds it to this browser with a random
    /// cookie (its hash is in the flow record) and sends the browser to the provider.
    async fn start_upstream(&self, request: AuthRequest) -> Result<Response, Reject> {
        let upstream = match self.upstream().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "upstream provider discovery failed");
                self.metrics.authorization(OpResult::UpstreamError);
                return Ok(redirect_error(
                    &self.issuer,
                    &request.redirect_uri,
                    request.state.as_deref(),
                    "temporarily_unavailable",
                    "the identity provider cannot be reached",
                ));
            }
        };
        let verifier = random_token(32);
        let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            verifier.as_bytes(),
        ));
        let nonce = random_token(16);
        let state = random_token(24);
        let browser = random_token(32);
        let url = upstream.authorize_url(
            &self.callback_url(),
            &state,
            &challenge,
            &nonce,
            &request.resource,
        );
        let pending = Pending {
            request,
            upstream_verifier: verifier,
            nonce,
            browser: sha256_b64(browser.as_bytes()),
        };
        self.put_json("state", &state, &pending, FLOW_TTL).await?;
        let mut resp = Redirect::to(&url).into_response();
        resp.headers_mut().append(
            header::SET_COOKIE,
            self.cookies
                .set(&flow_cookie(&state), &browser, FLOW_TTL.as_secs()),
        );
        Ok(resp)
    }

    /// Counts and logs (audit) a refused sign-in.
    pub(super) fn refuse(&self, reason: DenyReason, client_id: &str, subject: Option<&str>) {
        self.metrics.access_denied(&self.policy, reason);
        tracing::warn!(
            audit = "oauth_access_denied",
            policy = %self.policy,
            namespace = %self.namespace,
            reason = reason.as_str(),
            client_id,
            subject,
            "sign-in refused"
        );
    }
}
