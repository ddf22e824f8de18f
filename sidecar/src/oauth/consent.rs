//! The browser leg, second half: `/callback` → consent page → `POST /consent` → back to the
//! client with our code.
//!
//! `/callback` completes only in the browser that opened `/authorize` (the per-flow cookie).
//! Consent comes after the upstream sign-in, so the page names the signed-in user and shows the
//! scopes that user is actually granted (`scopeGrants`), after `access` has decided whether they
//! may sign in at all; a remembered approval (`consent: remember`) counts only for the user who
//! has just signed in and exactly the client, redirect URI and scope set approved.
//!
//! Errors go back to the client with `error`, its `state` and our `iss` (RFC 9207), never with
//! upstream error text.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode, header};
use mcp_warden_policy::ConsentMode;
use serde::Deserialize;
use url::Url;

use super::authorize::{flow_cookie, host_of, redirect_error, redirect_url};
use super::crypto::{constant_time_eq, random_token, sha256_b64};
use super::metrics::{Decision, DenyReason, OpResult};
use super::page::{self, ConsentView};
use super::provider::{Identity, UpstreamTokens, send};
use super::records::{AuthRequest, CodeGrant, Pending};
use super::{CODE_TTL, FLOW_TTL, OAuthProxy, Reject};

const TX_COOKIE: &str = "mcpw-tx";

/// Approvals are remembered per signed-in user, client, redirect URI and granted scope set.
fn approval_id(subject: &str, request: &AuthRequest) -> String {
    let mut scopes = request.scopes.clone();
    scopes.sort();
    sha256_b64(
        format!(
            "{}\n{}\n{}\n{}",
            URL_SAFE_NO_PAD.encode(subject.as_bytes()),
            request.client_id,
            request.redirect_uri,
            scopes.join(" ")
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

/// `POST /consent`: the signed-in user's decision. The form must come with the flow's signed
/// cookie and a CSRF token bound to the same flow, so another site cannot approve on the user's
/// behalf.
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
    let waiting: CodeGrant =
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
        let upstream = proxy
            .enc
            .open(&format!("tx:{}", form.tx), &waiting.upstream);
        match upstream {
            Some(tokens) => proxy
                .issue_code(waiting.request, waiting.identity, &tokens, true)
                .await
                .unwrap_or_else(IntoResponse::into_response),
            None => Reject::page(
                StatusCode::BAD_REQUEST,
                "This sign-in cannot be read any more. Start again from your application.",
            )
            .into_response(),
        }
    } else {
        proxy.metrics.consent(Decision::Denied);
        proxy.metrics.authorization(OpResult::AccessDenied);
        redirect_error(
            &proxy.issuer,
            &waiting.request.redirect_uri,
            waiting.request.state.as_deref(),
            "access_denied",
            "the user denied the request",
        )
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, proxy.cookies.set(TX_COOKIE, "", 0));
    resp
}

impl OAuthProxy {
    /// Stores our code for a consented, signed-in flow and sends the browser back to the
    /// client with it. `remember` records the approval (`consent: remember`).
    async fn issue_code(
        &self,
        request: AuthRequest,
        identity: Identity,
        upstream_tokens: &[u8],
        remember: bool,
    ) -> Result<Response, Reject> {
        let our_code = random_token(32);
        let code_id = super::token::code_id(&request.client_id, &our_code);
        let sealed = self.enc.seal(&format!("code:{code_id}"), upstream_tokens);
        if remember && self.spec.consent == ConsentMode::Remember {
            let ttl = std::time::Duration::from_secs(self.spec.refresh_token_ttl_seconds.into());
            let key = self.key("consent", &approval_id(&identity.subject, &request));
            if let Err(e) = self.store.put(&key, b"1", ttl).await {
                tracing::warn!(error = %e, "could not remember the consent");
            }
        }
        let mut url = Url::parse(&request.redirect_uri).expect("registered redirect URIs parse");
        {
            let mut qp = url.query_pairs_mut();
            qp.append_pair("code", &our_code);
            if let Some(s) = &request.state {
                qp.append_pair("state", s);
            }
            qp.append_pair("iss", &self.issuer);
        }
        let grant = CodeGrant {
            request,
            identity,
            upstream: sealed,
        };
        self.put_json("code", &code_id, &grant, CODE_TTL).await?;
        self.metrics.authorization(OpResult::Success);
        Ok(Redirect::to(url.as_str()).into_response())
    }
}

/// Query of `GET /callback` (from the upstream provider).
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /callback`: the upstream `state` is taken exactly once and must come with the cookie
/// of the browser that started the flow; the code is exchanged with our PKCE verifier; the
/// user's identity decides whether they may sign in and which scopes they get; then the
/// consent page (or a remembered approval of exactly this user, client, redirect URI and
/// scopes) leads to our code.
pub async fn callback(
    State(proxy): State<Arc<OAuthProxy>>,
    headers: HeaderMap,
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
    let cookie = flow_cookie(state);
    let same_browser = proxy.cookies.get(&headers, &cookie).is_some_and(|v| {
        constant_time_eq(
            sha256_b64(v.as_bytes()).as_bytes(),
            pending.browser.as_bytes(),
        )
    });
    let mut resp = if same_browser {
        proxy
            .finish_sign_in(&pending, &q)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    } else {
        proxy.refuse(DenyReason::OtherBrowser, &pending.request.client_id, None);
        proxy.metrics.authorization(OpResult::AccessDenied);
        Reject::page(
            StatusCode::FORBIDDEN,
            "This sign-in was started in a different browser (or this browser did not keep its \
             cookie). For your safety it cannot be completed here. Start the sign-in again from \
             your application, in this browser.",
        )
        .into_response()
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, proxy.cookies.set(&cookie, "", 0));
    resp
}

impl OAuthProxy {
    async fn finish_sign_in(
        &self,
        pending: &Pending,
        q: &CallbackQuery,
    ) -> Result<Response, Reject> {
        let req = &pending.request;
        let back = |error: &str, description: &str, result: OpResult| {
            self.metrics.authorization(result);
            Ok(redirect_error(
                &self.issuer,
                &req.redirect_uri,
                req.state.as_deref(),
                error,
                description,
            ))
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
        let (tokens, mut identity) = match self.exchange_upstream(code, pending).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "upstream sign-in failed");
                return back(
                    "server_error",
                    "signing in with the identity provider failed",
                    OpResult::UpstreamError,
                );
            }
        };
        self.access.keep_named_facts(&mut identity);
        if !self.access.allows(&identity) {
            self.refuse(
                DenyReason::NotAllowed,
                &req.client_id,
                Some(&identity.subject),
            );
            self.metrics.authorization(OpResult::AccessDenied);
            let back = redirect_url(
                &self.issuer,
                &req.redirect_uri,
                req.state.as_deref(),
                "access_denied",
                "this account is not allowed to use this server",
            );
            let html = page::denied_page(
                &self.server_name,
                &display_name(&identity),
                &back,
                &host_of(&req.redirect_uri),
            );
            let mut resp = (StatusCode::FORBIDDEN, Html(html)).into_response();
            page::protect(resp.headers_mut());
            return Ok(resp);
        }
        let mut request = req.clone();
        request.scopes = self.access.grant(&req.scopes, &identity);
        if request.scopes.len() < req.scopes.len() {
            let withheld: Vec<&str> = req
                .scopes
                .iter()
                .filter(|s| !request.scopes.contains(s))
                .map(String::as_str)
                .collect();
            tracing::info!(
                audit = "oauth_scopes_withheld",
                policy = %self.policy,
                client_id = %req.client_id,
                subject = %identity.subject,
                withheld = %withheld.join(" "),
                "requested scopes not granted to this user"
            );
        }
        let upstream = serde_json::to_vec(&tokens).expect("tokens serialise");
        if self.spec.consent == ConsentMode::Remember {
            let key = self.key("consent", &approval_id(&identity.subject, &request));
            if self.store.get(&key).await?.is_some() {
                self.metrics.consent(Decision::Remembered);
                return self.issue_code(request, identity, &upstream, false).await;
            }
        }
        let client = self.client(&request.client_id).await?;
        let tx = random_token(24);
        let waiting = CodeGrant {
            upstream: self.enc.seal(&format!("tx:{tx}"), &upstream),
            request,
            identity,
        };
        self.put_json("tx", &tx, &waiting, FLOW_TTL).await?;
        let csrf = self.enc.sign(&format!("csrf:{tx}"));
        let html = page::consent_page(&ConsentView {
            server: &self.server_name,
            client_name: client.client_name.as_deref(),
            client_id: &client.client_id,
            redirect_host: &host_of(&waiting.request.redirect_uri),
            signed_in_as: &display_name(&waiting.identity),
            scopes: &waiting.request.scopes,
            tx: &tx,
            csrf: &csrf,
        });
        let mut resp = Html(html).into_response();
        page::protect(resp.headers_mut());
        resp.headers_mut().append(
            header::SET_COOKIE,
            self.cookies
                .set(TX_COOKIE, &self.enc.sign(&tx), FLOW_TTL.as_secs()),
        );
        Ok(resp)
    }
}

/// How the signed-in user is named on pages: verified email, login, or subject.
fn display_name(id: &Identity) -> String {
    id.email
        .clone()
        .filter(|_| id.email_verified)
        .or_else(|| id.preferred_username.clone())
        .unwrap_or_else(|| id.subject.clone())
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
            None => self.userinfo(upstream, &tokens.access_token).await?,
        };
        let identity = self
            .complete_identity(
                upstream,
                &tokens.access_token,
                identity,
                tokens.id_token.is_some(),
            )
            .await?;
        Ok((tokens, identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scopes: &[&str]) -> AuthRequest {
        AuthRequest {
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1:5/cb".into(),
            redirect_uri_given: true,
            state: None,
            code_challenge: "x".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resource: "https://mcp.example.com/mcp".into(),
        }
    }

    #[test]
    fn approvals_are_per_user_client_redirect_and_scope_set() {
        let base = approval_id("alice", &request(&["a", "b"]));
        assert_eq!(base, approval_id("alice", &request(&["b", "a"])), "order");
        assert_ne!(base, approval_id("bob", &request(&["a", "b"])));
        assert_ne!(base, approval_id("alice", &request(&["a"])));
        assert_ne!(base, approval_id("alice", &request(&["a", "b", "c"])));
        let mut other = request(&["a", "b"]);
        other.redirect_uri = "http://127.0.0.1:6/cb".into();
        assert_ne!(base, approval_id("alice", &other));
        other = request(&["a", "b"]);
        other.client_id = "c2".into();
        assert_ne!(base, approval_id("alice", &other));
        // A subject containing the separator cannot pose as another user's approval.
        assert_ne!(
            approval_id("alice\nc1", &request(&[])),
            approval_id("alice", &request(&[]))
        );
    }

    #[test]
    fn pages_name_the_verified_email_else_the_login() {
        let mut id = Identity {
            subject: "42".into(),
            preferred_username: Some("octocat".into()),
            email: Some("o@x.test".into()),
            ..Identity::default()
        };
        assert_eq!(
            display_name(&id),
            "octocat",
            "unverified email is not shown"
        );
        id.email_verified = true;
        assert_eq!(display_name(&id), "o@x.test");
    }
}
