//! Provider presets (GitHub, Google, Entra ID) and OpenID Connect discovery: which endpoints,
//! scopes, client authentication and quirks an [`Upstream`] gets for `spec.oauthProxy`.

use mcp_warden_policy::{OAuthProxySpec, Provider};

use super::access::{DEFAULT_GROUPS_CLAIM, Needs};
use super::provider::{ClientAuth, IdentitySource, IssuerCheck, Upstream, UpstreamError};

impl Upstream {
    /// The preset for `spec.provider` when it needs no discovery; `None` for OIDC discovery.
    pub fn preset(spec: &OAuthProxySpec, client_secret: Option<String>) -> Option<Self> {
        if spec.issuer.is_some() || spec.provider == Provider::Oidc {
            return None;
        }
        let base = |provider,
                    authz: String,
                    token: String,
                    user: Option<String>,
                    revoke: Option<String>,
                    issuer,
                    identity,
                    scopes: &[&str],
                    extra: &[(&str, &str)]| Upstream {
            provider,
            authorization_endpoint: authz,
            token_endpoint: token,
            userinfo_endpoint: user,
            revocation_endpoint: revoke,
            issuer,
            identity,
            auth: ClientAuth::Post,
            send_resource: false,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            extra_params: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client_id: spec.client_id.clone(),
            client_secret: client_secret.clone(),
            groups_claim: String::new(),
        };
        let up = match spec.provider {
            Provider::Github => base(
                Provider::Github,
                "https://github.com/login/oauth/authorize".into(),
                "https://github.com/login/oauth/access_token".into(),
                Some("https://api.github.com/user".into()),
                None,
                IssuerCheck::None,
                IdentitySource::GithubUser,
                &["read:user"],
                &[],
            ),
            Provider::Google => base(
                Provider::Google,
                "https://accounts.google.com/o/oauth2/v2/auth".into(),
                "https://oauth2.googleapis.com/token".into(),
                Some("https://openidconnect.googleapis.com/v1/userinfo".into()),
                Some("https://oauth2.googleapis.com/revoke".into()),
                IssuerCheck::Exact("https://accounts.google.com".into()),
                IdentitySource::OpenIdConnect,
                &["openid", "email", "profile"],
                // Google only returns a refresh token with offline access.
                &[("access_type", "offline"), ("prompt", "consent")],
            ),
            Provider::Entra => {
                let tenant = spec.tenant.as_deref().unwrap_or("organizations");
                let root = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                let issuer = match tenant {
                    "organizations" | "common" | "consumers" => IssuerCheck::EntraTenant,
                    t => IssuerCheck::Exact(format!("https://login.microsoftonline.com/{t}/v2.0")),
                };
                base(
                    Provider::Entra,
                    format!("{root}/authorize"),
                    format!("{root}/token"),
                    Some("https://graph.microsoft.com/oidc/userinfo".into()),
                    None,
                    issuer,
                    IdentitySource::OpenIdConnect,
                    // v2 endpoint: scopes, not the v1 `resource` parameter (which it rejects).
                    &["openid", "profile", "email", "offline_access"],
                    &[],
                )
            }
            Provider::Oidc => unreachable!("handled above"),
        };
        Some(up.with_policy(spec))
    }

    /// Builds the upstream from an OpenID Connect discovery document.
    pub fn from_discovery(
        spec: &OAuthProxySpec,
        issuer: &str,
        doc: &serde_json::Value,
        client_secret: Option<String>,
    ) -> Result<Self, UpstreamError> {
        let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let found = field("issuer").unwrap_or_default();
        if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(UpstreamError::Malformed(format!(
                "discovery issuer {found:?} is not {issuer:?}"
            )));
        }
        let authz = field("authorization_endpoint")
            .ok_or_else(|| UpstreamError::Malformed("no authorization_endpoint".into()))?;
        let token = field("token_endpoint")
            .ok_or_else(|| UpstreamError::Malformed("no token_endpoint".into()))?;
        let methods: Vec<&str> = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
            .unwrap_or_else(|| vec!["client_secret_basic"]);
        let auth = if methods.contains(&"client_secret_basic") {
            ClientAuth::Basic
        } else {
            ClientAuth::Post
        };
        let (identity, default_scopes, extra): (_, &[&str], &[(&str, &str)]) = match spec.provider {
            Provider::Google => (
                IdentitySource::OpenIdConnect,
                &["openid", "email", "profile"],
                &[("access_type", "offline"), ("prompt", "consent")],
            ),
            Provider::Entra => (
                IdentitySource::OpenIdConnect,
                &["openid", "profile", "email", "offline_access"],
                &[],
            ),
            Provider::Github => (IdentitySource::GithubUser, &["read:user"], &[]),
            Provider::Oidc => (IdentitySource::OpenIdConnect, &["openid"], &[]),
        };
        let up = Upstream {
            provider: spec.provider,
            authorization_endpoint: authz,
            token_endpoint: token,
            userinfo_endpoint: field("userinfo_endpoint"),
            revocation_endpoint: field("revocation_endpoint"),
            issuer: IssuerCheck::Exact(found),
            identity,
            auth,
            send_resource: false,
            scopes: default_scopes.iter().map(|s| s.to_string()).collect(),
            extra_params: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client_id: spec.client_id.clone(),
            client_secret,
            groups_claim: String::new(),
        };
        Ok(up.with_policy(spec))
    }

    fn with_policy(mut self, spec: &OAuthProxySpec) -> Self {
        if !spec.scopes.is_empty() {
            self.scopes = spec.scopes.clone();
        } else if self.provider == Provider::Github {
            // The preset asks for what the access entries read (validation checks explicit
            // scope lists for the same).
            let needs = Needs::of(spec);
            if needs.orgs || needs.teams {
                self.scopes.push("read:org".into());
            }
            if needs.email {
                self.scopes.push("user:email".into());
            }
        }
        self.groups_claim = spec
            .access
            .as_ref()
            .and_then(|a| a.groups_claim.clone())
            .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.into());
        if let Some(send) = spec.send_resource_upstream {
            self.send_resource = send;
        }
        for (k, v) in &spec.extra_authorize_params {
            self.extra_params.insert(k.clone(), v.clone());
        }
        self
    }
}
