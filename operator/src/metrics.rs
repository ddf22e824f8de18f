//! The operator's Prometheus metrics (`mcp_warden_operator_*`), registered at start-up so they
//! are listed before anything happens.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// A bounded outcome name.
    pub result: &'static str,
}

/// `certificate` label (`ca` or `serving`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    /// Which certificate.
    pub certificate: &'static str,
}

/// Values of `result` on `mcp_warden_operator_reconcile_total`.
pub const RECONCILE_RESULTS: [&str; 3] = ["ok", "invalid", "error"];
/// Values of `result` on `mcp_warden_operator_injections_total`.
pub const INJECTION_RESULTS: [&str; 5] =
    ["injected", "skipped", "already_injected", "denied", "error"];

/// All operator metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciliations by result (`ok`, `invalid`, or an error kind).
    pub reconcile: Family<ResultLabel, Counter>,
    /// Time per reconciliation.
    pub reconcile_duration: Histogram,
    /// Admission decisions by result (`injected`, `skipped`, `already_injected`, `denied`, `error`).
    pub injections: Family<ResultLabel, Counter>,
    /// Time per admission request.
    pub webhook_duration: Histogram,
    /// `notAfter` of the webhook certificates, as a Unix timestamp (0 until loaded).
    pub certificate_expiry: Family<CertificateLabel, Gauge>,
    /// 1 while this replica holds the controller lease.
    pub leader: Gauge,
    registry: Arc<Registry>,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_warden");
        let reconcile = Family::<ResultLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let injections = Family::<ResultLabel, Counter>::default();
        let webhook_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let certificate_expiry = Family::<CertificateLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "operator_reconcile",
            "McpAuthPolicy reconciliations by result",
            reconcile.clone(),
        );
        registry.register(
            "operator_reconcile_duration_seconds",
            "Time spent reconciling one McpAuthPolicy",
            reconcile_duration.clone(),
        );
        registry.register(
            "operator_injections",
            "Pod admission decisions by result",
            injections.clone(),
        );
        registry.register(
            "operator_webhook_duration_seconds",
            "Time spent answering one admission request",
            webhook_duration.clone(),
        );
        registry.register(
            "operator_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the webhook CA and serving certificate, Unix seconds",
            certificate_expiry.clone(),
        );
        registry.register(
            "operator_leader",
            "1 while this replica runs the controller",
            leader.clone(),
        );
        // Families only print once a label set exists: create every bounded value up front.
        for result in RECONCILE_RESULTS {
            let _ = reconcile.get_or_create(&ResultLabel { result });
        }
        for result in INJECTION_RESULTS {
            let _ = injections.get_or_create(&ResultLabel { result });
        }
        for certificate in ["ca", "serving"] {
            let _ = certificate_expiry.get_or_create(&CertificateLabel { certificate });
        }
        Self {
            reconcile,
            reconcile_duration,
            injections,
            webhook_duration,
            certificate_expiry,
            leader,
            registry: Arc::new(registry),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_family_is_listed_before_use() {
        let text = Metrics::new().encode();
        for family in [
            "# TYPE mcp_warden_operator_reconcile counter",
            "# TYPE mcp_warden_operator_reconcile_duration_seconds histogram",
            "# TYPE mcp_warden_operator_injections counter",
            "# TYPE mcp_warden_operator_webhook_duration_seconds histogram",
            "# TYPE mcp_warden_operator_certificate_expiry_timestamp_seconds gauge",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
    }
}
