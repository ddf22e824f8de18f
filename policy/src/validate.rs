//! Checks a spec beyond what its types say, reporting every problem at once with its field path.

use std::fmt;
use std::net::IpAddr;

use url::Url;

use crate::spec::{
    AUDIT_TO_STDERR, AuditSpec, AuthMode, IdentityMatch, McpAuthPolicySpec, OAuthProxySpec,
    Provider, RateLimitKey, RateLimitedEndpoint, RedisMode,
};

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid YAML/JSON, or a field has the wrong type or an unknown name.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// The document is not an `McpAuthPolicy`.
    #[error(
        "expected apiVersion mcpwarden.dev/v1alpha1 and kind McpAuthPolicy, got {api_version} {kind}"
    )]
    WrongKind {
        /// What the document says.
        api_version: String,
        /// What the document says.
        kind: String,
    },
    /// Semantic problems, each with the field path.
    #[error("policy is invalid: {}", Problems(.0))]
    Invalid(Vec<(String, String)>),
}

struct Problems<'a>(&'a [(String, String)]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {why}")?;
        }
        Ok(())
    }
}

/// The parsed `resource.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedResource {
    /// The URL exactly as configured (the PRM `resource` value).
    pub url: String,
    /// `scheme://host[:port]`.
    pub origin: String,
    /// The path, `/` when empty.
    pub path: String,
}

impl ValidatedResource {
    /// Parses and checks a resource URL: absolute, http(s), no fragment, query or userinfo;
    /// https unless the host is loopback.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("not an absolute URL ({e})"))?;
        check_web_url(&url, false)?;
        if url.query().is_some() {
            return Err("must not have a query".into());
        }
        Ok(Self {
            url: raw.to_owned(),
            origin: url.origin().ascii_serialization(),
            path: url.path().to_owned(),
        })
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn check_web_url(url: &Url, allow_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback_host(url) => {}
        "http" => {
            return Err("must use https (plain http is only allowed for loopback hosts)".into());
        }
        other => return Err(format!("scheme {other:?} is not http(s)")),
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(())
}

struct Report(Vec<(String, String)>);

impl Report {
    fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(why) = result {
            self.0.push((field.to_owned(), why));
        }
    }

    fn url(&mut self, field: &str, raw: &str, allow_http: bool) {
        let result = Url::parse(raw).map_err(|e| format!("not an absolute URL ({e})"));
        self.check(field, result.and_then(|u| check_web_url(&u, allow_http)));
    }
}

const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "mcp-session-id",
    "mcp-protocol-version",
    "origin",
    "forwarded",
    "x-real-ip",
];

/// Whether the sidecar sets or needs `header` itself. Names compare as servers that turn `_` into
/// `-` see them (the sidecar drops client headers that normalise to a mapped one).
fn is_reserved_header(header: &str) -> bool {
    let name = header.to_ascii_lowercase().replace('_', "-");
    RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("x-forwarded-")
}

/// A header the sidecar sets for the app: a token of letters, digits, `-` and `_`, not one the
/// sidecar owns.
fn check_header_name(r: &mut Report, field: &str, header: &str) {
    let valid = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        r.check(field, Err(format!("{header:?} is not a valid header name")));
    } else if is_reserved_header(header) {
        r.check(field, Err(format!("{header} is reserved")));
    }
}

impl McpAuthPolicySpec {
    /// Checks cross-field rules; every problem is reported with its field path.
    pub fn validate(&self) -> Result<(), crate::PolicyError> {
        let mut r = Report(Vec::new());
        r.check(
            "spec.resource.url",
            ValidatedResource::parse(&self.resource.url).map(|_| ()),
        );
        match (self.mode, &self.jwt, &self.oauth_proxy) {
            (AuthMode::Jwt, None, _) => {
                r.check("spec.jwt", Err("required when mode is jwt".into()))
            }
            (AuthMode::OauthProxy, _, None) => r.check(
                "spec.oauthProxy",
                Err("required when mode is oauthProxy".into()),
            ),
            (AuthMode::Jwt, _, Some(_)) => r.check(
                "spec.oauthProxy",
                Err("only allowed when mode is oauthProxy".into()),
            ),
            (AuthMode::OauthProxy, Some(_), _) => {
                r.check("spec.jwt", Err("only allowed when mode is jwt".into()))
            }
            _ => {}
        }
        if let (AuthMode::Jwt, Some(jwt)) = (self.mode, &self.jwt) {
            r.url("spec.jwt.issuer", &jwt.issuer, jwt.allow_insecure_http);
            if let Some(uri) = &jwt.jwks_uri {
                r.url("spec.jwt.jwksUri", uri, jwt.allow_insecure_http);
            }
            if jwt.algorithms.is_empty() {
                r.check(
                    "spec.jwt.algorithms",
                    Err("must list at least one algorithm".into()),
                );
            }
            for (i, typ) in jwt.token_types.iter().enumerate() {
                if typ.trim().is_empty() || typ.chars().any(char::is_whitespace) {
                    r.check(
                        &format!("spec.jwt.tokenTypes[{i}]"),
                        Err(format!("{typ:?} is not a media type such as at+jwt")),
                    );
                }
            }
            if jwt.clock_skew_seconds > 300 {
                r.check(
                    "spec.jwt.clockSkewSeconds",
                    Err("must be at most 300".into()),
                );
            }
            for (i, aud) in jwt.audiences.iter().enumerate() {
                if aud.is_empty() {
                    r.check(
                        &format!("spec.jwt.audiences[{i}]"),
                        Err("must not be empty".into()),
                    );
                }
            }
            if let Some(intro) = &jwt.introspection {
                if let Some(endpoint) = &intro.endpoint {
                    r.url(
                        "spec.jwt.introspection.endpoint",
                        endpoint,
                        jwt.allow_insecure_http,
                    );
                }
                if intro.client_id.is_empty() {
                    r.check(
                        "spec.jwt.introspection.clientId",
                        Err("must not be empty".into()),
                    );
                }
                if !(1..=3600).contains(&intro.cache_seconds) {
                    r.check(
                        "spec.jwt.introspection.cacheSeconds",
                        Err("must be between 1 and 3600".into()),
                    );
                }
            }
        }
        if let (AuthMode::OauthProxy, Some(proxy)) = (self.mode, &self.oauth_proxy) {
            validate_proxy(&mut r, proxy);
            validate_access(&mut r, proxy, &self.resource.scopes_supported);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.method.is_empty() {
                r.check(
                    &format!("spec.rules[{i}].method"),
                    Err("must not be empty".into()),
                );
            }
            if rule.scopes.is_empty() {
                r.check(
                    &format!("spec.rules[{i}].scopes"),
                    Err("must list at least one scope".into()),
                );
            }
        }
        for (claim, header) in self.forward.iter().flat_map(|f| &f.claims_to_headers) {
            let field = format!("spec.forward.claimsToHeaders.{claim}");
            check_header_name(&mut r, &field, header);
        }
        if let Some(header) = self
            .forward
            .as_ref()
            .and_then(|f| f.upstream_token_header.as_ref())
        {
            let field = "spec.forward.upstreamTokenHeader";
            if self.mode != AuthMode::OauthProxy {
                r.check(
                    field,
                    Err("only allowed when mode is oauthProxy (the sidecar holds no upstream token in jwt mode)".into()),
                );
            }
            check_header_name(&mut r, field, header);
            let normalised = |h: &str| h.to_ascii_lowercase().replace('_', "-");
            let clash = self
                .forward
                .iter()
                .flat_map(|f| &f.claims_to_headers)
                .find(|(_, h)| normalised(h) == normalised(header));
            if let Some((claim, _)) = clash {
                r.check(
                    field,
                    Err(format!(
                        "{header} is already the header of claimsToHeaders.{claim}"
                    )),
                );
            }
        }
        for (i, origin) in self
            .cors
            .iter()
            .flat_map(|c| &c.allowed_origins)
            .enumerate()
        {
            let ok = Url::parse(origin).ok().filter(|u| {
                u.has_host() && u.origin().ascii_serialization() == origin.trim_end_matches('/')
            });
            if ok.is_none() {
                r.check(
                    &format!("spec.cors.allowedOrigins[{i}]"),
                    Err(format!(
                        "{origin:?} is not an origin (scheme://host[:port])"
                    )),
                );
            }
        }
        if let Some(audit) = &self.audit {
            validate_audit(&mut r, audit);
        }
        if let Some(redis) = self.storage.as_ref().and_then(|s| s.redis.as_ref()) {
            let scheme_ok =
                Url::parse(&redis.url).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"));
            if !scheme_ok {
                r.check(
                    "spec.storage.redis.url",
                    Err("must be a redis:// or rediss:// URL".into()),
                );
            }
            if redis.mode == RedisMode::Sentinel && redis.sentinel_master.is_none() {
                r.check(
                    "spec.storage.redis.sentinelMaster",
                    Err("required when mode is sentinel".into()),
                );
            }
        }
        if r.0.is_empty() {
            Ok(())
        } else {
            Err(crate::PolicyError::Invalid(r.0))
        }
    }
}

/// Most tool names `spec.audit.toolMetrics` may list (each is a metric series per outcome).
pub const MAX_TOOL_METRICS: usize = 50;

fn validate_audit(r: &mut Report, audit: &AuditSpec) {
    let dest = &audit.destination;
    if dest != AUDIT_TO_STDERR && !(dest.starts_with('/') && dest.len() > 1 && !dest.ends_with('/'))
    {
        r.check(
            "spec.audit.destination",
            Err(format!(
                "{dest:?} is neither stderr nor an absolute file path"
            )),
        );
    }
    if audit.max_file_bytes < 4096 {
        r.check(
            "spec.audit.maxFileBytes",
            Err("must be at least 4096".into()),
        );
    }
    if audit.max_files > 100 {
        r.check("spec.audit.maxFiles", Err("must be at most 100".into()));
    }
    if audit.tool_metrics.len() > MAX_TOOL_METRICS {
        r.check(
            "spec.audit.toolMetrics",
            Err(format!("must list at most {MAX_TOOL_METRICS} tools")),
        );
    }
    for (i, tool) in audit.tool_metrics.iter().enumerate() {
        if tool.is_empty() || tool == "other" || tool.chars().any(char::is_control) {
            r.check(
                &format!("spec.audit.toolMetrics[{i}]"),
                Err(format!("{tool:?} is not a usable tool name")),
            );
        }
    }
}

fn validate_proxy(r: &mut Report, proxy: &OAuthProxySpec) {
    if proxy.client_id.is_empty() {
        r.check("spec.oauthProxy.clientId", Err("must not be empty".into()));
    }
    match (&proxy.issuer, proxy.provider) {
        (None, Provider::Oidc) => r.check(
            "spec.oauthProxy.issuer",
            Err("required for provider oidc".into()),
        ),
        (Some(issuer), _) => r.url("spec.oauthProxy.issuer", issuer, false),
        _ => {}
    }
    for (i, uri) in proxy.allowed_redirect_uris.iter().enumerate() {
        let field = format!("spec.oauthProxy.allowedRedirectUris[{i}]");
        match Url::parse(uri) {
            Err(e) => r.check(&field, Err(format!("not an absolute URL ({e})"))),
            Ok(u) if u.fragment().is_some() => {
                r.check(&field, Err("must not have a fragment".into()))
            }
            Ok(u) if u.scheme() == "http" && !is_loopback_host(&u) => r.check(
                &field,
                Err("plain http is only allowed for loopback hosts".into()),
            ),
            Ok(_) => {}
        }
    }
    if proxy.access_token_ttl_seconds == 0 || proxy.access_token_ttl_seconds > 86_400 {
        r.check(
            "spec.oauthProxy.accessTokenTtlSeconds",
            Err("must be between 1 and 86400".into()),
        );
    }
    if proxy.refresh_token_ttl_seconds == 0 {
        r.check(
            "spec.oauthProxy.refreshTokenTtlSeconds",
            Err("must be positive".into()),
        );
    }
    for endpoint in RateLimitedEndpoint::ALL {
        let Some(limit) = proxy.rate_limits.as_ref().and_then(|l| l.get(endpoint)) else {
            continue;
        };
        let field = format!("spec.oauthProxy.rateLimits.{}", endpoint.name());
        if limit.requests == 0 {
            r.check(
                &format!("{field}.requests"),
                Err("must be at least 1".into()),
            );
        }
        if limit.window_seconds == 0 || limit.window_seconds > 86_400 {
            r.check(
                &format!("{field}.windowSeconds"),
                Err("must be between 1 and 86400".into()),
            );
        }
        if endpoint == RateLimitedEndpoint::Register && limit.key == RateLimitKey::ClientId {
            r.check(
                &format!("{field}.key"),
                Err("a registration has no client id yet: use clientAddress".into()),
            );
        }
    }
}

/// `access` and `scopeGrants`: fail closed, and only entries the provider can supply.
fn validate_access(r: &mut Report, proxy: &OAuthProxySpec, scopes_supported: &[String]) {
    let Some(access) = &proxy.access else {
        r.check(
            "spec.oauthProxy.access",
            Err(
                "required: say who may sign in (e.g. emailDomains, orgs, tenants), or set \
                 anyAuthenticatedUser: true to admit every user of the identity provider"
                    .into(),
            ),
        );
        return;
    };
    check_identities(r, "spec.oauthProxy.access", &access.identities(), proxy);
    if access.groups_claim.as_deref() == Some("") {
        r.check(
            "spec.oauthProxy.access.groupsClaim",
            Err("must not be empty".into()),
        );
    }
    for (scope, who) in &proxy.scope_grants {
        let field = format!("spec.oauthProxy.scopeGrants.{scope}");
        if !scopes_supported.contains(scope) {
            r.check(
                &field,
                Err("is not in spec.resource.scopesSupported, so it is never granted".into()),
            );
        }
        check_identities(r, &field, who, proxy);
    }
}

fn check_identities(r: &mut Report, field: &str, who: &IdentityMatch, proxy: &OAuthProxySpec) {
    if who.is_empty() {
        r.check(
            field,
            Err("names nobody: list who qualifies, or set anyAuthenticatedUser: true".into()),
        );
        return;
    }
    if who.any_authenticated_user && who.lists().iter().any(|(_, l)| !l.is_empty()) {
        r.check(
            field,
            Err("anyAuthenticatedUser admits everyone; it must be the only entry".into()),
        );
    }
    let provider = proxy.provider;
    let only = |name: &str, allowed: bool, which: &str| -> Option<(String, String)> {
        (!allowed).then(|| {
            (
                format!("{field}.{name}"),
                format!("only for provider {which}"),
            )
        })
    };
    for (name, list) in who.lists() {
        if list.is_empty() {
            continue;
        }
        let problem = match name {
            "orgs" | "teams" => only(name, provider == Provider::Github, "github"),
            "hostedDomains" => only(name, provider == Provider::Google, "google"),
            "tenants" => only(name, provider == Provider::Entra, "entra"),
            "groups" => only(
                name,
                provider != Provider::Github,
                "google, entra or oidc (GitHub: use teams)",
            ),
            _ => None,
        };
        if let Some((f, why)) = problem {
            r.check(&f, Err(why));
        }
        for (i, entry) in list.iter().enumerate() {
            let bad = match name {
                _ if entry.trim().is_empty() || entry.trim() != entry => {
                    Some("must be non-empty without surrounding spaces")
                }
                "emailDomains" if entry.contains('@') => Some("a domain, without @"),
                "emails" if !entry.contains('@') => Some("not an email address"),
                "teams" if entry.split('/').filter(|p| !p.is_empty()).count() != 2 => {
                    Some("must be org/team-slug")
                }
                _ => None,
            };
            if let Some(why) = bad {
                r.check(&format!("{field}.{name}[{i}]"), Err(why.into()));
            }
        }
    }
    if provider == Provider::Github && !proxy.scopes.is_empty() {
        let has = |wanted: &[&str]| proxy.scopes.iter().any(|s| wanted.contains(&s.as_str()));
        let reads_orgs = !who.orgs.is_empty() || !who.teams.is_empty();
        if reads_orgs && !has(&["read:org", "write:org", "admin:org"]) {
            r.check(
                "spec.oauthProxy.scopes",
                Err(format!(
                    "must include read:org: {field} names GitHub orgs or teams"
                )),
            );
        }
        let reads_email = !who.emails.is_empty() || !who.email_domains.is_empty();
        if reads_email && !has(&["user:email", "user"]) {
            r.check(
                "spec.oauthProxy.scopes",
                Err(format!(
                    "must include user:email: {field} names emails or email domains"
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::PolicyDocument;

    const JWT: &str = r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: corp-sso, namespace: tools, labels: {a: b}}
spec:
  resource: {url: "https://mcp.example.com/mcp", scopesSupported: [mcp:tools]}
  mode: jwt
  jwt:
    issuer: https://login.example.com
    audiences: [https://mcp.example.com/mcp]
    requiredScopes: [mcp:tools]
  forward:
    claimsToHeaders: {sub: X-Auth-Subject}
"#;

    #[test]
    fn introspection_defaults_and_limits() {
        let with = |extra: &str| {
            JWT.replace(
                "    requiredScopes: [mcp:tools]\n",
                &format!("    requiredScopes: [mcp:tools]\n    introspection: {{clientId: w, clientSecretRef: {{name: s, key: k}}{extra}}}\n"),
            )
        };
        let doc = PolicyDocument::from_yaml(&with("")).unwrap();
        let intro = doc
            .spec
            .jwt
            .as_ref()
            .unwrap()
            .introspection
            .as_ref()
            .unwrap();
        assert_eq!(
            (intro.cache_seconds, intro.always, intro.endpoint.as_ref()),
            (60, false, None)
        );
        assert_eq!(doc.spec.secret_refs().len(), 1);
        let err = |extra: &str| {
            PolicyDocument::from_yaml(&with(extra))
                .unwrap_err()
                .to_string()
        };
        assert!(err(", cacheSeconds: 0").contains("spec.jwt.introspection.cacheSeconds"));
        assert!(
            err(", endpoint: \"http://idp.example/introspect\"")
                .contains("spec.jwt.introspection.endpoint: must use https")
        );
    }

    #[test]
    fn parses_the_contract_example() {
        let doc = PolicyDocument::from_yaml(JWT).unwrap();
        assert_eq!(doc.metadata.name, "corp-sso");
        let jwt = doc.spec.jwt.as_ref().unwrap();
        assert_eq!(jwt.clock_skew_seconds, 60);
        assert_eq!(jwt.algorithms.len(), 4);
        let again = PolicyDocument::from_yaml(&doc.to_yaml()).unwrap();
        assert_eq!(again, doc);
    }

    fn invalid(text: &str) -> String {
        PolicyDocument::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let bad = JWT
            .replace("https://login.example.com", "http://login.example.com")
            .replace("X-Auth-Subject", "Authorization");
        let msg = invalid(&bad);
        assert!(msg.contains("spec.jwt.issuer: must use https"), "{msg}");
        assert!(
            msg.contains("spec.forward.claimsToHeaders.sub: Authorization is reserved"),
            "{msg}"
        );
    }

    #[test]
    fn headers_the_sidecar_owns_cannot_carry_claims() {
        for header in [
            "Mcp_Session_Id",
            "X-Forwarded-For",
            "x_forwarded_host",
            "Forwarded",
        ] {
            let msg = invalid(&JWT.replace("X-Auth-Subject", header));
            assert!(msg.contains(&format!("{header} is reserved")), "{msg}");
        }
    }

    #[test]
    fn allows_loopback_http_and_the_explicit_insecure_option() {
        assert!(
            PolicyDocument::from_yaml(
                &JWT.replace("https://login.example.com", "http://127.0.0.1:9000")
            )
            .is_ok()
        );
        let insecure = JWT
            .replace("https://login.example.com", "http://idp.internal")
            .replace(
                "requiredScopes:",
                "allowInsecureHttp: true\n    requiredScopes:",
            );
        assert!(PolicyDocument::from_yaml(&insecure).is_ok());
    }

    const PROXY: &str = r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: gh}
spec:
  resource: {url: "https://mcp.example.com/mcp", scopesSupported: [mcp:tools, mcp:admin]}
  mode: oauthProxy
  oauthProxy:
    provider: github
    clientId: Iv1.x
"#;

    #[test]
    fn upstream_token_header_is_for_the_proxy_and_a_header_of_its_own() {
        let proxy = |forward: &str| {
            format!("{PROXY}    access: {{anyAuthenticatedUser: true}}\n  forward: {forward}\n")
        };
        let doc =
            PolicyDocument::from_yaml(&proxy("{upstreamTokenHeader: X-Upstream-Token}")).unwrap();
        let forward = doc.spec.forward.as_ref().unwrap();
        assert_eq!(
            forward.upstream_token_header.as_deref(),
            Some("X-Upstream-Token")
        );
        for (forward, expect) in [
            (
                "{upstreamTokenHeader: Authorization}",
                "spec.forward.upstreamTokenHeader: Authorization is reserved",
            ),
            (
                "{upstreamTokenHeader: \"X Token\"}",
                "is not a valid header name",
            ),
            (
                "{upstreamTokenHeader: X_Auth_Subject, claimsToHeaders: {sub: X-Auth-Subject}}",
                "X_Auth_Subject is already the header of claimsToHeaders.sub",
            ),
        ] {
            let msg = invalid(&proxy(forward));
            assert!(msg.contains(expect), "{forward}: {msg}");
        }
        let msg = invalid(&format!("{JWT}    upstreamTokenHeader: X-Upstream-Token\n"));
        assert!(
            msg.contains("spec.forward.upstreamTokenHeader: only allowed when mode is oauthProxy"),
            "{msg}"
        );
    }

    #[test]
    fn rate_limits_are_checked_per_endpoint() {
        let with = |limits: &str| {
            format!("{PROXY}    access: {{anyAuthenticatedUser: true}}\n    rateLimits: {limits}\n")
        };
        let doc = PolicyDocument::from_yaml(&with(
            "{token: {requests: 5, key: clientId}, register: {requests: 2, windowSeconds: 10}}",
        ))
        .unwrap();
        let limits = doc.spec.oauth_proxy.unwrap().rate_limits.unwrap();
        assert_eq!(limits.token.as_ref().unwrap().window_seconds, 60);
        assert_eq!(limits.token.unwrap().key, crate::RateLimitKey::ClientId);
        assert_eq!(limits.register.unwrap().window_seconds, 10);
        for (limits, expect) in [
            (
                "{token: {requests: 0}}",
                "spec.oauthProxy.rateLimits.token.requests: must be at least 1",
            ),
            (
                "{authorize: {requests: 1, windowSeconds: 0}}",
                "spec.oauthProxy.rateLimits.authorize.windowSeconds: must be between 1 and 86400",
            ),
            (
                "{register: {requests: 1, key: clientId}}",
                "spec.oauthProxy.rateLimits.register.key: a registration has no client id yet",
            ),
            ("{consent: {requests: 1}}", "unknown field `consent`"),
        ] {
            let msg = invalid(&with(limits));
            assert!(msg.contains(expect), "{limits}: {msg}");
        }
    }

    #[test]
    fn a_proxy_policy_must_say_who_may_sign_in() {
        let msg = invalid(PROXY);
        assert!(
            msg.contains("spec.oauthProxy.access: required: say who may sign in"),
            "{msg}"
        );
        let with = |extra: &str| format!("{PROXY}{extra}");
        assert!(
            PolicyDocument::from_yaml(&with("    access: {anyAuthenticatedUser: true}\n")).is_ok()
        );
        assert!(PolicyDocument::from_yaml(&with("    access: {orgs: [acme]}\n")).is_ok());
        for (extra, expect) in [
            ("    access: {}\n", "spec.oauthProxy.access: names nobody"),
            (
                "    access: {anyAuthenticatedUser: true, orgs: [acme]}\n",
                "must be the only entry",
            ),
            (
                "    access: {tenants: [t]}\n",
                "spec.oauthProxy.access.tenants: only for provider entra",
            ),
            (
                "    access: {hostedDomains: [x.test]}\n",
                "spec.oauthProxy.access.hostedDomains: only for provider google",
            ),
            (
                "    access: {groups: [g]}\n",
                "spec.oauthProxy.access.groups: only for provider",
            ),
            (
                "    access: {teams: [acme]}\n",
                "spec.oauthProxy.access.teams[0]: must be org/team-slug",
            ),
            (
                "    access: {emailDomains: [\"@x.test\"]}\n",
                "spec.oauthProxy.access.emailDomains[0]: a domain, without @",
            ),
            (
                "    scopes: [read:user]\n    access: {orgs: [acme]}\n",
                "spec.oauthProxy.scopes: must include read:org",
            ),
            (
                "    access: {orgs: [acme]}\n    scopeGrants: {mcp:write: {orgs: [acme]}}\n",
                "spec.oauthProxy.scopeGrants.mcp:write: is not in spec.resource.scopesSupported",
            ),
            (
                "    access: {orgs: [acme]}\n    scopeGrants: {mcp:admin: {}}\n",
                "spec.oauthProxy.scopeGrants.mcp:admin: names nobody",
            ),
        ] {
            let msg = invalid(&with(extra));
            assert!(msg.contains(expect), "{extra}: {msg}");
        }
    }

    #[test]
    fn rejects_mode_mismatch_unknown_fields_and_wrong_kind() {
        assert!(
            invalid(&JWT.replace("mode: jwt", "mode: oauthProxy"))
                .contains("spec.oauthProxy: required")
        );
        assert!(invalid(&JWT.replace("requiredScopes", "requiredScope")).contains("unknown field"));
        assert!(
            invalid(&JWT.replace("kind: McpAuthPolicy", "kind: Pod"))
                .contains("expected apiVersion")
        );
        assert!(invalid(&JWT.replace("mode: jwt", "mode: basic")).contains("unknown variant"));
        assert!(
            invalid(&JWT.replace(
                "https://mcp.example.com/mcp\"",
                "https://mcp.example.com/mcp#x\""
            ))
            .contains("fragment")
        );
    }
}
