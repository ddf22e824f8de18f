//! Upstream identity providers: presets for GitHub, Google and Entra ID, discovery for any
//! OpenID Connect provider, and the exact requests the proxy sends them.
//!
//! Request building and response parsing are pure functions (unit-tested on the bytes); only
//! [`send`] does I/O. Quirks live in the preset: GitHub is not OIDC (identity from its user API,
//! token errors arrive with status 200), Entra wants v2 scopes and a tenant, and most providers
//! reject the RFC 8707 `resource` parameter, so it is only sent where the preset or the policy
//! says so.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_warden_policy::Provider;
use serde::{Deserialize, Serialize};
use url::Url;

/// Largest upstream response read.
const MAX_UPSTREAM_BODY: usize = 256 * 1024;

/// How the proxy authenticates to the upstream token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// Where the user's identity comes from after the code exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// The `id_token` of the token response, received directly from the provider over its
    /// TLS connection (OIDC Core §3.1.3.7), with `iss`, `aud` and `nonce` checked; the
    /// userinfo endpoint when there is none.
    OpenIdConnect,
    /// GitHub's REST user API.
    GithubUser,
}

/// Accepted `iss` of upstream ID tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerCheck {
    /// Exactly this issuer.
    Exact(String),
    /// Multi-tenant Entra (`organizations`, `common`, `consumers`): exactly
    /// `https://login.microsoftonline.com/{tid}/v2.0` for the token's own `tid`. Which tenants
    /// may sign in is `access.tenants`' decision.
    EntraTenant,
    /// Not applicable (no ID tokens).
    None,
}

/// A resolved upstream provider.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Preset.
    pub provider: Provider,
    /// Browser authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// OIDC userinfo or GitHub user API.
    pub userinfo_endpoint: Option<String>,
    /// RFC 7009 revocation endpoint.
    pub revocation_endpoint: Option<String>,
    /// ID token issuer check.
    pub issuer: IssuerCheck,
    /// Identity source.
    pub identity: IdentitySource,
    /// Token endpoint client authentication.
    pub auth: ClientAuth,
    /// Whether to send `resource` (RFC 8707) upstream.
    pub send_resource: bool,
    /// Scopes requested upstream.
    pub scopes: Vec<String>,
    /// Extra authorization parameters (preset ones first, the policy's override them).
    pub extra_params: BTreeMap<String, String>,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret at the provider.
    pub client_secret: Option<String>,
    /// The ID-token / userinfo claim holding groups or roles.
    pub groups_claim: String,
}

/// An HTTP request ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Target.
    pub url: String,
    /// Headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// `application/x-www-form-urlencoded` body pairs (POST only).
    pub form: Vec<(String, String)>,
}

/// Tokens from the upstream token endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTokens {
    /// Upstream access token.
    pub access_token: String,
    /// Upstream refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// OIDC ID token (not stored).
    #[serde(default, skip_serializing)]
    pub id_token: Option<String>,
}

/// The signed-in user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable subject at the provider.
    pub subject: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Login / username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Whether the provider verified `email` (`email_verified: true`; GitHub: the primary
    /// verified address from `/user/emails`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
    /// Groups or roles from the configured claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// GitHub organisation logins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
    /// GitHub teams as `org/team-slug`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Google Workspace domain (`hd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_domain: Option<String>,
    /// Entra tenant id (`tid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Identity {
    /// Fills facts this identity lacks from `other` (the userinfo answer for the same subject).
    pub fn fill_from(&mut self, other: Identity) {
        if self.email.is_none() || (!self.email_verified && other.email_verified) {
            self.email = other.email;
            self.email_verified = other.email_verified;
        }
        self.name = self.name.take().or(other.name);
        self.preferred_username = self.preferred_username.take().or(other.preferred_username);
        if self.groups.is_empty() {
            self.groups = other.groups;
        }
        self.hosted_domain = self.hosted_domain.take().or(other.hosted_domain);
        self.tenant = self.tenant.take().or(other.tenant);
    }
}

/// Why an upstream call failed. Logged, never shown to clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Network, TLS or timeout.
    #[error("upstream request failed: {0}")]
    Transport(String),
    /// The provider refused (its `error` code).
    #[error("upstream refused: {0}")]
    Refused(String),
    /// The provider answered something unusable.
    #[error("upstream answer unusable: {0}")]
    Malformed(String),
}

impl UpstreamError {
    /// True when the provider says the grant is dead (the user must sign in again).
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, UpstreamError::Refused(code) if code == "invalid_grant" || code == "bad_verification_code")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Upstream {
    /// The upstream authorization URL for one flow (the proxy's own PKCE pair and state).
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
        nonce: &str,
        resource: &str,
    ) -> String {
        let mut url = Url::parse(&self.authorization_endpoint).expect("validated endpoint");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &self.client_id);
            q.append_pair("redirect_uri", redirect_uri);
            if !self.scopes.is_empty() {
                q.append_pair("scope", &self.scopes.join(" "));
            }
            q.append_pair("state", state);
            q.append_pair("code_challenge", code_challenge);
            q.append_pair("code_challenge_method", "S256");
            if self.identity == IdentitySource::OpenIdConnect {
                q.append_pair("nonce", nonce);
            }
            if self.send_resource {
                q.append_pair("resource", resource);
            }
            for (k, v) in &self.extra_params {
                q.append_pair(k, v);
            }
        }
        url.into()
    }

    fn token_call(&self, mut form: Vec<(String, String)>) -> Prepared {
        let mut headers = vec![("accept", "application/json".to_owned())];
        match (self.auth, &self.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: form-encode id and secret before joining them.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let pair = format!("{}:{}", enc(&self.client_id), enc(secret));
                headers.push(("authorization", format!("Basic {}", STANDARD.encode(pair))));
            }
            (_, secret) => {
                form.push(("client_id".into(), self.client_id.clone()));
                if let Some(secret) = secret {
                    form.push(("client_secret".into(), secret.clone()));
                }
            }
        }
        Prepared {
            method: "POST",
            url: self.token_endpoint.clone(),
            headers,
            form,
        }
    }

    /// The code exchange at the upstream token endpoint.
    pub fn code_request(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        resource: &str,
    ) -> Prepared {
        let mut form = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("redirect_uri".to_owned(), redirect_uri.to_owned()),
            ("code_verifier".to_owned(), code_verifier.to_owned()),
        ];
        if self.send_resource {
            form.push(("resource".into(), resource.into()));
        }
        self.token_call(form)
    }

    /// A refresh at the upstream token endpoint.
    pub fn refresh_request(&self, refresh_token: &str, resource: &str) -> Prepared {
        let mut form = vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), refresh_token.to_owned()),
        ];
        if self.send_resource {
            form.push(("resource".into(), resource.into()));
        }
        self.token_call(form)
    }

    /// RFC 7009 revocation of an upstream token, when the provider has the endpoint.
    pub fn revoke_request(&self, token: &str, hint: &str) -> Option<Prepared> {
        let endpoint = self.revocation_endpoint.clone()?;
        let mut call = self.token_call(vec![
            ("token".into(), token.into()),
            ("token_type_hint".into(), hint.into()),
        ]);
        call.url = endpoint;
        Some(call)
    }

    /// The identity call (userinfo or GitHub's user API) with the upstream access token.
    pub fn identity_request(&self, access_token: &str) -> Option<Prepared> {
        let url = self.userinfo_endpoint.clone()?;
        let mut headers = vec![("authorization", format!("Bearer {access_token}"))];
        match self.identity {
            IdentitySource::GithubUser => {
                headers.push(("accept", "application/vnd.github+json".into()));
                headers.push(("x-github-api-version", "2022-11-28".into()));
                headers.push(("user-agent", "mcp-warden".into()));
            }
            IdentitySource::OpenIdConnect => headers.push(("accept", "application/json".into())),
        }
        Some(Prepared {
            method: "GET",
            url,
            headers,
            form: Vec::new(),
        })
    }

    /// A GitHub REST call (`/user/emails`, `/user/orgs?…`, `/user/teams?…`) next to the user
    /// API, with the upstream access token.
    pub fn github_request(&self, path_and_query: &str, access_token: &str) -> Option<Prepared> {
        let user = self.userinfo_endpoint.as_deref()?;
        let mut call = self.identity_request(access_token)?;
        call.url = format!("{user}{path_and_query}");
        Some(call)
    }

    /// Parses a token endpoint answer. GitHub reports errors with status 200 and an `error`
    /// field, so the body decides, not only the status.
    pub fn parse_tokens(&self, status: u16, body: &[u8]) -> Result<UpstreamTokens, UpstreamError> {
        let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
            UpstreamError::Malformed(format!("token response (status {status}) is not JSON"))
        })?;
        if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
            return Err(UpstreamError::Refused(error.to_owned()));
        }
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Malformed(format!(
                "token endpoint status {status}"
            )));
        }
        let text = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let access_token = text("access_token")
            .ok_or_else(|| UpstreamError::Malformed("no access_token".into()))?;
        let expires_at = json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(|s| now() + s);
        Ok(UpstreamTokens {
            access_token,
            refresh_token: text("refresh_token"),
            expires_at,
            id_token: text("id_token"),
        })
    }

    /// The identity inside an ID token taken straight from the token endpoint response.
    pub fn identity_from_id_token(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<Identity, UpstreamError> {
        let payload = id_token
            .split('.')
            .nth(1)
            .ok_or_else(|| UpstreamError::Malformed("id_token is not a JWT".into()))?;
        let raw = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| UpstreamError::Malformed("id_token payload".into()))?;
        let claims: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|_| UpstreamError::Malformed("id_token claims".into()))?;
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let iss_ok = match &self.issuer {
            IssuerCheck::Exact(expected) => iss == expected,
            IssuerCheck::EntraTenant => {
                claims
                    .get("tid")
                    .and_then(|v| v.as_str())
                    .is_some_and(|tid| {
                        !tid.is_empty()
                            && iss == format!("https://login.microsoftonline.com/{tid}/v2.0")
                    })
            }
            IssuerCheck::None => true,
        };
        if !iss_ok {
            return Err(UpstreamError::Malformed("id_token iss mismatch".into()));
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.client_id,
            Some(serde_json::Value::Array(a)) => {
                a.iter().any(|v| v.as_str() == Some(&self.client_id))
            }
            _ => false,
        };
        if !aud_ok {
            return Err(UpstreamError::Malformed("id_token aud mismatch".into()));
        }
        if claims.get("nonce").and_then(|v| v.as_str()) != Some(nonce) {
            return Err(UpstreamError::Malformed("id_token nonce mismatch".into()));
        }
        if claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .is_none_or(|exp| exp + 60 < now())
        {
            return Err(UpstreamError::Malformed("id_token expired".into()));
        }
        self.parse_identity(&raw)
    }

    /// Parses a userinfo / GitHub user document.
    pub fn parse_identity(&self, body: &[u8]) -> Result<Identity, UpstreamError> {
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| UpstreamError::Malformed("identity is not JSON".into()))?;
        let text = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let identity = match self.identity {
            IdentitySource::GithubUser => {
                let id = json
                    .get("id")
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| UpstreamError::Malformed("GitHub user has no id".into()))?;
                // The profile email is not proof of ownership: verified only via /user/emails.
                Identity {
                    subject: id.to_string(),
                    name: text("name"),
                    email: text("email"),
                    preferred_username: text("login"),
                    ..Identity::default()
                }
            }
            IdentitySource::OpenIdConnect => {
                // Entra's `sub` is pairwise per app; `oid` would be tenant-wide. Keep `sub`.
                let subject =
                    text("sub").ok_or_else(|| UpstreamError::Malformed("no sub".into()))?;
                let verified = match json.get("email_verified") {
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(serde_json::Value::String(s)) => s == "true",
                    _ => false,
                };
                let groups = match json.get(&self.groups_claim) {
                    Some(serde_json::Value::String(g)) => vec![g.clone()],
                    Some(serde_json::Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                Identity {
                    subject,
                    name: text("name"),
                    email: text("email"),
                    preferred_username: text("preferred_username"),
                    email_verified: verified,
                    groups,
                    orgs: Vec::new(),
                    teams: Vec::new(),
                    hosted_domain: text("hd"),
                    tenant: text("tid"),
                }
            }
        };
        Ok(identity)
    }
}

/// The primary verified address of a GitHub `/user/emails` answer.
pub fn github_primary_email(body: &[u8]) -> Result<Option<String>, UpstreamError> {
    #[derive(Deserialize)]
    struct Email {
        email: String,
        #[serde(default)]
        primary: bool,
        #[serde(default)]
        verified: bool,
    }
    let emails: Vec<Email> = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::Malformed("GitHub emails are not a list".into()))?;
    Ok(emails
        .into_iter()
        .find(|e| e.primary && e.verified)
        .map(|e| e.email))
}

/// Organisation logins of a GitHub `/user/orgs` page.
pub fn github_orgs(body: &[u8]) -> Result<Vec<String>, UpstreamError> {
    #[derive(Deserialize)]
    struct Org {
        login: String,
    }
    let orgs: Vec<Org> = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::Malformed("GitHub orgs are not a list".into()))?;
    Ok(orgs.into_iter().map(|o| o.login).collect())
}

/// `org/team-slug` of a GitHub `/user/teams` page.
pub fn github_teams(body: &[u8]) -> Result<Vec<String>, UpstreamError> {
    #[derive(Deserialize)]
    struct Org {
        login: String,
    }
    #[derive(Deserialize)]
    struct Team {
        slug: String,
        organization: Org,
    }
    let teams: Vec<Team> = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::Malformed("GitHub teams are not a list".into()))?;
    Ok(teams
        .into_iter()
        .map(|t| format!("{}/{}", t.organization.login, t.slug))
        .collect())
}

/// Sends a prepared request: no redirects, bounded time and size.
pub async fn send(
    http: &reqwest::Client,
    call: &Prepared,
) -> Result<(u16, Vec<u8>), UpstreamError> {
    let mut req = match call.method {
        "GET" => http.get(&call.url),
        _ => {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&call.form)
                .finish();
            http.post(&call.url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        }
    };
    for (name, value) in &call.headers {
        req = req.header(*name, value);
    }
    let exchange = async {
        let resp = req
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| UpstreamError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_UPSTREAM_BODY).await?;
        Ok((status, body))
    };
    let attributes = || {
        let url = call.url.split('?').next().unwrap_or_default();
        vec![
            opentelemetry::KeyValue::new("http.request.method", call.method),
            opentelemetry::KeyValue::new("url.full", url.to_owned()),
        ]
    };
    crate::telemetry::client("identity provider", attributes, exchange).await
}

/// Reads a response body, failing beyond `cap` bytes.
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| UpstreamError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(UpstreamError::Malformed(format!(
                "response larger than {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
