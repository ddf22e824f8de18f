//! OAuth proxy metric families. Label values are bounded enums: never client ids or subjects.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label enums exported in snake_case (`invalid_grant`, `authorization_code`).
macro_rules! snake_labels {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[allow(missing_docs)]
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The exported label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

snake_labels! {
    /// Outcome of an OAuth operation.
    OpResult {
        Success => "success",
        InvalidRequest => "invalid_request",
        InvalidClient => "invalid_client",
        InvalidGrant => "invalid_grant",
        InvalidTarget => "invalid_target",
        InvalidScope => "invalid_scope",
        InvalidRedirectUri => "invalid_redirect_uri",
        InvalidClientMetadata => "invalid_client_metadata",
        UnsupportedGrantType => "unsupported_grant_type",
        AccessDenied => "access_denied",
        UpstreamError => "upstream_error",
        RateLimited => "rate_limited",
        Unavailable => "unavailable",
    }
}

snake_labels! {
    /// A consent decision.
    Decision {
        Approved => "approved",
        Denied => "denied",
        Remembered => "remembered",
        CsrfFailed => "csrf_failed",
    }
}

snake_labels! {
    /// Why a sign-in was refused.
    DenyReason {
        NotAllowed => "not_allowed",
        OtherBrowser => "other_browser",
    }
}

snake_labels! {
    /// Why a session (refresh-token family) was revoked.
    RevokeReason {
        Revoke => "revoke",
        RefreshReuse => "refresh_reuse",
        NotAllowed => "not_allowed",
        UpstreamEnded => "upstream_ended",
    }
}

snake_labels! {
    /// Where the upstream token sent to the app came from, or why none was.
    UpstreamTokenResult {
        Cached => "cached",
        Loaded => "loaded",
        Renewed => "renewed",
        SessionEnded => "session_ended",
        Unavailable => "unavailable",
    }
}

snake_labels! {
    /// Grant types of the token endpoint.
    GrantType {
        AuthorizationCode => "authorization_code",
        RefreshToken => "refresh_token",
        Other => "other",
    }
}

/// `{result}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Outcome.
    pub result: OpResult,
}

/// `{decision}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// What the user (or the remembered approval) decided.
    pub decision: Decision,
}

/// `{policy,reason}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    /// The policy's name.
    pub policy: String,
    /// Why.
    pub reason: DenyReason,
}

/// `{reason}` labels of revoked sessions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevokeLabels {
    /// Why.
    pub reason: RevokeReason,
}

/// `{result}` labels of upstream tokens sent to the app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamTokenLabels {
    /// Outcome.
    pub result: UpstreamTokenResult,
}

/// Seconds from a revocation on one replica to its arrival in another replica's deny set.
#[derive(Clone)]
pub struct Propagation(pub Histogram);

impl Default for Propagation {
    fn default() -> Self {
        // 5 ms .. ~40 s.
        Propagation(Histogram::new(crate::metrics::doubling_buckets(0.005, 14)))
    }
}

/// `{grant_type,result}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// Grant type.
    pub grant_type: GrantType,
    /// Outcome.
    pub result: OpResult,
}

/// The families, registered at start-up.
#[derive(Clone, Default)]
pub struct OAuthMetrics {
    /// `/register` and client ID metadata document resolutions.
    pub registrations: Family<ResultLabels, Counter>,
    /// `/authorize` requests and their end at `/callback`.
    pub authorizations: Family<ResultLabels, Counter>,
    /// Consent decisions.
    pub consents: Family<DecisionLabels, Counter>,
    /// `/token` grants.
    pub grants: Family<GrantLabels, Counter>,
    /// Refresh-token reuse detections (each revokes a family).
    pub refresh_reuse: Counter,
    /// Sign-ins refused by `access` or the browser binding, and refreshes of users no longer
    /// allowed.
    pub access_denied: Family<DenyLabels, Counter>,
    /// `/revoke` calls.
    pub revocations: Family<ResultLabels, Counter>,
    /// Sessions revoked, by reason (their access tokens refused on every replica).
    pub sessions_revoked: Family<RevokeLabels, Counter>,
    /// Revocation propagation delay to this replica.
    pub revocation_propagation: Propagation,
    /// 1 while this replica cannot read the revocation log and refuses proxy-issued tokens.
    pub revocation_sync_stale: Gauge,
    /// Upstream tokens for `forward.upstreamTokenHeader`, by where they came from.
    pub upstream_tokens: Family<UpstreamTokenLabels, Counter>,
}

impl OAuthMetrics {
    /// Creates and registers the families under `mcp_warden_oauth_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = OAuthMetrics::default();
        let r = registry.sub_registry_with_prefix("mcp_warden_oauth");
        r.register(
            "registrations",
            "Client registrations by result",
            m.registrations.clone(),
        );
        r.register(
            "authorizations",
            "Authorization requests by result",
            m.authorizations.clone(),
        );
        r.register("consents", "Consent decisions", m.consents.clone());
        r.register(
            "token_grants",
            "Token endpoint grants by grant type and result",
            m.grants.clone(),
        );
        r.register(
            "refresh_reuse",
            "Refresh-token reuse detections (family revoked)",
            m.refresh_reuse.clone(),
        );
        r.register(
            "access_denied",
            "Sign-ins refused by the access rules or the browser binding",
            m.access_denied.clone(),
        );
        r.register(
            "revocations",
            "Revocation requests by result",
            m.revocations.clone(),
        );
        r.register(
            "sessions_revoked",
            "Sessions revoked by reason; their access tokens are refused on every replica",
            m.sessions_revoked.clone(),
        );
        r.register(
            "revocation_propagation_seconds",
            "Delay from a revocation on another replica to this replica refusing its tokens",
            m.revocation_propagation.0.clone(),
        );
        r.register(
            "revocation_sync_stale",
            "1 while the revocation log has been unreadable too long and proxy-issued tokens get 503",
            m.revocation_sync_stale.clone(),
        );
        r.register(
            "upstream_tokens",
            "Upstream tokens set in forward.upstreamTokenHeader, by source (cached, loaded, renewed) or refusal",
            m.upstream_tokens.clone(),
        );
        for result in [
            UpstreamTokenResult::Cached,
            UpstreamTokenResult::Loaded,
            UpstreamTokenResult::Renewed,
        ] {
            let _ = m
                .upstream_tokens
                .get_or_create(&UpstreamTokenLabels { result });
        }
        for reason in [
            RevokeReason::Revoke,
            RevokeReason::RefreshReuse,
            RevokeReason::NotAllowed,
            RevokeReason::UpstreamEnded,
        ] {
            let _ = m.sessions_revoked.get_or_create(&RevokeLabels { reason });
        }
        // Zero samples for the common outcomes, so dashboards and alerts see the series before
        // the first event.
        let _ = m.registrations.get_or_create(&ResultLabels {
            result: OpResult::Success,
        });
        let _ = m.authorizations.get_or_create(&ResultLabels {
            result: OpResult::Success,
        });
        for decision in [Decision::Approved, Decision::Denied] {
            let _ = m.consents.get_or_create(&DecisionLabels { decision });
        }
        for grant_type in [GrantType::AuthorizationCode, GrantType::RefreshToken] {
            let _ = m.grants.get_or_create(&GrantLabels {
                grant_type,
                result: OpResult::Success,
            });
        }
        let _ = m.revocations.get_or_create(&ResultLabels {
            result: OpResult::Success,
        });
        m
    }

    /// Counts a registration.
    pub fn registration(&self, result: OpResult) {
        self.registrations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an authorization outcome.
    pub fn authorization(&self, result: OpResult) {
        self.authorizations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a consent decision.
    pub fn consent(&self, decision: Decision) {
        self.consents
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// Counts a token grant.
    pub fn grant(&self, grant_type: GrantType, result: OpResult) {
        self.grants
            .get_or_create(&GrantLabels { grant_type, result })
            .inc();
    }

    /// Counts a refused sign-in.
    pub fn access_denied(&self, policy: &str, reason: DenyReason) {
        self.access_denied
            .get_or_create(&DenyLabels {
                policy: policy.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts an upstream token sent to the app, or a refusal for lack of one.
    pub fn upstream_token(&self, result: UpstreamTokenResult) {
        self.upstream_tokens
            .get_or_create(&UpstreamTokenLabels { result })
            .inc();
    }

    /// Counts a revoked session.
    pub fn session_revoked(&self, reason: RevokeReason) {
        self.sessions_revoked
            .get_or_create(&RevokeLabels { reason })
            .inc();
    }

    /// Counts a revocation.
    pub fn revocation(&self, result: OpResult) {
        self.revocations
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}
