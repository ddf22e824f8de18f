//! `/token` (authorization_code with PKCE S256, refresh_token) and `/revoke`.
//!
//! Codes are consumed atomically (`take`), so of two replicas racing on one code exactly one
//! issues tokens. Refresh rotation and reuse detection are in `refresh.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::clients::{check_secret, credentials};
use super::crypto::{constant_time_eq, random_token, sha256_b64};
use super::metrics::{GrantType, OpResult};
use super::records::{ClientRecord, CodeGrant, Family};
use super::{ClientAddr, OAuthProxy, RateKey, Reject, now};
use mcp_warden_policy::RateLimitedEndpoint;

/// Form of `POST /token`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    pub(super) grant_type: Option<String>,
    pub(super) code: Option<String>,
    pub(super) redirect_uri: Option<String>,
    pub(super) code_verifier: Option<String>,
    pub(super) refresh_token: Option<String>,
    pub(super) resource: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
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
    /// Whether the provider verified `email` (forwarding reads it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    email_verified: bool,
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
    addr: ClientAddr,
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
    let result = token_inner(&proxy, &addr, &headers, &form).await;
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
    addr: &ClientAddr,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<serde_json::Value, Reject> {
    let (client_id, secret) = credentials(
        headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )?;
    // One round trip counts the request by address and reads the records it needs: the
    // client's registration and, for a refresh, the session. The count comes first, before the
    // client is looked up: looking up a URL-shaped client id fetches its metadata document,
    // which an unlimited caller could turn into a flood of fetches. The session is only read
    // here; it is checked against the authenticated client in `refresh_grant`.
    let by_address = proxy.rate_counter(RateLimitedEndpoint::Token, RateKey::Address(addr));
    let client_key = proxy.client_key(&client_id);
    let family_key = match form.grant_type.as_deref() {
        Some("refresh_token") => form
            .refresh_token
            .as_deref()
            .and_then(family_of)
            .map(|(family, _)| proxy.key("family", family)),
        _ => None,
    };
    let keys: Vec<&str> = [client_key.as_deref(), family_key.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let (count, mut values) = proxy
        .store
        .count_and_get(
            by_address.as_ref().map(|c| (c.key.as_str(), c.window)),
            &keys,
        )
        .await?;
    if let (Some(counter), Some(count)) = (&by_address, count) {
        counter.check(count)?;
    }
    let family = family_key.and_then(|_| values.pop());
    let registration = client_key.and_then(|_| values.pop());
    let client = proxy.client_with(&client_id, registration).await?;
    let client = check_secret(client, secret.as_deref())?;
    proxy
        .limit(
            RateLimitedEndpoint::Token,
            RateKey::Client(&client.client_id),
        )
        .await?;
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
        Some("refresh_token") => proxy.refresh_grant(&client, form, family).await,
        Some(_) => Err(Reject::bad(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token",
        )),
        None => Err(Reject::bad("invalid_request", "grant_type is required")),
    }
}

/// The family id and secret of a refresh token (`<family>.<secret>`), when it has that shape.
pub(super) fn family_of(token: &str) -> Option<(&str, &str)> {
    let (family, secret) = token.split_once('.')?;
    (!family.is_empty() && family.len() <= 64).then_some((family, secret))
}

/// RFC 7636 §4.1: 43–128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The store id of an authorization code: bound to the client it was issued to, so looking a
/// code up is also the check that the right client presents it.
pub(super) fn code_id(client_id: &str, code: &str) -> String {
    sha256_b64(format!("{client_id}\n{code}").as_bytes())
}

pub(super) fn invalid_grant(description: &str) -> Reject {
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
        // Atomic: a replayed or raced code finds nothing, and so does a code presented by
        // another client (the store key includes the client), which leaves it for its owner.
        let code_id = code_id(&client.client_id, code);
        let grant: CodeGrant = self
            .take_json("code", &code_id)
            .await?
            .ok_or_else(|| invalid_grant("the code is invalid, expired or already used"))?;
        if grant.request.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        let req = &grant.request;
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

    pub(super) fn family_ttl(&self, family: &Family) -> Duration {
        Duration::from_secs(family.expires_at.saturating_sub(now()).max(1))
    }

    pub(super) fn token_response(
        &self,
        family_id: &str,
        family: &Family,
        refresh: &str,
    ) -> serde_json::Value {
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
            email_verified: family.identity.email_verified,
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
}

/// `POST /revoke` (RFC 7009): a refresh token or an access token we issued ends its session:
/// the family is deleted and every access token of it is refused on every replica within
/// [`super::revocation::SYNC_INTERVAL`]. Unknown tokens are not an error.
pub async fn revoke(
    State(proxy): State<Arc<OAuthProxy>>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = revoke_inner(&proxy, &addr, &headers, &body).await;
    proxy.metrics.revocation(match &result {
        Ok(()) => OpResult::Success,
        Err(e) => e.result(),
    });
    match result {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_inner(
    proxy: &OAuthProxy,
    addr: &ClientAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Reject> {
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
    // By address, before the client is looked up (see `token_inner`).
    proxy
        .limit(RateLimitedEndpoint::Revoke, RateKey::Address(addr))
        .await?;
    let client = proxy
        .authenticate_client(headers, client_id.as_deref(), client_secret.as_deref())
        .await?;
    proxy
        .limit(
            RateLimitedEndpoint::Revoke,
            RateKey::Client(&client.client_id),
        )
        .await?;
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
            proxy
                .revoke_family(&family_id, &family, super::metrics::RevokeReason::Revoke)
                .await?;
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
