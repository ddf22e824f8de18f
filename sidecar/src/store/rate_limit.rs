//! Fixed-window rate limiting on top of [`Store::incr`], shared by all replicas when the store is.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Store, StoreError};

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Under the limit; `remaining` more requests fit in this window.
    Allowed {
        /// Requests left in the current window.
        remaining: u64,
    },
    /// Over the limit until the window ends; answer 429 with `Retry-After: retry_after`.
    Limited {
        /// Whole seconds until the next window, at least 1.
        retry_after: u64,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// At most `limit` requests per `window` for each key (a client id, a peer address).
///
/// Windows are aligned to the Unix epoch, so replicas sharing a store count into the same window
/// (their clocks need only agree to well within a window). The window index is part of the
/// counter key: a new window starts from zero without waiting for the old counter to expire.
#[derive(Clone)]
pub struct RateLimiter {
    store: Arc<dyn Store>,
    limit: u64,
    window: Duration,
}

impl RateLimiter {
    /// A limiter allowing `limit` requests per `window` (whole seconds, at least one).
    pub fn new(store: Arc<dyn Store>, limit: u64, window: Duration) -> Result<Self, StoreError> {
        if window.as_secs() == 0 || window.subsec_nanos() != 0 {
            return Err(StoreError::Invalid(format!(
                "rate limit window must be a whole number of seconds, got {window:?}"
            )));
        }
        Ok(RateLimiter {
            store,
            limit,
            window,
        })
    }

    /// Counts one request for `key` (already namespaced, see [`super::key`]) and decides.
    /// A store failure is returned as is: the caller answers 503, it neither lets the request
    /// through unlimited nor turns it away as over the limit.
    pub async fn check(&self, key: &str) -> Result<Decision, StoreError> {
        self.check_at(key, SystemTime::now()).await
    }

    /// [`RateLimiter::check`] at a given time.
    pub async fn check_at(&self, key: &str, now: SystemTime) -> Result<Decision, StoreError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let window = self.window.as_secs();
        let index = now / window;
        let count = self
            .store
            .incr(&format!("{key}:w{index}"), self.window)
            .await?;
        if count <= self.limit {
            Ok(Decision::Allowed {
                remaining: self.limit - count,
            })
        } else {
            Ok(Decision::Limited {
                retry_after: ((index + 1) * window - now).max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn limits_per_key_and_window() {
        let limiter = RateLimiter::new(MemoryStore::new(100), 3, Duration::from_secs(60)).unwrap();
        let t = 1_700_000_080; // 40 s into a minute window
        for remaining in [2, 1, 0] {
            assert_eq!(
                limiter.check_at("rl:a", at(t)).await.unwrap(),
                Decision::Allowed { remaining }
            );
        }
        assert_eq!(
            limiter.check_at("rl:a", at(t + 5)).await.unwrap(),
            Decision::Limited { retry_after: 15 }
        );
        assert!(
            limiter.check_at("rl:b", at(t)).await.unwrap().is_allowed(),
            "keys are independent"
        );
        assert_eq!(
            limiter.check_at("rl:a", at(t + 20)).await.unwrap(),
            Decision::Allowed { remaining: 2 },
            "the next window starts from zero"
        );
    }

    #[tokio::test]
    async fn zero_limit_refuses_everything() {
        let limiter = RateLimiter::new(MemoryStore::new(100), 0, Duration::from_secs(10)).unwrap();
        assert_eq!(
            limiter.check_at("k", at(100)).await.unwrap(),
            Decision::Limited { retry_after: 10 }
        );
    }

    #[test]
    fn rejects_sub_second_windows() {
        for w in [Duration::ZERO, Duration::from_millis(1500)] {
            assert!(matches!(
                RateLimiter::new(MemoryStore::new(1), 1, w),
                Err(StoreError::Invalid(_))
            ));
        }
    }
}
