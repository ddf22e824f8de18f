//! `/token` (authorization_code with PKCE S256, refresh_token) and `/revoke`.
//!
//! Codes are consumed atomically (`take`), so of two replicas racing on one code exactly one
//! issues tokens. Refresh tokens are `<family>.<secret>`; each use rotates the secret with a
//! compare-and-swap on the family record. A duplicate of the last rotation arriving within
//! [`REFRESH_GRACE_SECONDS`] gets the same new token (concurrent refreshes must not log the user
//! out); any older token presented later is reuse: the whole family is revoked.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::crypto::{constant_time_eq, random_token, sha256_b64};
use super::metrics::{GrantType, OpResult};
use super::provider::{UpstreamTokens, send};
use super::records::{ClientRecord, CodeGrant, Family};
use super::{OAuthProxy, REFRESH_GRACE_SECONDS, Reject, TOKEN_LIMIT, now};

/// Earlier refresh-token hashes remembered per family for reuse detection.
const REMEMBERED_ROTATIONS: usize = 32;

/// Form of `POST /token`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Claims of the proxy's access tokens.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: &'a str,
    scope: String,
    sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
}

fn parse_form(body: &[u8]) -> Result<TokenForm, Reject> {
    serde_urlencoded_form(body).ok_or_else(|| {
        Reject::bad(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        )
    })
}

fn serde_urlencoded_form(body: &[u8]) -> Option<TokenForm> {
    let mut f = TokenForm::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut f.grant_type,
            "code" => &mut f.code,
            "redirect_uri" => &mut f.redirect_uri,
            "code_verifier" => &mut f.code_verifier,
            "refresh_token" => &mut f.refresh_token,
            "resource" => &mut f.resource,
            "scope" => &mut f.scope,
            "client_id" => &mut f.client_id,
            "client_secret" => &mut f.client_secret,
            _ => continue,
        };
        if slot.is_some() {
            return None; // RFC 6749 §3.2: parameters must not repeat
        }
        *slot = Some(v.into_owned());
    }
    Some(f)
}

fn grant_label(grant: Option<&str>) -> GrantType {
    match grant {
        Some("authorization_code") => GrantType::AuthorizationCode,
        Some("refresh_token") => GrantType::RefreshToken,
        _ => GrantType::Other,
    }
}

/// `POST /token`.
pub async fn token(
    State(proxy): State<Arc<OAuthProxy>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => {
            proxy.metrics.grant(GrantType::Other, e.result());
            return e.into_response();
        }
    };
    let label = grant_label(form.grant_type.as_deref());
    let result = token_inner(&proxy, &headers, &form).await;
    proxy.metrics.grant(
        label,
        match &result {
            Ok(_) => OpResult::Success,
            Err(e) => e.result(),
        },
    );
    match result {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    proxy: &OAuthProxy,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<serde_json::Value, Reject> {
    let client = proxy
        .authenticate_client(
            headers,
            form.client_id.as_deref(),
            form.client_secret.as_deref(),
        )
        .await?;
    proxy.limit("token", &client.client_id, TOKEN_LIMIT).await?;
    if form
        .resource
        .as_deref()
        .is_some_and(|r| !proxy.is_our_resource(r))
    {
        return Err(Reject::bad(
            "invalid_target",
            "the resource is not served by this authorization server",
        ));
    }
    match form.grant_type.as_deref() {
        Some("authorization_code") => proxy.code_grant(&client, form).await,
        Some("refresh_token") => proxy.refresh_grant(&client, form).await,
        Some(_) => Err(Reject::bad(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token",
        )),
        None => Err(Reject::bad("invalid_request", "grant_type is required")),
    }
}

/// RFC 7636 §4.1: 43–128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn invalid_grant(description: &str) -> Reject {
    Reject::bad("invalid_grant", description)
}

impl OAuthProxy {
    async fn code_grant(
        &self,
        client: &ClientRecord,
        form: &TokenForm,
    ) -> Result<serde_json::Value, Reject> {
        let code = form
            .code
            .as_deref()
            .ok_or_else(|| Reject::bad("invalid_request", "code is required"))?;
        let verifier = form
            .code_verifier
            .as_deref()
            .ok_or_else(|| Reject::bad("invalid_request", "code_verifier is required"))?;
        let code_id = sha256_b64(code.as_bytes());
        // Atomic: a replayed or raced code finds nothing.
        let grant: CodeGrant = self
            .take_json("code", &code_id)
            .await?
            .ok_or_else(|| invalid_grant("the code is invalid, expired or already used"))?;
        let req = &grant.request;
        if req.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        match (&form.redirect_uri, req.redirect_uri_given) {
            (Some(uri), _) if *uri == req.redirect_uri => {}
            (None, false) => {}
            _ => {
                return Err(invalid_grant(
                    "redirect_uri does not match the authorization request",
                ));
            }
        }
        let computed = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            verifier.as_bytes(),
        ));
        if !valid_verifier(verifier)
            || !constant_time_eq(computed.as_bytes(), req.code_challenge.as_bytes())
        {
            return Err(invalid_grant("PKCE verification failed"));
        }
        let upstream = self
            .enc
            .open(&format!("code:{code_id}"), &grant.upstream)
            .ok_or_else(|| invalid_grant("the code cannot be read"))?;
        let family_id = random_token(18);
        let secret = random_token(32);
        let refresh = format!("{family_id}.{secret}");
        let family = Family {
            client_id: client.client_id.clone(),
            identity: grant.identity,
            scopes: req.scopes.clone(),
            resource: req.resource.clone(),
            current: sha256_b64(secret.as_bytes()),
            previous: Vec::new(),
            rotated_at: now(),
            grace_token: None,
            upstream: self.enc.seal(&format!("family:{family_id}"), &upstream),
            expires_at: now() + u64::from(self.spec.refresh_token_ttl_seconds),
        };
        self.put_json("family", &family_id, &family, self.family_ttl(&family))
            .await?;
        Ok(self.token_response(&family_id, &family, &refresh))
    }

    fn family_ttl(&self, family: &Family) -> Duration {
        Duration::from_secs(family.expires_at.saturating_sub(now()).max(1))
    }

    fn token_response(&self, family_id: &str, family: &Family, refresh: &str) -> serde_json::Value {
        let iat = now();
        let ttl = u64::from(self.spec.access_token_ttl_seconds);
        let scope = family.scopes.join(" ");
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: &family.identity.subject,
            aud: &family.resource,
            exp: iat + ttl,
            iat,
            nbf: iat,
            jti: random_token(16),
            client_id: &family.client_id,
            scope: scope.clone(),
            sid: family_id,
            name: family.identity.name.as_deref(),
            email: family.identity.email.as_deref(),
            preferred_username: family.identity.preferred_username.as_deref(),
        };
        let mut out = serde_json::json!({
            "access_token": self.signing.sign(&claims),
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
        });
        if !scope.is_empty() {
            out["scope"] = scope.into();
        }
        out
    }

    async fn refresh_grant(
        &self,
        client: &ClientRecord,
        form: &TokenForm,
    ) -> Result<serde_json::Value, Reject> {
        let presented = form
            .refresh_token
            .as_deref()
            .ok_or_else(|| Reject::bad("invalid_request", "refresh_token is required"))?;
        let (family_id, secret) = presented
            .split_once('.')
            .ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
        if family_id.is_empty() || family_id.len() > 64 {
            return Err(invalid_grant("the refresh token is invalid"));
        }
        let key = self.key("family", family_id);
        let hash = sha256_b64(secret.as_bytes());
        for _ in 0..5 {
            let raw =
                self.store.get(&key).await?.ok_or_else(|| {
                    invalid_grant("the refresh token is invalid, expired or revoked")
                })?;
            let family: Family = serde_json::from_slice(&raw)
                .map_err(|e| Reject::from(crate::store::StoreError::Corrupt(e.to_string())))?;
            if family.client_id != client.client_id {
                return Err(invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            if constant_time_eq(hash.as_bytes(), family.current.as_bytes()) {
                let new_secret = random_token(32);
                let refresh = format!("{family_id}.{new_secret}");
                let mut next = family.clone();
                next.previous.push(family.current.clone());
                if next.previous.len() > REMEMBERED_ROTATIONS {
                    next.previous.remove(0);
                }
                next.current = sha256_b64(new_secret.as_bytes());
                next.rotated_at = now();
                next.grace_token = Some(
                    self.enc
                        .seal(&format!("grace:{family_id}"), refresh.as_bytes()),
                );
                let new_bytes = serde_json::to_vec(&next).expect("records serialise");
                if self
                    .store
                    .compare_and_swap(&key, &raw, &new_bytes, self.family_ttl(&next))
                    .await?
                {
                    let next = self
                        .refresh_upstream_if_expired(family_id, next, new_bytes)
                        .await?;
                    return Ok(self.token_response(family_id, &next, &refresh));
                }
                continue; // lost a race: re-read and treat as a duplicate
            }
            let last = family
                .previous
                .last()
                .is_some_and(|p| constant_time_eq(hash.as_bytes(), p.as_bytes()));
            if last && now().saturating_sub(family.rotated_at) <= REFRESH_GRACE_SECONDS {
                let token = family
                    .grace_token
                    .as_deref()
                    .and_then(|g| self.enc.open(&format!("grace:{family_id}"), g))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
                return Ok(self.token_response(family_id, &family, &token));
            }
            if family
                .previous
                .iter()
                .any(|p| constant_time_eq(hash.as_bytes(), p.as_bytes()))
            {
                tracing::warn!(client_id = %family.client_id, "refresh token reuse detected; revoking the token family");
                self.metrics.refresh_reuse.inc();
                self.revoke_family(family_id, &family).await?;
                return Err(invalid_grant(
                    "the refresh token was already used; the session is revoked",
                ));
            }
            return Err(invalid_grant("the refresh token is invalid"));
        }
        Err(Reject::Unavailable { retry_after: 1 })
    }

    /// When the upstream access token has expired, refreshes it upstream (the CAS winner only)
    /// and stores the new upstream tokens. A dead upstream grant ends the family.
    async fn refresh_upstream_if_expired(
        &self,
        family_id: &str,
        mut family: Family,
        mut raw: Vec<u8>,
    ) -> Result<Family, Reject> {
        let context = format!("family:{family_id}");
        let tokens: UpstreamTokens = self
            .enc
            .open(&context, &family.upstream)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid_grant("the session cannot be read"))?;
        let expired = tokens.expires_at.is_some_and(|exp| exp <= now() + 30);
        let Some(upstream_refresh) = tokens.refresh_token.clone().filter(|_| expired) else {
            return Ok(family);
        };
        let upstream = self
            .upstream()
            .await
            .map_err(|_| Reject::Unavailable { retry_after: 5 })?;
        let call = upstream.refresh_request(&upstream_refresh, &family.resource);
        let fresh = match send(&self.http, &call)
            .await
            .and_then(|(s, b)| upstream.parse_tokens(s, &b))
        {
            Ok(t) => t,
            Err(e) if e.is_invalid_grant() => {
                self.store.delete(&self.key("family", family_id)).await?;
                return Err(invalid_grant(
                    "the identity provider ended the session; sign in again",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream refresh failed");
                return Err(Reject::Unavailable { retry_after: 5 });
            }
        };
        let merged = UpstreamTokens {
            refresh_token: fresh.refresh_token.clone().or(tokens.refresh_token),
            ..fresh
        };
        let key = self.key("family", family_id);
        for _ in 0..5 {
            family.upstream = self.enc.seal(
                &context,
                &serde_json::to_vec(&merged).expect("tokens serialise"),
            );
            let new_bytes = serde_json::to_vec(&family).expect("records serialise");
            if self
                .store
                .compare_and_swap(&key, &raw, &new_bytes, self.family_ttl(&family))
                .await?
            {
                return Ok(family);
            }
            raw = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| invalid_grant("the session was revoked"))?;
            let current: Family = serde_json::from_slice(&raw)
                .map_err(|e| Reject::from(crate::store::StoreError::Corrupt(e.to_string())))?;
            family = Family {
                upstream: family.upstream,
                ..current
            };
        }
        Ok(family)
    }

    /// Deletes a family and revokes its upstream refresh token (never our own token) when the
    /// provider has a revocation endpoint.
    async fn revoke_family(&self, family_id: &str, family: &Family) -> Result<(), Reject> {
        self.store.delete(&self.key("family", family_id)).await?;
        let tokens: Option<UpstreamTokens> = self
            .enc
            .open(&format!("family:{family_id}"), &family.upstream)
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let (Some(tokens), Ok(upstream)) = (tokens, self.upstream().await) {
            let (token, hint) = match &tokens.refresh_token {
                Some(rt) => (rt.as_str(), "refresh_token"),
                None => (tokens.access_token.as_str(), "access_token"),
            };
            if let Some(call) = upstream.revoke_request(token, hint)
                && let Err(e) = send(&self.http, &call).await
            {
                tracing::warn!(error = %e, "upstream revocation failed");
            }
        }
        Ok(())
    }
}

/// `POST /revoke` (RFC 7009): refresh tokens end their family; access tokens we issued end the
/// family they belong to (the access token itself lives until its short expiry). Unknown tokens
/// are not an error.
pub async fn revoke(
    State(proxy): State<Arc<OAuthProxy>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = revoke_inner(&proxy, &headers, &body).await;
    proxy.metrics.revocation(match &result {
        Ok(()) => OpResult::Success,
        Err(e) => e.result(),
    });
    match result {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_inner(proxy: &OAuthProxy, headers: &HeaderMap, body: &[u8]) -> Result<(), Reject> {
    let mut token = None;
    let mut client_id = None;
    let mut client_secret = None;
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            "client_id" => client_id = Some(v.into_owned()),
            "client_secret" => client_secret = Some(v.into_owned()),
            _ => {}
        }
    }
    let client = proxy
        .authenticate_client(headers, client_id.as_deref(), client_secret.as_deref())
        .await?;
    proxy.limit("token", &client.client_id, TOKEN_LIMIT).await?;
    let token = token.ok_or_else(|| Reject::bad("invalid_request", "token is required"))?;
    let family_id = if token.matches('.').count() == 2 {
        proxy.session_of_access_token(&token)
    } else {
        token
            .split_once('.')
            .map(|(f, s)| (f.to_owned(), Some(sha256_b64(s.as_bytes()))))
    };
    let Some((family_id, hash)) = family_id else {
        return Ok(());
    };
    if family_id.is_empty() || family_id.len() > 64 {
        return Ok(());
    }
    if let Some(family) = proxy.get_json::<Family>("family", &family_id).await? {
        let known = hash.is_none_or(|h| family.current == h || family.previous.contains(&h));
        if family.client_id == client.client_id && known {
            proxy.revoke_family(&family_id, &family).await?;
        }
    }
    Ok(())
}

impl OAuthProxy {
    /// The family of an access token this proxy signed (signature and issuer checked, expiry not).
    fn session_of_access_token(&self, token: &str) -> Option<(String, Option<String>)> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let jwks = self.signing.jwks();
        let jwk = jwks.find(header.kid.as_deref()?)?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).ok()?;
        Some((data.claims.get("sid")?.as_str()?.to_owned(), None))
    }
}
