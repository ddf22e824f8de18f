//! Refresh-token rotation with reuse detection, upstream refresh, and family revocation.
//!
//! A refresh token is `<family>.<secret>`; the family record holds the hash of the one valid
//! secret. Each use swaps in a new hash with compare-and-swap, so of concurrent refreshes across
//! replicas exactly one rotates. The others, arriving within [`REFRESH_GRACE_SECONDS`] with the
//! token just replaced, get the winner's new token (sealed in the record), so a client racing
//! itself is not logged out. An older token presented later is reuse: the family is revoked.

use std::time::Duration;

use super::crypto::{constant_time_eq, random_token, sha256_b64};
use super::metrics::RevokeReason;
use super::provider::{UpstreamTokens, send};
use super::records::{ClientRecord, Family};
use super::revocation::TOKEN_LEEWAY_SECONDS;
use super::token::{TokenForm, family_of, invalid_grant};
use super::{OAuthProxy, REFRESH_GRACE_SECONDS, Reject, now};

/// Earlier refresh-token hashes remembered per family for reuse detection.
const REMEMBERED_ROTATIONS: usize = 32;
/// Upstream tokens this close to expiry are renewed.
pub(super) const UPSTREAM_MARGIN_SECONDS: u64 = 30;
/// Longest hold of the per-family upstream renewal lock.
pub(super) const UPSTREAM_LOCK: Duration = Duration::from_secs(15);

impl OAuthProxy {
    /// A refresh grant for `client`; `read` is the family record when the caller has read it
    /// already (`Some`, in the round trip that counted the request).
    pub(super) async fn refresh_grant(
        &self,
        client: &ClientRecord,
        form: &TokenForm,
        mut read: Option<Option<Vec<u8>>>,
    ) -> Result<serde_json::Value, Reject> {
        let presented = form
            .refresh_token
            .as_deref()
            .ok_or_else(|| Reject::bad("invalid_request", "refresh_token is required"))?;
        let (family_id, secret) =
            family_of(presented).ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
        let key = self.key("family", family_id);
        let lock = self.key("uplock", family_id);
        let hash = sha256_b64(secret.as_bytes());
        for _ in 0..50 {
            let stored = match read.take() {
                Some(value) => value,
                None => self.store.get(&key).await?,
            };
            let raw = stored
                .ok_or_else(|| invalid_grant("the refresh token is invalid, expired or revoked"))?;
            let family: Family = serde_json::from_slice(&raw)
                .map_err(|e| Reject::from(crate::store::StoreError::Corrupt(e.to_string())))?;
            if family.client_id != client.client_id {
                return Err(invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            if constant_time_eq(hash.as_bytes(), family.current.as_bytes()) {
                // The current policy decides, with the facts from sign-in: a user no longer
                // allowed loses the session, a scope no longer granted is dropped.
                if !self.access.allows(&family.identity) {
                    self.refuse(
                        super::metrics::DenyReason::NotAllowed,
                        &family.client_id,
                        Some(&family.identity.subject),
                    );
                    self.revoke_family(family_id, &family, RevokeReason::NotAllowed)
                        .await?;
                    return Err(invalid_grant(
                        "this account is no longer allowed to use the server",
                    ));
                }
                let mut next = family.clone();
                next.scopes = self.access.grant(&family.scopes, &family.identity);
                // An expired upstream token is renewed before rotating, by one replica at a
                // time (providers that rotate refresh tokens would revoke a racing loser's),
                // so a failed upstream call leaves the client's token valid for a retry.
                let upstream_expired = self.upstream_tokens(family_id, &family)?.1;
                if upstream_expired {
                    if !self.store.put_if_absent(&lock, b"1", UPSTREAM_LOCK).await? {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue; // another request is renewing it; then we are its duplicate
                    }
                    let renewed = self.refresh_upstream(family_id, &family).await;
                    if renewed.is_err() {
                        self.store.delete(&lock).await?;
                    }
                    next.upstream = renewed?;
                }
                let new_secret = random_token(32);
                let refresh = format!("{family_id}.{new_secret}");
                next.previous.push(family.current.clone());
                if next.previous.len() > REMEMBERED_ROTATIONS {
                    next.previous.remove(0);
                }
                next.current = sha256_b64(new_secret.as_bytes());
                next.rotated_at = now();
                next.grace_token = Some(
                    self.enc
                        .seal(&format!("grace:{family_id}"), refresh.as_bytes()),
                );
                let new_bytes = serde_json::to_vec(&next).expect("records serialise");
                let swapped = self
                    .store
                    .compare_and_swap(&key, &raw, &new_bytes, self.family_ttl(&next))
                    .await;
                if upstream_expired {
                    self.store.delete(&lock).await?;
                }
                if swapped? {
                    return Ok(self.token_response(family_id, &next, &refresh));
                }
                continue; // lost a race: re-read and treat as a duplicate
            }
            let last = family
                .previous
                .last()
                .is_some_and(|p| constant_time_eq(hash.as_bytes(), p.as_bytes()));
            if last && now().saturating_sub(family.rotated_at) <= REFRESH_GRACE_SECONDS {
                let token = family
                    .grace_token
                    .as_deref()
                    .and_then(|g| self.enc.open(&format!("grace:{family_id}"), g))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
                return Ok(self.token_response(family_id, &family, &token));
            }
            if family
                .previous
                .iter()
                .any(|p| constant_time_eq(hash.as_bytes(), p.as_bytes()))
            {
                tracing::warn!(client_id = %family.client_id, "refresh token reuse detected; revoking the token family");
                self.metrics.refresh_reuse.inc();
                self.revoke_family(family_id, &family, RevokeReason::RefreshReuse)
                    .await?;
                return Err(invalid_grant(
                    "the refresh token was already used; the session is revoked",
                ));
            }
            return Err(invalid_grant("the refresh token is invalid"));
        }
        Err(Reject::Unavailable { retry_after: 1 })
    }

    /// The family's upstream tokens and whether they need renewing (expired or about to,
    /// and renewable).
    pub(super) fn upstream_tokens(
        &self,
        family_id: &str,
        family: &Family,
    ) -> Result<(UpstreamTokens, bool), Reject> {
        let tokens: UpstreamTokens = self
            .enc
            .open(&format!("family:{family_id}"), &family.upstream)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid_grant("the session cannot be read"))?;
        let expired = tokens.refresh_token.is_some()
            && tokens
                .expires_at
                .is_some_and(|exp| exp <= now() + UPSTREAM_MARGIN_SECONDS);
        Ok((tokens, expired))
    }

    /// Renews the upstream tokens with the upstream refresh token; returns them sealed for the
    /// family record. A dead upstream grant ends the family (the user signs in again).
    pub(super) async fn refresh_upstream(
        &self,
        family_id: &str,
        family: &Family,
    ) -> Result<String, Reject> {
        let (tokens, _) = self.upstream_tokens(family_id, family)?;
        let upstream_refresh = tokens.refresh_token.clone().unwrap_or_default();
        let upstream = self
            .upstream()
            .await
            .map_err(|_| Reject::Unavailable { retry_after: 5 })?;
        let call = upstream.refresh_request(&upstream_refresh, &family.resource);
        let fresh = match send(&self.http, &call)
            .await
            .and_then(|(s, b)| upstream.parse_tokens(s, &b))
        {
            Ok(t) => t,
            Err(e) if e.is_invalid_grant() => {
                self.end_session(family_id, RevokeReason::UpstreamEnded)
                    .await?;
                return Err(invalid_grant(
                    "the identity provider ended the session; sign in again",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream refresh failed");
                return Err(Reject::Unavailable { retry_after: 5 });
            }
        };
        let merged = UpstreamTokens {
            refresh_token: fresh.refresh_token.clone().or(tokens.refresh_token),
            ..fresh
        };
        Ok(self.enc.seal(
            &format!("family:{family_id}"),
            &serde_json::to_vec(&merged).expect("tokens serialise"),
        ))
    }

    /// Ends a session: its access tokens are refused on every replica (see `revocation.rs`),
    /// then its family is deleted.
    pub(super) async fn end_session(
        &self,
        family_id: &str,
        reason: RevokeReason,
    ) -> Result<(), Reject> {
        let lifetime = Duration::from_secs(
            u64::from(self.spec.access_token_ttl_seconds) + TOKEN_LEEWAY_SECONDS,
        );
        self.revocations
            .revoke(
                &*self.store,
                &self.key("revoked", "log"),
                family_id,
                lifetime,
                reason,
            )
            .await?;
        self.store.delete(&self.key("family", family_id)).await?;
        Ok(())
    }

    /// Ends a session ([`OAuthProxy::end_session`]) and revokes its upstream refresh token
    /// (never our own token) when the provider has a revocation endpoint.
    pub(super) async fn revoke_family(
        &self,
        family_id: &str,
        family: &Family,
        reason: RevokeReason,
    ) -> Result<(), Reject> {
        self.end_session(family_id, reason).await?;
        let tokens: Option<UpstreamTokens> = self
            .enc
            .open(&format!("family:{family_id}"), &family.upstream)
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let (Some(tokens), Ok(upstream)) = (tokens, self.upstream().await) {
            let (token, hint) = match &tokens.refresh_token {
                Some(rt) => (rt.as_str(), "refresh_token"),
                None => (tokens.access_token.as_str(), "access_token"),
            };
            if let Some(call) = upstream.revoke_request(token, hint)
                && let Err(e) = send(&self.http, &call).await
            {
                tracing::warn!(error = %e, "upstream revocation failed");
            }
        }
        Ok(())
    }
}
