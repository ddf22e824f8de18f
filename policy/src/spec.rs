//! The `spec` of an `McpAuthPolicy`. Field doc comments become `kubectl explain` text.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

/// How the sidecar authenticates requests to one MCP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "mcpwarden.dev",
        version = "v1alpha1",
        kind = "McpAuthPolicy",
        plural = "mcpauthpolicies",
        shortname = "mcpap",
        namespaced,
        status = "crate::status::McpAuthPolicyStatus",
        printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
        printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.jwt.issuer","priority":0}"#,
        printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.oauthProxy.provider"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Bound","type":"integer","jsonPath":".status.boundWorkloads"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct McpAuthPolicySpec {
    /// The protected MCP endpoint as clients see it.
    pub resource: ResourceSpec,
    /// `jwt` verifies bearer tokens from an existing authorization server; `oauthProxy` makes
    /// the sidecar an OAuth 2.1 authorization server in front of an upstream identity provider.
    pub mode: AuthMode,
    /// Settings for `mode: jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Settings for `mode: oauthProxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_proxy: Option<OAuthProxySpec>,
    /// Extra scope requirements per MCP method or tool, checked after the token is valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ScopeRule>,
    /// Where OAuth state lives. Absent means in-memory: fine for one replica, wrong for more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// What the sidecar tells the MCP server about the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSpec>,
    /// Browser origins allowed to call the endpoint (DNS-rebinding defence and CORS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// The audit trail: one JSON line per MCP request. Absent means on, to stderr, without
    /// tool arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
}

impl McpAuthPolicySpec {
    /// Every Secret key the policy reads, so a watcher can notice a rotated key.
    pub fn secret_refs(&self) -> Vec<&SecretRef> {
        let proxy = self.oauth_proxy.as_ref();
        let redis = self.storage.as_ref().and_then(|s| s.redis.as_ref());
        let introspection = self.jwt.as_ref().and_then(|j| j.introspection.as_ref());
        [
            introspection.map(|i| &i.client_secret_ref),
            proxy.and_then(|p| p.client_secret_ref.as_ref()),
            proxy.and_then(|p| p.signing_key_secret_ref.as_ref()),
            proxy.and_then(|p| p.encryption_key_secret_ref.as_ref()),
            redis.and_then(|r| r.password_secret_ref.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The protected resource (RFC 9728).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// The canonical URL clients use for the MCP endpoint, e.g. `https://mcp.example.com/mcp`.
    /// It is the `resource` of the protected-resource metadata and the audience of tokens the
    /// proxy issues, so it must be exactly the external URL (behind any ingress), not the pod's.
    pub url: String,
    /// Scopes advertised in the protected-resource metadata and in 401 challenges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Human-readable name of the MCP server, shown in metadata and on the consent page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The authentication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// Verify JWT access tokens issued by an existing authorization server.
    Jwt,
    /// Act as an OAuth 2.1 authorization server backed by an upstream identity provider.
    OauthProxy,
}

/// Verification of JWT access tokens issued by an external authorization server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// The issuer, exactly as in the tokens' `iss` claim and the server's metadata.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Defaults to `resource.url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the signing keys are. When absent, found by OpenID Connect / RFC 8414 discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Signature algorithms accepted. `none` and HMAC are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Scopes every request must carry (in `scope` or `scp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Tolerated clock difference for `exp`/`nbf`, in seconds (at most 300).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u32,
    /// Allow plain-http issuer and JWKS URLs on hosts other than loopback. Keys fetched
    /// without TLS can be replaced by anyone on the network path: test environments only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// Accepted values of the token header's `typ`, compared without regard to case and to an
    /// `application/` prefix: `[at+jwt]` accepts only RFC 9068 access tokens, so an ID token
    /// or another JWT the issuer signs for this audience is not taken for an access token.
    /// Empty (the default): `typ` is not checked, since many issuers send `JWT` or nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_types: Vec<String>,
    /// RFC 7662 token introspection, for opaque (non-JWT) access tokens. Absent: only JWTs are
    /// accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<IntrospectionSpec>,
}

/// How the sidecar asks the issuer about tokens it cannot verify itself (RFC 7662).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectionSpec {
    /// The introspection endpoint. Default: `introspection_endpoint` from the issuer's
    /// metadata (OpenID discovery or RFC 8414).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The client the sidecar authenticates as at the endpoint (`client_secret_basic`).
    pub client_id: String,
    /// Secret key holding that client's secret.
    pub client_secret_ref: SecretRef,
    /// How long an active answer is reused, in seconds (1 to 3600); never past the token's
    /// `exp`. A token revoked at the issuer stays usable for at most this long.
    #[serde(default = "default_introspection_cache_seconds")]
    pub cache_seconds: u32,
    /// Introspect every token, JWTs included (so revocation at the issuer is noticed). Default
    /// false: JWTs are verified locally and only other tokens are introspected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
}

fn default_introspection_cache_seconds() -> u32 {
    60
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::PS256,
        JwtAlgorithm::EdDSA,
    ]
}

fn default_clock_skew() -> u32 {
    60
}

/// An asymmetric JWS algorithm.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The OAuth 2.1 authorization-server facade in front of an upstream identity provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthProxySpec {
    /// The upstream identity provider; presets fill its endpoints and quirks.
    pub provider: Provider,
    /// Upstream issuer for `provider: oidc` (discovered), optional override otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Entra ID tenant (id or domain) for `provider: entra`; default `organizations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The OAuth client registered at the upstream identity provider.
    pub client_id: String,
    /// Secret key holding the upstream client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretRef>,
    /// Scopes requested from the upstream identity provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Extra query parameters on the upstream authorization request (e.g. `prompt`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Send the RFC 8707 `resource` parameter upstream. Default: the provider preset's choice
    /// (some identity providers reject unknown resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resource_upstream: Option<bool>,
    /// Redirect URIs clients may register. Exact match, except `http://localhost` and
    /// `http://127.0.0.1` entries, which allow any port (RFC 8252). Custom schemes such as
    /// `cursor://` must be listed to be allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_redirect_uris: Vec<String>,
    /// `always` asks the user on every authorization; `remember` keeps an approval per signed-in
    /// user, client, redirect URI and scope set.
    #[serde(default)]
    pub consent: ConsentMode,
    /// Lifetime of the access tokens the proxy issues.
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_seconds: u32,
    /// Lifetime of a refresh-token family.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_seconds: u32,
    /// Secret key holding the PEM signing keys (managed by the operator; generated for local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretRef>,
    /// Secret key holding the encryption keys for upstream tokens at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_secret_ref: Option<SecretRef>,
    /// Let client ID metadata document URLs resolve to private or loopback addresses.
    /// Opens an SSRF path into the cluster network: test environments only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_client_metadata: bool,
    /// Who may sign in. Required: a user the upstream provider authenticates gets a token only
    /// when one entry matches, or when it says `anyAuthenticatedUser: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    /// Scope → the signed-in users who may be granted it. A scope is granted only when it is in
    /// `resource.scopesSupported`, the client asks for it (or asks for none) and the user matches
    /// its entry here; a scope without an entry is never granted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scope_grants: BTreeMap<String, IdentityMatch>,
    /// Request limits of the OAuth endpoints, per endpoint; an endpoint not listed keeps its
    /// default (`register` 60, `authorize` 120, `token` 600, `revoke` 600 requests per 60 s per
    /// client address). Over the limit the endpoint answers 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitsSpec>,
}

/// Request limits of the OAuth endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitsSpec {
    /// `/register` (dynamic client registration). Default 60 per 60 s per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<RateLimit>,
    /// `/authorize`. Default 120 per 60 s per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize: Option<RateLimit>,
    /// `/token`. Default 600 per 60 s per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<RateLimit>,
    /// `/revoke`. Default 600 per 60 s per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<RateLimit>,
}

/// An OAuth endpoint with a rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitedEndpoint {
    /// `/register`.
    Register,
    /// `/authorize`.
    Authorize,
    /// `/token`.
    Token,
    /// `/revoke`.
    Revoke,
}

impl RateLimitedEndpoint {
    /// Every endpoint.
    pub const ALL: [RateLimitedEndpoint; 4] = [
        RateLimitedEndpoint::Register,
        RateLimitedEndpoint::Authorize,
        RateLimitedEndpoint::Token,
        RateLimitedEndpoint::Revoke,
    ];

    /// The field name in `rateLimits`.
    pub fn name(self) -> &'static str {
        match self {
            RateLimitedEndpoint::Register => "register",
            RateLimitedEndpoint::Authorize => "authorize",
            RateLimitedEndpoint::Token => "token",
            RateLimitedEndpoint::Revoke => "revoke",
        }
    }

    /// The limit when the policy sets none.
    pub fn default_limit(self) -> RateLimit {
        let requests = match self {
            RateLimitedEndpoint::Register => 60,
            RateLimitedEndpoint::Authorize => 120,
            RateLimitedEndpoint::Token | RateLimitedEndpoint::Revoke => 600,
        };
        RateLimit {
            requests,
            window_seconds: default_rate_window(),
            key: RateLimitKey::ClientAddress,
        }
    }
}

impl RateLimitsSpec {
    /// The limit configured for `endpoint`, if any.
    pub fn get(&self, endpoint: RateLimitedEndpoint) -> Option<&RateLimit> {
        match endpoint {
            RateLimitedEndpoint::Register => self.register.as_ref(),
            RateLimitedEndpoint::Authorize => self.authorize.as_ref(),
            RateLimitedEndpoint::Token => self.token.as_ref(),
            RateLimitedEndpoint::Revoke => self.revoke.as_ref(),
        }
    }
}

/// At most `requests` per `windowSeconds` (a fixed window starting with the first request),
/// counted per `key`, in the state store (so across replicas sharing Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window (at least 1).
    pub requests: u32,
    /// The window, in seconds (1 to 86400). Default 60.
    #[serde(default = "default_rate_window")]
    pub window_seconds: u32,
    /// What is counted: `clientAddress` (default; an IPv4 address or an IPv6 /64) or `clientId`.
    #[serde(default)]
    pub key: RateLimitKey,
}

fn default_rate_window() -> u32 {
    60
}

/// What a rate limit counts requests by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitKey {
    /// The caller's address (an IPv4 address or an IPv6 /64), counted before the client is
    /// looked up. Behind a proxy that hides client addresses, the proxy's address.
    #[default]
    ClientAddress,
    /// The OAuth client id, counted once the client is known (`/token` and `/revoke`: after
    /// client authentication), so clients behind one address have their own budgets. Requests
    /// naming unknown clients are not counted. Not for `register`.
    ClientId,
}

/// The identity entries shared by `access` and `scopeGrants`, with `extra` fields first.
macro_rules! identity_match {
    ($(#[$meta:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $($extra)*
            /// Every user the upstream provider authenticates. Must be the only entry.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub any_authenticated_user: bool,
            /// Upstream subjects (`sub`; the numeric user id for GitHub), exactly.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub subjects: Vec<String>,
            /// Verified email addresses (case-insensitive). An email counts only when the
            /// provider marks it verified (`email_verified: true`; GitHub: the primary verified
            /// address, which needs the `user:email` scope).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub emails: Vec<String>,
            /// Domains of verified email addresses, e.g. `example.com` (exact domain, no
            /// subdomains).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub email_domains: Vec<String>,
            /// Groups or roles, read from the `access.groupsClaim` claim of the ID token or
            /// userinfo (OIDC providers).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub groups: Vec<String>,
            /// GitHub organisation logins (case-insensitive) the user is a member of. Needs the
            /// `read:org` scope upstream.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub orgs: Vec<String>,
            /// GitHub teams as `org/team-slug` (case-insensitive). Needs `read:org` upstream.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub teams: Vec<String>,
            /// Google Workspace domains (the ID token's `hd` claim), exactly.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub hosted_domains: Vec<String>,
            /// Entra ID tenant ids (the ID token's `tid` claim), exactly.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub tenants: Vec<String>,
        }
    };
}

identity_match! {
    /// Who may sign in: a user matching any one entry. Without a match the flow ends with
    /// `access_denied`.
    pub struct AccessSpec {
        /// The ID-token or userinfo claim holding the user's groups or roles (a string or a
        /// list of strings). Default `groups`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub groups_claim: Option<String>,
    }
}

identity_match! {
    /// Signed-in users who may be granted one scope: a user matching any one entry.
    pub struct IdentityMatch {}
}

impl AccessSpec {
    /// The identity entries, without `groupsClaim`.
    pub fn identities(&self) -> IdentityMatch {
        IdentityMatch {
            any_authenticated_user: self.any_authenticated_user,
            subjects: self.subjects.clone(),
            emails: self.emails.clone(),
            email_domains: self.email_domains.clone(),
            groups: self.groups.clone(),
            orgs: self.orgs.clone(),
            teams: self.teams.clone(),
            hosted_domains: self.hosted_domains.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

impl IdentityMatch {
    /// True when no entry is set: nobody matches.
    pub fn is_empty(&self) -> bool {
        !self.any_authenticated_user && self.lists().iter().all(|(_, l)| l.is_empty())
    }

    /// Each list with its field name.
    pub fn lists(&self) -> [(&'static str, &[String]); 8] {
        [
            ("subjects", &self.subjects),
            ("emails", &self.emails),
            ("emailDomains", &self.email_domains),
            ("groups", &self.groups),
            ("orgs", &self.orgs),
            ("teams", &self.teams),
            ("hostedDomains", &self.hosted_domains),
            ("tenants", &self.tenants),
        ]
    }
}

fn default_access_ttl() -> u32 {
    900
}

fn default_refresh_ttl() -> u32 {
    14 * 24 * 3600
}

/// Upstream identity provider presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// GitHub OAuth Apps / GitHub Apps (not OIDC; identity from the user API).
    Github,
    /// Google accounts (OIDC).
    Google,
    /// Microsoft Entra ID v2 endpoints (OIDC).
    Entra,
    /// Any OpenID Connect provider, found by discovery from `issuer`.
    Oidc,
}

/// When the consent page is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConsentMode {
    /// Ask on every authorization.
    #[default]
    Always,
    /// Remember an approval per signed-in user, client, redirect URI and scope set.
    Remember,
}

/// A scope requirement for matching MCP requests, on top of `jwt.requiredScopes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeRule {
    /// JSON-RPC method, e.g. `tools/call`, or `*` for every method.
    pub method: String,
    /// For `tools/call`: tool names this rule covers; `*` matches any run of characters
    /// (`delete_*`). Empty means every tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Scopes the request needs, all of them.
    pub scopes: Vec<String>,
}

/// Where shared OAuth state is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// A Redis deployment shared by all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
}

/// Connection to Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `redis://host:port[/db]`, or `rediss://` for TLS. For sentinel, a sentinel address;
    /// for cluster, one seed node.
    pub url: String,
    /// Deployment shape.
    #[serde(default)]
    pub mode: RedisMode,
    /// More sentinel or cluster seed addresses (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_nodes: Vec<String>,
    /// Sentinel master name (required for `mode: sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_master: Option<String>,
    /// ACL user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretRef>,
    /// Timeout of each Redis command, in milliseconds.
    #[serde(default = "default_redis_timeout")]
    pub timeout_millis: u32,
}

fn default_redis_timeout() -> u32 {
    1000
}

/// Redis deployment shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisMode {
    /// One primary.
    #[default]
    Standalone,
    /// Primary found through Redis Sentinel.
    Sentinel,
    /// Redis Cluster.
    Cluster,
}

/// Identity passed to the MCP server. The caller's bearer token is never forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardSpec {
    /// Token claim → request header, e.g. `sub: X-Auth-Subject`. Headers of these names sent
    /// by the client are removed first, so the app can trust them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims_to_headers: BTreeMap<String, String>,
    /// `oauthProxy` only: a request header, e.g. `X-Upstream-Token`, that carries the upstream
    /// identity provider's access token of the caller's session to the MCP server, so it can
    /// call the provider's API as the signed-in user. Renewed upstream when near expiry; headers
    /// of this name sent by the client are removed, and it is never sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_token_header: Option<String>,
}

/// Browser access.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins (`scheme://host[:port]`) allowed besides the resource's own. A request with any
    /// other `Origin` header is refused with 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

/// The audit trail: one JSON line per MCP request (per call of a JSON-RPC batch) with the
/// caller, the method, the tool, resource or prompt, and what the sidecar decided. Bearer
/// tokens are never written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSpec {
    /// Whether audit lines are written.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the lines go: `stderr` (the container log), or an absolute file path, rotated by
    /// size (`maxFileBytes`, `maxFiles`).
    #[serde(default = "default_audit_destination")]
    pub destination: String,
    /// Size at which the audit file is rotated (`<path>.1`, `<path>.2`, ...), in bytes.
    #[serde(default = "default_audit_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    #[serde(default = "default_audit_files")]
    pub max_files: u32,
    /// Writes the `arguments` of `tools/call` (and `prompts/get`). Off by default: arguments
    /// can carry personal data or secrets.
    #[serde(default)]
    pub include_arguments: bool,
    /// Largest argument object written, in bytes of JSON; larger ones are replaced by a note
    /// with their size.
    #[serde(default = "default_argument_bytes")]
    pub max_argument_bytes: u32,
    /// Argument fields whose values are written as `"[redacted]"`, at any depth (exact names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_fields: Vec<String>,
    /// Tool names counted one by one in `mcp_warden_tool_calls_total`; every other tool is
    /// counted as `other`. Empty: tool calls are not counted. At most 50 names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_metrics: Vec<String>,
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec {
            enabled: true,
            destination: default_audit_destination(),
            max_file_bytes: default_audit_file_bytes(),
            max_files: default_audit_files(),
            include_arguments: false,
            max_argument_bytes: default_argument_bytes(),
            redact_fields: Vec::new(),
            tool_metrics: Vec::new(),
        }
    }
}

/// The `destination` that writes audit lines to the sidecar's standard error.
pub const AUDIT_TO_STDERR: &str = "stderr";

fn default_true() -> bool {
    true
}

fn default_audit_destination() -> String {
    AUDIT_TO_STDERR.to_owned()
}

fn default_audit_file_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_audit_files() -> u32 {
    3
}

fn default_argument_bytes() -> u32 {
    4096
}
