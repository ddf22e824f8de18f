//! The sidecar's Prometheus metrics. One registry is built in `main` and every component registers
//! its own families; label values come from bounded enums only (never subjects or client ids).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

mod sharded;

use sharded::Shard;
pub use sharded::{ShardedCounter, ShardedHistogram};

/// Defines a label enum whose values are exported in snake_case.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[allow(missing_docs)]
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order (`value as usize` indexes it).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

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

label_enum! {
    /// What happened to a request on the public port.
    Outcome {
        Allowed => "allowed",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        BadRequest => "bad_request",
        UpstreamError => "upstream_error",
        Metadata => "metadata",
        Preflight => "preflight",
    }
}

label_enum! {
    /// Why, in a bounded set.
    Reason {
        None => "none",
        MissingToken => "missing_token",
        Malformed => "malformed",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        BadSignature => "bad_signature",
        WrongIssuer => "wrong_issuer",
        WrongAudience => "wrong_audience",
        UnknownKid => "unknown_kid",
        DisallowedAlg => "disallowed_alg",
        WrongType => "wrong_type",
        KeysUnavailable => "keys_unavailable",
        InsufficientScope => "insufficient_scope",
        Origin => "origin",
        InvalidRequest => "invalid_request",
        UpstreamUnavailable => "upstream_unavailable",
        UnforwardableClaim => "unforwardable_claim",
        Revoked => "revoked",
        RevocationUnknown => "revocation_unknown",
        Inactive => "inactive",
        IntrospectionUnavailable => "introspection_unavailable",
    }
}

label_enum! {
    /// Answer of an introspection request.
    IntrospectionResult {
        Active => "active",
        Inactive => "inactive",
        Error => "error",
    }
}

label_enum! {
    /// Result of a fetch or reload.
    FetchResult {
        Success => "success",
        Error => "error",
    }
}

/// Labels of `mcp_warden_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Policy name.
    pub policy: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why.
    pub reason: Reason,
}

/// Labels of `mcp_warden_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Policy name.
    pub policy: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Labels of `mcp_warden_jwks_refresh_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// Policy name.
    pub policy: String,
    /// Whether the fetch worked.
    pub result: FetchResult,
}

/// Labels of `mcp_warden_introspections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntrospectionLabels {
    /// Policy name.
    pub policy: String,
    /// The answer.
    pub result: IntrospectionResult,
}

/// Labels of `mcp_warden_policy_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Whether the new policy was taken.
    pub result: FetchResult,
}

/// Labels of `mcp_warden_tool_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// Policy name.
    pub policy: String,
    /// A tool named in `spec.audit.toolMetrics`, or `other`.
    pub tool: String,
    /// What happened to the request carrying the call.
    pub outcome: Outcome,
}

/// The resource-server metric families.
#[derive(Clone)]
pub struct Metrics {
    /// Requests on the public port.
    pub requests: Family<RequestLabels, ShardedCounter>,
    /// Time from request to response head, including the upstream.
    pub duration: Family<DurationLabels, ShardedHistogram>,
    /// JWKS fetches.
    pub jwks_refresh: Family<JwksLabels, Counter>,
    /// Requests whose token was found in the verified-token cache.
    pub token_cache_hits: ShardedCounter,
    /// Introspection requests (opaque tokens) by answer.
    pub introspections: Family<IntrospectionLabels, Counter>,
    /// Policy file reloads.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Audit lines dropped because the writer fell behind.
    pub audit_dropped: Counter,
    /// `tools/call` messages by tool, for the tools a policy names.
    pub tool_calls: Family<ToolLabels, ShardedCounter>,
}

impl Metrics {
    /// Creates the families and registers them under `mcp_warden_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                ShardedHistogram::new(doubling_buckets(0.0005, 16))
            }),
            jwks_refresh: Family::default(),
            token_cache_hits: ShardedCounter::default(),
            introspections: Family::default(),
            reloads: Family::default(),
            audit_dropped: Counter::default(),
            tool_calls: Family::default(),
        };
        // Both results exist from the start so dashboards and alerts see zeros, not gaps.
        for &result in FetchResult::ALL {
            drop(m.reloads.get_or_create(&ReloadLabels { result }));
        }
        let r = registry.sub_registry_with_prefix("mcp_warden");
        r.register(
            "requests",
            "Requests on the public port by outcome and reason",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the response head, including the upstream",
            m.duration.clone(),
        );
        r.register(
            "jwks_refresh",
            "JWKS fetches by result",
            m.jwks_refresh.clone(),
        );
        r.register(
            "token_cache_hits",
            "Requests served from the verified-token cache",
            m.token_cache_hits.clone(),
        );
        r.register(
            "introspections",
            "Token introspection requests by answer (cache misses only)",
            m.introspections.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy file reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "audit_dropped",
            "Audit lines dropped because the audit queue was full",
            m.audit_dropped.clone(),
        );
        r.register(
            "tool_calls",
            "tools/call messages by tool (spec.audit.toolMetrics, others as \"other\") and outcome",
            m.tool_calls.clone(),
        );
        m
    }

    /// The tool-call series of one policy, for the tools it names.
    pub fn tools_for(&self, policy: &str, tools: &[String]) -> ToolMeters {
        let series = |tool: &str| {
            Outcome::ALL
                .iter()
                .map(|&outcome| {
                    self.tool_calls
                        .get_or_create(&ToolLabels {
                            policy: policy.to_owned(),
                            tool: tool.to_owned(),
                            outcome,
                        })
                        .clone()
                })
                .collect::<Vec<_>>()
        };
        ToolMeters {
            named: tools.iter().map(|t| (t.clone(), series(t))).collect(),
            other: series("other"),
        }
    }

    /// The request series of one policy, created now (so every family is exported before the
    /// first request) and resolved once (so the request path only bumps atomics).
    pub fn for_policy(&self, policy: &str) -> PolicyMeters {
        let mut requests = vec![None; Outcome::ALL.len() * Reason::ALL.len()];
        for &(outcome, reason) in EXPECTED {
            let labels = RequestLabels {
                policy: policy.to_owned(),
                outcome,
                reason,
            };
            requests[slot(outcome, reason)] = Some(self.requests.get_or_create(&labels).clone());
        }
        let duration = Outcome::ALL
            .iter()
            .map(|&outcome| {
                let labels = DurationLabels {
                    policy: policy.to_owned(),
                    outcome,
                };
                self.duration.get_or_create(&labels).clone()
            })
            .collect();
        for &result in FetchResult::ALL {
            drop(self.jwks_refresh.get_or_create(&JwksLabels {
                policy: policy.to_owned(),
                result,
            }));
        }
        PolicyMeters {
            policy: policy.to_owned(),
            families: self.clone(),
            requests,
            duration,
        }
    }

    /// Records one introspection request.
    pub fn introspection(&self, policy: &str, result: IntrospectionResult) {
        self.introspections
            .get_or_create(&IntrospectionLabels {
                policy: policy.to_owned(),
                result,
            })
            .inc();
    }

    /// Records one JWKS fetch.
    pub fn jwks(&self, policy: &str, result: FetchResult) {
        self.jwks_refresh
            .get_or_create(&JwksLabels {
                policy: policy.to_owned(),
                result,
            })
            .inc();
    }
}

/// The (outcome, reason) pairs the public port produces; each starts at zero.
const EXPECTED: &[(Outcome, Reason)] = &[
    (Outcome::Allowed, Reason::None),
    (Outcome::Unauthorized, Reason::MissingToken),
    (Outcome::Unauthorized, Reason::Malformed),
    (Outcome::Unauthorized, Reason::Expired),
    (Outcome::Unauthorized, Reason::NotYetValid),
    (Outcome::Unauthorized, Reason::BadSignature),
    (Outcome::Unauthorized, Reason::WrongIssuer),
    (Outcome::Unauthorized, Reason::WrongAudience),
    (Outcome::Unauthorized, Reason::UnknownKid),
    (Outcome::Unauthorized, Reason::DisallowedAlg),
    (Outcome::Unauthorized, Reason::WrongType),
    (Outcome::Unauthorized, Reason::KeysUnavailable),
    (Outcome::Unauthorized, Reason::Revoked),
    (Outcome::Unauthorized, Reason::RevocationUnknown),
    (Outcome::Forbidden, Reason::InsufficientScope),
    (Outcome::Forbidden, Reason::Origin),
    (Outcome::Forbidden, Reason::UnforwardableClaim),
    (Outcome::BadRequest, Reason::InvalidRequest),
    (Outcome::UpstreamError, Reason::UpstreamUnavailable),
    (Outcome::Metadata, Reason::None),
    (Outcome::Preflight, Reason::None),
];

fn slot(outcome: Outcome, reason: Reason) -> usize {
    outcome as usize * Reason::ALL.len() + reason as usize
}

/// One policy's request series, resolved ahead of time.
pub struct PolicyMeters {
    policy: String,
    families: Metrics,
    requests: Vec<Option<ShardedCounter>>,
    duration: Vec<ShardedHistogram>,
}

impl PolicyMeters {
    /// Records one finished request.
    pub fn observe(&self, outcome: Outcome, reason: Reason, seconds: f64) {
        let shard = Shard::current();
        match &self.requests[slot(outcome, reason)] {
            Some(counter) => counter.inc_at(shard),
            // A pair outside `EXPECTED`: still counted, through the family.
            None => {
                self.families
                    .requests
                    .get_or_create(&RequestLabels {
                        policy: self.policy.clone(),
                        outcome,
                        reason,
                    })
                    .inc();
            }
        }
        self.duration[outcome as usize].observe_at(shard, seconds);
    }
}

/// One policy's tool-call counters, resolved ahead of time.
pub struct ToolMeters {
    named: Vec<(String, Vec<ShardedCounter>)>,
    other: Vec<ShardedCounter>,
}

impl ToolMeters {
    /// Counts one call of `tool`.
    pub fn observe(&self, tool: &str, outcome: Outcome) {
        let series = self
            .named
            .iter()
            .find(|(name, _)| name == tool)
            .map_or(&self.other, |(_, s)| s);
        series[outcome as usize].inc();
    }
}

/// `count` histogram bucket bounds from `start`, each twice the one before: the values of
/// prometheus-client's `exponential_buckets(start, 2.0, count)`, without its `powf`, which was
/// the binary's only use of libm (a shared library less to load and keep mapped).
pub fn doubling_buckets(start: f64, count: usize) -> impl Iterator<Item = f64> {
    std::iter::successors(Some(start), |b| Some(b * 2.0)).take(count)
}

/// Renders the registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    /// The families of [`Metrics`] as they were built from prometheus-client's own `Counter` and
    /// `Histogram`, with the same series created up front.
    fn reference(
        registry: &mut Registry,
        policies: &[&str],
        tools: (&str, &[&str]),
    ) -> ReferenceFamilies {
        let f = ReferenceFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(doubling_buckets(0.0005, 16))),
            jwks_refresh: Family::default(),
            token_cache_hits: Counter::default(),
            introspections: Family::default(),
            reloads: Family::default(),
            audit_dropped: Counter::default(),
            tool_calls: Family::default(),
        };
        for &result in FetchResult::ALL {
            drop(f.reloads.get_or_create(&ReloadLabels { result }));
        }
        for &policy in policies {
            let policy = policy.to_owned();
            for &(outcome, reason) in EXPECTED {
                let policy = policy.clone();
                drop(f.requests.get_or_create(&RequestLabels {
                    policy,
                    outcome,
                    reason,
                }));
            }
            for &outcome in Outcome::ALL {
                drop(f.duration.get_or_create(&DurationLabels {
                    policy: policy.clone(),
                    outcome,
                }));
                if policy != tools.0 {
                    continue;
                }
                for &tool in tools.1.iter().chain(&["other"]) {
                    drop(f.tool_calls.get_or_create(&ToolLabels {
                        policy: policy.clone(),
                        tool: tool.to_owned(),
                        outcome,
                    }));
                }
            }
            for &result in FetchResult::ALL {
                let policy = policy.clone();
                drop(f.jwks_refresh.get_or_create(&JwksLabels { policy, result }));
            }
        }
        let r = registry.sub_registry_with_prefix("mcp_warden");
        r.register(
            "requests",
            "Requests on the public port by outcome and reason",
            f.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the response head, including the upstream",
            f.duration.clone(),
        );
        r.register(
            "jwks_refresh",
            "JWKS fetches by result",
            f.jwks_refresh.clone(),
        );
        r.register(
            "token_cache_hits",
            "Requests served from the verified-token cache",
            f.token_cache_hits.clone(),
        );
        r.register(
            "introspections",
            "Token introspection requests by answer (cache misses only)",
            f.introspections.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy file reloads by result",
            f.reloads.clone(),
        );
        r.register(
            "audit_dropped",
            "Audit lines dropped because the audit queue was full",
            f.audit_dropped.clone(),
        );
        r.register(
            "tool_calls",
            "tools/call messages by tool (spec.audit.toolMetrics, others as \"other\") and outcome",
            f.tool_calls.clone(),
        );
        f
    }

    struct ReferenceFamilies {
        requests: Family<RequestLabels, Counter>,
        duration: Family<DurationLabels, Histogram>,
        jwks_refresh: Family<JwksLabels, Counter>,
        token_cache_hits: Counter,
        introspections: Family<IntrospectionLabels, Counter>,
        reloads: Family<ReloadLabels, Counter>,
        audit_dropped: Counter,
        tool_calls: Family<ToolLabels, Counter>,
    }

    /// Asserts that two renderings hold the same families in the same order and the same lines.
    /// A family prints its series in hash-map order, so series lines are compared as sets.
    fn assert_same_exposition(ours: &str, theirs: &str) {
        fn heads(text: &str) -> Vec<&str> {
            text.lines().filter(|l| l.starts_with('#')).collect()
        }
        fn sorted(text: &str) -> Vec<&str> {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            lines
        }
        assert_eq!(heads(ours), heads(theirs));
        let (ours, theirs) = (sorted(ours), sorted(theirs));
        let missing: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
        let extra: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
        assert!(ours == theirs, "missing: {missing:#?}\nextra: {extra:#?}");
    }

    #[test]
    fn exposition_matches_prometheus_client_types() {
        let (mut ours, mut theirs) = (Registry::default(), Registry::default());
        let metrics = Metrics::register(&mut ours);
        let tools = ["echo".to_owned()];
        let meters = [metrics.for_policy("a"), metrics.for_policy("b")];
        let tool_meters = metrics.tools_for("a", &tools);
        let reference = reference(&mut theirs, &["a", "b"], ("a", &["echo"]));

        let requests = [
            (0, Outcome::Allowed, Reason::None, 0.003),
            (0, Outcome::Allowed, Reason::None, 0.0001),
            (0, Outcome::Unauthorized, Reason::Expired, 0.0005),
            (1, Outcome::Forbidden, Reason::InsufficientScope, 0.7),
            // A pair outside EXPECTED, counted through the family.
            (1, Outcome::Allowed, Reason::Revoked, 100.0),
        ];
        for (policy, outcome, reason, seconds) in requests {
            meters[policy].observe(outcome, reason, seconds);
            let policy = ["a", "b"][policy].to_owned();
            let labels = RequestLabels {
                policy: policy.clone(),
                outcome,
                reason,
            };
            reference.requests.get_or_create(&labels).inc();
            let labels = DurationLabels { policy, outcome };
            reference.duration.get_or_create(&labels).observe(seconds);
        }
        for (tool, counted, outcome) in [
            ("echo", "echo", Outcome::Allowed),
            ("echo", "echo", Outcome::Allowed),
            ("rm", "other", Outcome::Forbidden),
        ] {
            tool_meters.observe(tool, outcome);
            let labels = ToolLabels {
                policy: "a".to_owned(),
                tool: counted.to_owned(),
                outcome,
            };
            reference.tool_calls.get_or_create(&labels).inc();
        }
        for _ in 0..2 {
            metrics.token_cache_hits.inc();
            reference.token_cache_hits.inc();
        }

        let (ours, theirs) = (render(&ours), render(&theirs));
        assert_same_exposition(&ours, &theirs);
        assert!(ours.contains(
            "mcp_warden_tool_calls_total{policy=\"a\",tool=\"echo\",outcome=\"allowed\"} 2\n"
        ));
    }
}
