//! A policy turned into everything the request path needs, built once per (re)load so requests
//! never re-derive anything.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use mcp_warden_policy::{AuthMode, JwtAlgorithm, PolicyDocument, PolicyError, ValidatedResource};

use crate::audit::Auditor;
use crate::challenge::Challenge;
use crate::forward::Forwarding;
use crate::introspect::{self, Introspector};
use crate::jwks::JwksSource;
use crate::metadata;
use crate::metrics::{Metrics, PolicyMeters};
use crate::origin::Origins;
use crate::rules::Rules;
use crate::scopes;
use crate::verify::{Expectations, Keys, Verifier};

/// Why a policy could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The document or its spec is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `--resource-url` is not a valid resource URL.
    #[error("--resource-url: {0}")]
    ResourceOverride(String),
    /// The mode cannot be served by this build.
    #[error("{0}")]
    Unsupported(String),
    /// A Secret the policy names cannot be read.
    #[error("{0}")]
    Secret(String),
    /// The OAuth proxy cannot start (keys, secrets, store configuration).
    #[error(transparent)]
    OAuth(#[from] crate::oauth::OAuthError),
    /// The audit destination cannot be opened.
    #[error("spec.audit.destination: {0}")]
    Audit(std::io::Error),
}

/// Process-wide inputs to building a runtime.
#[derive(Clone)]
pub struct BuildContext {
    /// `--resource-url`, overriding `spec.resource.url`.
    pub resource_override: Option<String>,
    /// `--secrets-dir`.
    pub secrets_dir: PathBuf,
    /// HTTP client for the IdP.
    pub http: reqwest::Client,
    /// Metric families.
    pub metrics: Metrics,
    /// OAuth proxy metric families and store, kept across reloads.
    pub oauth: crate::oauth::Shared,
    /// The audit writer, kept across reloads.
    pub audit: crate::audit::Writers,
}

/// Extra endpoints served on the public port before authentication (the OAuth facade).
#[derive(Clone)]
pub struct Endpoints {
    /// Handles the requests `handles` accepts.
    pub router: axum::Router,
    /// Which paths belong to `router`.
    pub handles: fn(&str) -> bool,
}

/// One loaded policy.
pub struct Runtime {
    /// `metadata.name`, the `policy` metric label.
    pub policy: String,
    /// The resource as clients see it.
    pub resource: ValidatedResource,
    /// Challenge parts for 401/403.
    pub challenge: Challenge,
    /// The RFC 9728 document.
    pub metadata: Bytes,
    /// `/.well-known/oauth-protected-resource`.
    pub metadata_root: String,
    /// `/.well-known/oauth-protected-resource/<resource path>`.
    pub metadata_suffixed: String,
    /// Token checks.
    pub verifier: Verifier,
    /// RFC 7662 introspection of opaque tokens (`spec.jwt.introspection`).
    pub introspector: Option<Arc<Introspector>>,
    /// Scopes every request needs.
    pub required_scopes: Vec<String>,
    /// Per-method/tool scopes.
    pub rules: Rules,
    /// Identity headers for the app.
    pub forwarding: Forwarding,
    /// Browser origins.
    pub origins: Origins,
    /// The OAuth facade's endpoints in `oauthProxy` mode.
    pub endpoints: Option<Endpoints>,
    /// This policy's request counters.
    pub meters: PolicyMeters,
    /// Revoked sessions of proxy-issued tokens (`oauthProxy` mode).
    pub revocations: Option<Arc<crate::oauth::revocation::Revocations>>,
    /// This policy's audit trail.
    pub audit: Auditor,
    /// `forward.upstreamTokenHeader`: the header and the proxy holding the sessions.
    pub upstream_token: Option<UpstreamTokenHeader>,
}

/// Where the caller's upstream access token goes (`forward.upstreamTokenHeader`).
pub struct UpstreamTokenHeader {
    /// The header name.
    pub header: http::HeaderName,
    /// The proxy whose sessions hold the tokens.
    pub proxy: Arc<crate::oauth::OAuthProxy>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl Runtime {
    /// Validates `doc` (with the `--resource-url` override applied) and builds the runtime.
    pub async fn build(
        mut doc: PolicyDocument,
        ctx: &BuildContext,
    ) -> Result<Runtime, RuntimeError> {
        if let Some(url) = &ctx.resource_override {
            doc.spec.resource.url = url.clone();
        }
        doc.spec.validate()?;
        let resource = ValidatedResource::parse(&doc.spec.resource.url)
            .map_err(RuntimeError::ResourceOverride)?;
        let policy = doc.metadata.name.clone();
        let spec = &doc.spec;

        let mut revocations = None;
        let mut introspector = None;
        let mut upstream_token = None;
        let token_header = spec
            .forward
            .as_ref()
            .and_then(|f| f.upstream_token_header.as_deref())
            .map(|h| {
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|e| RuntimeError::Unsupported(format!("upstreamTokenHeader: {e}")))
            })
            .transpose()?;
        let (issuer, verifier, required_scopes, endpoints) = match spec.mode {
            AuthMode::Jwt => {
                let jwt = spec
                    .jwt
                    .as_ref()
                    .expect("validated: jwt mode has a jwt section");
                let audiences = if jwt.audiences.is_empty() {
                    vec![resource.url.clone()]
                } else {
                    jwt.audiences.clone()
                };
                let source = JwksSource::new(
                    &policy,
                    &jwt.issuer,
                    jwt.jwks_uri.as_deref(),
                    jwt.allow_insecure_http,
                    ctx.http.clone(),
                    ctx.metrics.clone(),
                );
                if let Some(spec) = &jwt.introspection {
                    let client_secret = spec
                        .client_secret_ref
                        .read(&ctx.secrets_dir)
                        .map_err(|e| RuntimeError::Secret(e.to_string()))?;
                    let settings = introspect::Settings {
                        policy: policy.clone(),
                        issuer: jwt.issuer.clone(),
                        audiences: audiences.clone(),
                        leeway: jwt.clock_skew_seconds.into(),
                        allow_insecure_http: jwt.allow_insecure_http,
                        client_secret,
                    };
                    introspector = Some(Arc::new(Introspector::new(
                        spec.clone(),
                        settings,
                        ctx.http.clone(),
                        ctx.metrics.clone(),
                    )));
                }
                let expect = Expectations {
                    issuer: jwt.issuer.clone(),
                    audiences,
                    algorithms: jwt.algorithms.iter().copied().map(algorithm).collect(),
                    leeway: jwt.clock_skew_seconds.into(),
                    token_types: jwt.token_types.clone(),
                };
                let verifier = Verifier::new(expect, Keys::Remote(Arc::new(source)));
                (
                    jwt.issuer.clone(),
                    verifier,
                    jwt.required_scopes.clone(),
                    None,
                )
            }
            AuthMode::OauthProxy => {
                let proxy =
                    crate::oauth::OAuthProxy::build(&doc, &resource, &ctx.secrets_dir, &ctx.oauth)
                        .await?;
                let proxy = Arc::new(proxy);
                // Resource-server side: only tokens this proxy signed, for this resource.
                let expect = Expectations {
                    issuer: proxy.issuer().to_owned(),
                    audiences: vec![resource.url.clone()],
                    algorithms: vec![Algorithm::ES256],
                    leeway: 60,
                    // The proxy signs access tokens only, all `at+jwt`.
                    token_types: vec!["at+jwt".into()],
                };
                let keys = crate::keys::KeySet::from_jwks(&proxy.verification_keys());
                let verifier = Verifier::new(expect, Keys::Local(Arc::new(keys)));
                revocations = Some(proxy.revocations());
                upstream_token = token_header.clone().map(|header| UpstreamTokenHeader {
                    header,
                    proxy: proxy.clone(),
                });
                let endpoints = Endpoints {
                    router: proxy.clone().router(),
                    handles: crate::oauth::handles,
                };
                (
                    proxy.issuer().to_owned(),
                    verifier,
                    Vec::new(),
                    Some(endpoints),
                )
            }
        };

        let challenge_scopes = if required_scopes.is_empty() {
            &spec.resource.scopes_supported
        } else {
            &required_scopes
        };
        let challenge = Challenge {
            resource_metadata: metadata::metadata_url(&resource.origin, &resource.path),
            scope: scopes::join(
                challenge_scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != "offline_access"),
            ),
        };
        let metadata = metadata::render(
            &resource.url,
            &issuer,
            &spec.resource.scopes_supported,
            spec.resource.name.as_deref(),
        );
        let suffix = resource.path.trim_end_matches('/');
        let audit = Auditor::new(&policy, spec.audit.as_ref(), &ctx.audit, &ctx.metrics)
            .map_err(RuntimeError::Audit)?;
        Ok(Runtime {
            audit,
            meters: ctx.metrics.for_policy(&policy),
            policy,
            metadata_root: metadata::WELL_KNOWN.to_owned(),
            metadata_suffixed: format!("{}{suffix}", metadata::WELL_KNOWN),
            challenge,
            metadata: Bytes::from(metadata),
            verifier,
            introspector,
            required_scopes,
            rules: Rules::new(&spec.rules),
            forwarding: token_header.into_iter().fold(
                Forwarding::new(
                    spec.forward
                        .as_ref()
                        .map(|f| &f.claims_to_headers)
                        .unwrap_or(&Default::default()),
                    resource.url.split(':').next().unwrap_or("https"),
                ),
                Forwarding::with_private_header,
            ),
            origins: Origins::new(
                &resource.origin,
                spec.cors.as_ref().map_or(&[][..], |c| &c.allowed_origins),
            ),
            resource,
            endpoints,
            revocations,
            upstream_token,
        })
    }
}
