//! The mcp-warden operator: it turns `McpAuthPolicy` resources into sidecar configuration
//! (ConfigMaps, key Secrets, NetworkPolicies, status) and injects the auth sidecar into opted-in
//! pods through a mutating admission webhook. The injection itself is a pure function
//! ([`inject::inject`]) shared by the webhook and the offline `mcp-warden inject` command.

pub mod admin;
pub mod caches;
pub mod cert_rotation;
pub mod certs;
pub mod conditions;
pub mod crd;
pub mod doctor;
pub mod error;
pub mod inject;
pub mod issuer;
pub mod keys;
pub mod kubelets;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod netpol;
pub mod offline;
pub mod operator_cli;
pub mod ports;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod resources;
pub mod shutdown;
pub mod stored_policy;
pub mod webhook;
pub mod webhook_config;

pub use error::{Error, Result};

/// Installs aws-lc-rs as the process-wide rustls crypto provider (kube, reqwest and the webhook
/// server all use rustls; exactly one provider must be the default).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
