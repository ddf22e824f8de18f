//! The caller's upstream access token for the app (`forward.upstreamTokenHeader`), so a tool can
//! call the identity provider's API as the signed-in user.
//!
//! The token is the provider's access token of the caller's session (the refresh-token family
//! named by the access token's `sid`), kept encrypted in the family record. A bounded in-memory
//! cache keyed by the session holds it while it is fresh, so the request path reads the store
//! and decrypts only on a miss. Near expiry it is renewed upstream by one replica at a time (the
//! family's renewal lock, as for refresh grants) and written back into the family record.
//! A revoked session's entry is dropped and never used again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderValue;

use super::metrics::UpstreamTokenResult;
use super::records::Family;
use super::refresh::{UPSTREAM_LOCK, UPSTREAM_MARGIN_SECONDS};
use super::revocation::Status;
use super::{OAuthProxy, Reject, now};
use crate::store::StoreError;

/// Most sessions whose upstream token is cached.
const CACHE_CAPACITY: usize = 10_000;
/// Longest a cached token is used before the family record is read again (a token without an
/// expiry, or one renewed by a refresh grant on another replica).
const CACHE_SECONDS: u64 = 300;
/// How long a request waits for another replica's renewal before answering 503.
const RENEWAL_WAIT: Duration = Duration::from_secs(5);

/// Why no upstream token can be sent with a request.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTokenError {
    /// The session has ended (revoked, expired, or the provider ended the grant).
    #[error("the session has ended")]
    SessionEnded,
    /// The store or the provider cannot be reached right now.
    #[error("the upstream token is not available right now")]
    Unavailable {
        /// Seconds to wait.
        retry_after: u64,
    },
}

impl From<StoreError> for UpstreamTokenError {
    fn from(e: StoreError) -> Self {
        UpstreamTokenError::Unavailable {
            retry_after: e.retry_after(),
        }
    }
}

impl From<Reject> for UpstreamTokenError {
    fn from(e: Reject) -> Self {
        match e {
            Reject::Unavailable { retry_after } => UpstreamTokenError::Unavailable { retry_after },
            _ => UpstreamTokenError::SessionEnded,
        }
    }
}

/// Upstream tokens by session, while fresh.
#[derive(Default)]
pub struct UpstreamTokenCache {
    map: Mutex<HashMap<Box<str>, Cached>>,
}

struct Cached {
    value: HeaderValue,
    /// Unix seconds after which the family record is read again.
    fresh_until: u64,
}

impl UpstreamTokenCache {
    fn get(&self, sid: &str) -> Option<HeaderValue> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(sid)
            .filter(|c| c.fresh_until > now())
            .map(|c| c.value.clone())
    }

    fn put(&self, sid: &str, value: HeaderValue, fresh_until: u64) {
        let now = now();
        if fresh_until <= now {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_CAPACITY {
            map.retain(|_, c| c.fresh_until > now);
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert(sid.into(), Cached { value, fresh_until });
    }

    fn forget(&self, sid: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid);
    }
}

impl OAuthProxy {
    /// The upstream access token of session `sid`, as a (sensitive) header value.
    pub async fn upstream_token(&self, sid: &str) -> Result<HeaderValue, UpstreamTokenError> {
        let mut renewed = false;
        let result = self.upstream_token_inner(sid, &mut renewed).await;
        self.metrics.upstream_token(match &result {
            Ok(_) if renewed => UpstreamTokenResult::Renewed,
            Ok((_, true)) => UpstreamTokenResult::Cached,
            Ok(_) => UpstreamTokenResult::Loaded,
            Err(UpstreamTokenError::SessionEnded) => UpstreamTokenResult::SessionEnded,
            Err(UpstreamTokenError::Unavailable { .. }) => UpstreamTokenResult::Unavailable,
        });
        result.map(|(value, _)| value)
    }

    /// The token and whether it came from the cache; `renewed` is set when it was renewed.
    async fn upstream_token_inner(
        &self,
        sid: &str,
        renewed: &mut bool,
    ) -> Result<(HeaderValue, bool), UpstreamTokenError> {
        if self.revocations.status(sid) == Status::Revoked {
            self.upstream_cache.forget(sid);
            return Err(UpstreamTokenError::SessionEnded);
        }
        if let Some(hit) = self.upstream_cache.get(sid) {
            return Ok((hit, true));
        }
        let started = tokio::time::Instant::now();
        loop {
            let family: Family = self
                .get_json("family", sid)
                .await?
                .ok_or(UpstreamTokenError::SessionEnded)?;
            let (tokens, renew) = self.upstream_tokens(sid, &family)?;
            if !renew {
                let mut value = HeaderValue::from_str(&tokens.access_token)
                    .map_err(|_| UpstreamTokenError::SessionEnded)?;
                value.set_sensitive(true);
                let fresh_until = tokens.expires_at.map_or(now() + CACHE_SECONDS, |exp| {
                    // Renewable tokens are renewed `UPSTREAM_MARGIN_SECONDS` early.
                    let margin = if tokens.refresh_token.is_some() {
                        UPSTREAM_MARGIN_SECONDS
                    } else {
                        0
                    };
                    exp.saturating_sub(margin).min(now() + CACHE_SECONDS)
                });
                self.upstream_cache.put(sid, value.clone(), fresh_until);
                return Ok((value, false));
            }
            let lock = self.key("uplock", sid);
            if self.store.put_if_absent(&lock, b"1", UPSTREAM_LOCK).await? {
                let renewed_now = self.renew_into_family(sid, &family).await;
                self.store.delete(&lock).await?;
                renewed_now?;
                *renewed = true;
                continue; // read the renewed tokens back
            }
            // Another request (here or on another replica) is renewing: wait for it.
            if started.elapsed() >= RENEWAL_WAIT {
                return Err(UpstreamTokenError::Unavailable { retry_after: 1 });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Renews the family's upstream tokens and writes them into the family record (holding the
    /// renewal lock), retrying when a concurrent refresh grant rotated the record meanwhile.
    async fn renew_into_family(
        &self,
        sid: &str,
        family: &Family,
    ) -> Result<(), UpstreamTokenError> {
        let sealed = self.refresh_upstream(sid, family).await?;
        let key = self.key("family", sid);
        for _ in 0..10 {
            let Some(raw) = self.store.get(&key).await? else {
                return Err(UpstreamTokenError::SessionEnded);
            };
            let mut next: Family = serde_json::from_slice(&raw)
                .map_err(|e| StoreError::Corrupt(format!("family: {e}")))?;
            next.upstream = sealed.clone();
            let bytes = serde_json::to_vec(&next).expect("records serialise");
            if self
                .store
                .compare_and_swap(&key, &raw, &bytes, self.family_ttl(&next))
                .await?
            {
                return Ok(());
            }
        }
        Err(UpstreamTokenError::Unavailable { retry_after: 1 })
    }
}
