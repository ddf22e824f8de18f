//! The browser leg: `/authorize` → consent page → `/consent` → upstream provider → `/callback`
//! → back to the client with our code.
//!
//! Until the redirect URI is known to belong to the client, errors are shown as a page (never a
//! redirect: that would make us an open redirector). After that, errors go back to the client
//! with `error`, its `state` and our `iss` (RFC 9207), never with upstream error text.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use url::Url;

use super::crypto::{random_token, sha256_b64};
use super::metrics::{Decision, OpResult};
use super::page::{self, ConsentView};
use super::provider::{Identity, UpstreamTokens, send};
use super::records::{AuthRequest, CodeGrant, Pending};
use super::{AUTHORIZE_LIMIT, CODE_TTL, ClientAddr, FLOW_TTL, OAuthProxy, Reject, redirect};
use mcp_warden_policy::ConsentMode;

const TX_COOKIE: &str = "mcpw-tx";
const USER_COOKIE: &str = "mcpw-user";

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
fn redirect_error(
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
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
    Redirect::to(url.as_str()).into_response()
}

fn host_of(uri: &str) -> String {
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
    headers: HeaderMap,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    match authorize_inner(&proxy, &addr, &headers, q).await {
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
    headers: &HeaderMap,
    q: AuthorizeQuery,
) -> Result<Response, Reject> {
    proxy.limit("authorize", &addr.0, AUTHORIZE_LIMIT).await?;
    let client_id = q
        .client_id
        .as_deref()
        .ok_or_else(|| Reject::page(StatusCode::BAD_REQUEST, "The request has no client_id."))?;
    let client = proxy.client(client_id).await?;
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
        scopes.push(s.to_owned());
    }
    if scopes.is_empty() {
        scopes = proxy
            .scopes_supported
            .iter()
            .filter(|s| *s != "offline_access")
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
    let remembered_user = (proxy.spec.consent == ConsentMode::Remember)
        .then(|| proxy.cookies.get(headers, USER_COOKIE))
        .flatten()
        .and_then(|c| proxy.enc.verify(c));
    if let Some(subject) = remembered_user
        && proxy
            .store
            .get(&proxy.key("consent", &approval_id(subject, &request)))
            .await?
            .is_some()
    {
        proxy.metrics.consent(Decision::Remembered);
        return proxy.start_upstream(request).await;
    }
    let tx = random_token(24);
    proxy.put_json("tx", &tx, &request, FLOW_TTL).await?;
    let csrf = proxy.enc.sign(&format!("csrf:{tx}"));
    let html = page::consent_page(&ConsentView {
        server: &proxy.server_name,
        client_name: client.client_name.as_deref(),
        client_id: &client.client_id,
        redirect_host: &host_of(&redirect_uri),
        scopes: &request.scopes,
        tx: &tx,
        csrf: &csrf,
    });
    let mut resp = Html(html).into_response();
    page::protect(resp.headers_mut());
    resp.headers_mut().append(
        header::SET_COOKIE,
        proxy
            .cookies
            .set(TX_COOKIE, &proxy.enc.sign(&tx), FLOW_TTL.as_secs()),
    );
    Ok(resp)
}

/// Approvals are remembered per user, client and redirect URI.
fn approval_id(subject_b64: &str, request: &AuthRequest) -> String {
    sha256_b64(
        format!(
            "{subject_b64}\n{}\n{}",
            request.client_id, request.redirect_uri
        )
        .as_bytes(),
    )
}

/// Form of `POST /consent`.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    tx: String,
    csrf: String,
    decision: String,
}

/// `POST /consent`: the user's decision. The form must come with the flow's signed cookie and a
/// CSRF token bound to the same flow, so another site cannot approve on the user's behalf.
pub async fn consent(
    State(proxy): State<Arc<OAuthProxy>>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let cookie_tx = proxy
        .cookies
        .get(&headers, TX_COOKIE)
        .and_then(|c| proxy.enc.verify(c));
    let csrf_ok = proxy.enc.verify(&form.csrf) == Some(format!("csrf:{}", form.tx).as_str());
    if cookie_tx != Some(form.tx.as_str()) || !csrf_ok {
        proxy.metrics.consent(Decision::CsrfFailed);
        return Reject::page(StatusCode::FORBIDDEN, "This approval did not come from the consent page of this browser session. Start the sign-in again from your application.").into_response();
    }
    let request: AuthRequest =
        match proxy.take_json("tx", &form.tx).await {
            Ok(Some(r)) => r,
            Ok(None) => return Reject::page(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was already used. Start again from your application.",
            )
            .into_response(),
            Err(e) => return Reject::from(e).into_response(),
        };
    let mut resp = if form.decision == "approve" {
        proxy.metrics.consent(Decision::Approved);
        proxy
            .start_upstream(request)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    } else {
        proxy.metrics.consent(Decision::Denied);
        proxy.metrics.authorization(OpResult::AccessDenied);
        redirect_error(
            &proxy.issuer,
            &request.redirect_uri,
            request.state.as_deref(),
            "access_denied",
            "the user denied the request",
        )
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, proxy.cookies.set(TX_COOKIE, "", 0));
    resp
}

impl OAuthProxy {
    /// Stores the flow under a fresh upstream `state` and sends the browser to the provider.
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
        };
        self.put_json("state", &state, &pending, FLOW_TTL).await?;
        Ok(Redirect::to(&url).into_response())
    }
}

/// Query of `GET /callback` (from the upstream provider).
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /callback`: the upstream `state` is taken exactly once; the code is exchanged with our
/// PKCE verifier; the user's identity is read; the client gets our own code.
pub async fn callback(
    State(proxy): State<Arc<OAuthProxy>>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(state) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 128)
    else {
        proxy.metrics.authorization(OpResult::InvalidRequest);
        return Reject::page(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer has no state.",
        )
        .into_response();
    };
    let pending: Pending = match proxy.take_json("state", state).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            proxy.metrics.authorization(OpResult::InvalidRequest);
            return Reject::page(StatusCode::BAD_REQUEST, "This sign-in has expired or was already completed. Start again from your application.").into_response();
        }
        Err(e) => return Reject::from(e).into_response(),
    };
    let req = &pending.request;
    let back = |error: &str, description: &str, result: OpResult| {
        proxy.metrics.authorization(result);
        redirect_error(
            &proxy.issuer,
            &req.redirect_uri,
            req.state.as_deref(),
            error,
            description,
        )
    };
    if let Some(error) = q.error.as_deref() {
        let code = if error == "access_denied" {
            "access_denied"
        } else {
            "server_error"
        };
        return back(
            code,
            "the identity provider did not authorize the request",
            OpResult::AccessDenied,
        );
    }
    let Some(code) = q.code.as_deref() else {
        return back(
            "server_error",
            "the identity provider sent no code",
            OpResult::UpstreamError,
        );
    };
    let (tokens, identity) = match proxy.exchange_upstream(code, &pending).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "upstream code exchange failed");
            return back(
                "server_error",
                "signing in with the identity provider failed",
                OpResult::UpstreamError,
            );
        }
    };
    let our_code = random_token(32);
    let code_id = sha256_b64(our_code.as_bytes());
    let sealed = proxy.enc.seal(
        &format!("code:{code_id}"),
        &serde_json::to_vec(&tokens).expect("tokens serialise"),
    );
    let grant = CodeGrant {
        request: req.clone(),
        identity: identity.clone(),
        upstream: sealed,
    };
    if let Err(e) = proxy.put_json("code", &code_id, &grant, CODE_TTL).await {
        return Reject::from(e).into_response();
    }
    let mut url = Url::parse(&req.redirect_uri).expect("registered redirect URIs parse");
    {
        let mut qp = url.query_pairs_mut();
        qp.append_pair("code", &our_code);
        if let Some(s) = &req.state {
            qp.append_pair("state", s);
        }
        qp.append_pair("iss", &proxy.issuer);
    }
    let mut resp = Redirect::to(url.as_str()).into_response();
    if proxy.spec.consent == ConsentMode::Remember {
        let subject = URL_SAFE_NO_PAD.encode(identity.subject.as_bytes());
        let ttl = std::time::Duration::from_secs(proxy.spec.refresh_token_ttl_seconds.into());
        if let Err(e) = proxy
            .store
            .put(
                &proxy.key("consent", &approval_id(&subject, req)),
                b"1",
                ttl,
            )
            .await
        {
            tracing::warn!(error = %e, "could not remember the consent");
        }
        resp.headers_mut().append(
            header::SET_COOKIE,
            proxy
                .cookies
                .set(USER_COOKIE, &proxy.enc.sign(&subject), ttl.as_secs()),
        );
    }
    proxy.metrics.authorization(OpResult::Success);
    resp
}

impl OAuthProxy {
    async fn exchange_upstream(
        &self,
        code: &str,
        pending: &Pending,
    ) -> Result<(UpstreamTokens, Identity), super::UpstreamError> {
        let upstream = self.upstream().await?;
        let call = upstream.code_request(
            code,
            &self.callback_url(),
            &pending.upstream_verifier,
            &pending.request.resource,
        );
        let (status, body) = send(&self.http, &call).await?;
        let tokens = upstream.parse_tokens(status, &body)?;
        let identity = match &tokens.id_token {
            Some(id_token) => upstream.identity_from_id_token(id_token, &pending.nonce)?,
            None => {
                let call = upstream
                    .identity_request(&tokens.access_token)
                    .ok_or_else(|| {
                        super::UpstreamError::Malformed(
                            "no ID token and no userinfo endpoint".into(),
                        )
                    })?;
                let (status, body) = send(&self.http, &call).await?;
                if status != 200 {
                    return Err(super::UpstreamError::Malformed(format!(
                        "identity endpoint status {status}"
                    )));
                }
                upstream.parse_identity(&body)?
            }
        };
        Ok((tokens, identity))
    }
}
