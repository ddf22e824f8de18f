//! Checks that a policy's issuer answers: discovery (OpenID Connect, then RFC 8414) and the
//! JWKS, within a timeout. The result becomes the `IssuerReachable` condition.

use std::time::Duration;

use mcp_warden_policy::{AuthMode, McpAuthPolicySpec, Provider};
use serde_json::Value;

use crate::conditions::{Observed, types::ISSUER_REACHABLE};

/// What to check for a policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Discover `issuer` (unless `jwks_uri` is given) and fetch the JWKS. With `exact`, the
    /// metadata's `issuer` must equal the configured one.
    Discover {
        /// The issuer URL.
        issuer: String,
        /// A JWKS URL that skips discovery.
        jwks_uri: Option<String>,
        /// Compare the metadata's `issuer` exactly.
        exact: bool,
    },
    /// Nothing to discover (GitHub is not an OpenID provider).
    NotApplicable(&'static str),
}

/// What [`check`] looks at for this spec.
pub fn target(spec: &McpAuthPolicySpec) -> Target {
    match (spec.mode, &spec.jwt, &spec.oauth_proxy) {
        (AuthMode::Jwt, Some(jwt), _) => Target::Discover {
            issuer: jwt.issuer.clone(),
            jwks_uri: jwt.jwks_uri.clone(),
            exact: true,
        },
        (AuthMode::OauthProxy, _, Some(proxy)) => {
            let preset = match proxy.provider {
                Provider::Github => None,
                Provider::Google => Some("https://accounts.google.com".to_owned()),
                Provider::Entra => Some(format!(
                    "https://login.microsoftonline.com/{}/v2.0",
                    proxy.tenant.as_deref().unwrap_or("organizations")
                )),
                Provider::Oidc => None,
            };
            match (proxy.issuer.clone(), preset, proxy.provider) {
                (Some(issuer), _, provider) => Target::Discover {
                    issuer,
                    jwks_uri: None,
                    exact: provider != Provider::Entra,
                },
                (None, Some(issuer), _) => Target::Discover {
                    issuer,
                    jwks_uri: None,
                    // Entra's multi-tenant metadata has a `{tenantid}` template as issuer.
                    exact: proxy.provider != Provider::Entra,
                },
                (None, None, _) => Target::NotApplicable(
                    "GitHub is not an OpenID provider; its endpoints are fixed",
                ),
            }
        }
        _ => Target::NotApplicable("the spec has no issuer"),
    }
}

/// An HTTP client for issuer checks with a total timeout per request.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .expect("the HTTP client builds")
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let res = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", short(&e)))?;
    if !res.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", res.status().as_u16()));
    }
    res.json()
        .await
        .map_err(|e| format!("GET {url}: not JSON ({})", short(&e)))
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.to_string()
    }
}

/// Discovery URLs for an issuer, OpenID Connect first, then RFC 8414 (path inserted).
pub fn discovery_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    if let Ok(url) = url::Url::parse(issuer) {
        let origin = url.origin().ascii_serialization();
        let path = url.path().trim_end_matches('/');
        urls.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
    }
    urls
}

/// Runs the check and reports it as the `IssuerReachable` condition.
pub async fn check(client: &reqwest::Client, target: &Target) -> Observed {
    match target {
        Target::NotApplicable(why) => Observed::unknown(ISSUER_REACHABLE, "NotApplicable", *why),
        Target::Discover {
            issuer,
            jwks_uri,
            exact,
        } => match discover(client, issuer, jwks_uri.as_deref(), *exact).await {
            Ok(keys) => Observed::yes(
                ISSUER_REACHABLE,
                "Reachable",
                format!("{issuer} answered; its JWKS has {keys} key(s)"),
            ),
            Err((reason, message)) => Observed::no(ISSUER_REACHABLE, reason, message),
        },
    }
}

async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    jwks_uri: Option<&str>,
    exact: bool,
) -> Result<usize, (&'static str, String)> {
    let jwks_uri = match jwks_uri {
        Some(uri) => uri.to_owned(),
        None => {
            let mut errors = Vec::new();
            let mut found = None;
            for url in discovery_urls(issuer) {
                match get_json(client, &url).await {
                    Ok(meta) => {
                        found = Some(meta);
                        break;
                    }
                    Err(e) => errors.push(e),
                }
            }
            let meta = found.ok_or_else(|| ("DiscoveryFailed", errors.join("; ")))?;
            if exact && meta["issuer"].as_str() != Some(issuer) {
                return Err((
                    "IssuerMismatch",
                    format!(
                        "metadata says issuer {}, the policy says {issuer:?} (they must be equal, \
                         including any trailing slash)",
                        meta["issuer"]
                    ),
                ));
            }
            meta["jwks_uri"]
                .as_str()
                .ok_or(("DiscoveryFailed", "metadata has no jwks_uri".to_owned()))?
                .to_owned()
        }
    };
    let jwks = get_json(client, &jwks_uri)
        .await
        .map_err(|e| ("JwksUnreachable", e))?;
    match jwks["keys"].as_array() {
        Some(keys) if !keys.is_empty() => Ok(keys.len()),
        _ => Err(("JwksEmpty", format!("{jwks_uri} has no keys"))),
    }
}

/// Issuer check results shared by every policy naming the same issuer, so a burst of
/// reconciliations (a 100-pod rollout touches the policy 100 times) costs the IdP one discovery
/// and one JWKS request per `ok_ttl`. A failure is kept for `error_ttl` only, shorter than the
/// 30 s retry of a policy whose issuer is down.
pub struct Cache {
    ok_ttl: Duration,
    error_ttl: Duration,
    entries: std::sync::Mutex<std::collections::HashMap<Target, (std::time::Instant, Observed)>>,
}

impl Cache {
    /// A cache keeping answers for `ok_ttl` and failures for `error_ttl`.
    pub fn new(ok_ttl: Duration, error_ttl: Duration) -> Self {
        Self {
            ok_ttl,
            error_ttl,
            entries: Default::default(),
        }
    }

    /// [`check`], answered from the cache while the last result for `target` is fresh.
    pub async fn check(&self, client: &reqwest::Client, target: &Target) -> Observed {
        let fresh = |(at, seen): &(std::time::Instant, Observed)| {
            let ttl = if seen.status == "False" {
                self.error_ttl
            } else {
                self.ok_ttl
            };
            (at.elapsed() < ttl).then(|| seen.clone())
        };
        if let Some(seen) = self.entries().get(target).and_then(fresh) {
            return seen;
        }
        let seen = check(client, target).await;
        let mut entries = self.entries();
        // Forget stale entries of issuers no policy names any more.
        entries.retain(|_, entry| fresh(entry).is_some());
        entries.insert(target.clone(), (std::time::Instant::now(), seen.clone()));
        seen
    }

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Target, (std::time::Instant, Observed)>>
    {
        self.entries.lock().expect("not poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_rfc8414_path_insertion() {
        assert_eq!(
            discovery_urls("https://idp.example.com/tenant/"),
            [
                "https://idp.example.com/tenant/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant",
            ]
        );
    }
}
