//! Fetches and caches an issuer's signing keys.
//!
//! Keys are found from `jwksUri` or by discovery, refreshed in the background, and refetched
//! when a token names an unknown `kid` (at most once per [`REFETCH_INTERVAL`], so a flood of
//! tokens with made-up `kid`s cannot turn the sidecar into a load generator against the IdP).
//! A failed fetch never discards keys: the last good set keeps serving through an IdP outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use url::Url;

use crate::keys::KeySet;
use crate::metrics::{FetchResult, Metrics};

/// Minimum time between two fetches triggered by unknown `kid`s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Regular refresh period while keys are known.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT: usize = 512 * 1024;

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Network failure, timeout or non-success status.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The document was not what it should be.
    #[error("{url}: {message}")]
    Invalid {
        /// What was fetched.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Where the keys come from, and the keys last fetched.
pub struct JwksSource {
    policy: String,
    issuer: String,
    configured_jwks_uri: Option<String>,
    allow_http: bool,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    fetched_once: std::sync::atomic::AtomicBool,
    /// When the last refetch for an unknown `kid` started.
    last_kid_refetch: Mutex<Option<Instant>>,
    metrics: Metrics,
}

impl JwksSource {
    /// A source for `issuer`; nothing is fetched until [`JwksSource::refresh`].
    pub fn new(
        policy: &str,
        issuer: &str,
        jwks_uri: Option<&str>,
        allow_http: bool,
        client: reqwest::Client,
        metrics: Metrics,
    ) -> Self {
        JwksSource {
            policy: policy.to_owned(),
            issuer: issuer.to_owned(),
            configured_jwks_uri: jwks_uri.map(str::to_owned),
            allow_http,
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetched_once: Default::default(),
            last_kid_refetch: Mutex::new(None),
            metrics,
        }
    }

    /// The current keys (possibly empty before the first successful fetch).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// The generation of the current keys (changes when their content does).
    pub fn generation(&self) -> u64 {
        self.keys.load().generation()
    }

    /// Whether keys have been fetched successfully at least once.
    pub fn ready(&self) -> bool {
        self.fetched_once.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the keys now and swaps them in; on failure the old keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> Result<usize, JwksError> {
        let result = self.fetch().await;
        match &result {
            Ok(set) => {
                self.metrics.jwks(&self.policy, FetchResult::Success);
                // Compare-and-swap, so two fetches racing cannot both claim one generation.
                self.keys.rcu(|previous| {
                    let mut next = set.clone();
                    next.succeed(previous);
                    next
                });
                self.fetched_once
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                self.metrics.jwks(&self.policy, FetchResult::Error);
                tracing::warn!(policy = %self.policy, error = %e, "JWKS fetch failed; keeping the last good keys");
            }
        }
        result.map(|s| s.len())
    }

    /// Called when a token names a `kid` we do not know. Refetches unless another unknown-`kid`
    /// refetch happened in the last [`REFETCH_INTERVAL`] (scheduled refreshes do not count, so a
    /// rotation right after start-up is still picked up); concurrent callers share one fetch.
    /// Returns the keys to use.
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> Arc<KeySet> {
        let mut last = self.last_kid_refetch.lock().await;
        // Another caller may have fetched while we waited for the lock.
        if self.keys.load().has_kid(kid) {
            return self.keys();
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return self.keys();
        }
        *last = Some(Instant::now());
        let _ = self.fetch_and_swap().await;
        self.keys()
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let uri = match &self.configured_jwks_uri {
            Some(uri) => uri.clone(),
            None => self.discover().await?,
        };
        self.check_url(&uri)?;
        let body = self.get(&uri).await?;
        let (set, skipped) = KeySet::from_json(&body).map_err(|message| JwksError::Invalid {
            url: uri.clone(),
            message,
        })?;
        if set.is_empty() {
            return Err(JwksError::Invalid {
                url: uri,
                message: "no usable signing key".into(),
            });
        }
        if skipped > 0 {
            tracing::debug!(policy = %self.policy, skipped, "ignored JWKS entries that cannot verify signatures");
        }
        Ok(set)
    }

    fn check_url(&self, raw: &str) -> Result<(), JwksError> {
        let url = Url::parse(raw).map_err(|e| JwksError::Invalid {
            url: raw.into(),
            message: e.to_string(),
        })?;
        let ok = url.scheme() == "https"
            || (url.scheme() == "http"
                && (self.allow_http || mcp_warden_policy::is_loopback_host(&url)));
        if ok {
            Ok(())
        } else {
            Err(JwksError::Invalid {
                url: raw.into(),
                message: "keys must be fetched over https".into(),
            })
        }
    }

    /// OpenID Connect discovery, then RFC 8414 (path-inserted and path-appended forms).
    async fn discover(&self) -> Result<String, JwksError> {
        let issuer = self.issuer.trim_end_matches('/');
        let parsed = Url::parse(issuer).map_err(|e| JwksError::Invalid {
            url: issuer.into(),
            message: e.to_string(),
        })?;
        let origin = parsed.origin().ascii_serialization();
        let path = parsed.path().trim_end_matches('/');
        let candidates = [
            format!("{issuer}/.well-known/openid-configuration"),
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
        ];
        let mut last_error = None;
        for url in candidates {
            match self.get(&url).await {
                Ok(body) => {
                    #[derive(serde::Deserialize)]
                    struct Meta {
                        issuer: String,
                        jwks_uri: Option<String>,
                    }
                    let meta: Meta =
                        serde_json::from_slice(&body).map_err(|e| JwksError::Invalid {
                            url: url.clone(),
                            message: format!("bad metadata: {e}"),
                        })?;
                    if meta.issuer != self.issuer {
                        return Err(JwksError::Invalid {
                            url,
                            message: format!(
                                "metadata issuer {:?} is not the configured {:?}",
                                meta.issuer, self.issuer
                            ),
                        });
                    }
                    return meta.jwks_uri.ok_or(JwksError::Invalid {
                        url,
                        message: "metadata has no jwks_uri".into(),
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one candidate"))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let fail = |message: String| JwksError::Fetch {
            url: url.to_owned(),
            message,
        };
        let fetch = async {
            let mut response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !response.status().is_success() {
                return Err(fail(format!("status {}", response.status())));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
                if body.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(fail(format!("document larger than {MAX_DOCUMENT} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        let attributes = || vec![opentelemetry::KeyValue::new("url.full", url.to_owned())];
        crate::telemetry::client("jwks fetch", attributes, fetch).await
    }

    /// Keeps the keys fresh: every [`REFRESH_PERIOD`] while healthy, backing off from 1 s up to
    /// 60 s while no key has ever been fetched.
    pub async fn run_refresh_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        // Keys fetched at start-up (or by the reload's warm-up) are fresh: wait a period first.
        if self.ready() {
            tokio::time::sleep(REFRESH_PERIOD).await;
        }
        loop {
            let ok = self.refresh().await.is_ok();
            let wait = if ok {
                backoff = Duration::from_secs(1);
                REFRESH_PERIOD
            } else if self.ready() {
                Duration::from_secs(30)
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(60));
                backoff
            };
            tokio::time::sleep(wait).await;
        }
    }
}
