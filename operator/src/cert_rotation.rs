//! Background upkeep of the webhook: certificate renewal and reload, the caBundle, and the API
//! health flag behind `/readyz`.
//!
//! The TLS Secret is the one source of truth for the CA bundle: every replica publishes the
//! bundle the Secret holds, never the one it happens to serve, so a replica whose reload failed
//! cannot put an older bundle back over a newer one. The MutatingWebhookConfiguration is watched
//! and its `caBundle` repaired as soon as it differs (after re-reading the Secret, so a bundle
//! another replica just renewed is kept, not reverted).

use std::pin::pin;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::admin::Health;
use crate::metrics::{CertificateLabel, Metrics};
use crate::webhook_config::{self, Endpoint};
use crate::{Result, certs};

/// How often the TLS Secret is re-read when nothing else happens.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Retry interval after a failed check, reload or caBundle update.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Publishes the certificates' expiry as metrics.
pub fn record_expiry(metrics: &Metrics, bundle: &certs::TlsBundle) {
    for (certificate, pem) in [("ca", &bundle.ca_pem), ("serving", &bundle.cert_pem)] {
        if let Ok(t) = certs::not_after(pem) {
            metrics
                .certificate_expiry
                .get_or_create(&CertificateLabel { certificate })
                .set(t);
        }
    }
}

/// Keeps the webhook's certificate and the webhook configuration's `caBundle` current.
pub struct Keeper {
    /// Kubernetes client.
    pub client: Client,
    /// Namespace of the TLS Secret.
    pub namespace: String,
    /// Name of the TLS Secret.
    pub secret: String,
    /// Name of the MutatingWebhookConfiguration.
    pub configuration: String,
    /// Where the API server reaches the webhook.
    pub endpoint: Endpoint,
    /// Development (`--webhook-url`): create the configuration and keep all of it as served.
    pub register: bool,
    /// `timeoutSeconds` of a registered configuration.
    pub timeout_seconds: i32,
    /// Metrics.
    pub metrics: Metrics,
}

impl Keeper {
    /// Runs until dropped. `serving` is what the TLS server serves now (just loaded from the
    /// Secret). The Secret is re-read hourly (renewing what is due), and at once when the
    /// webhook configuration's `caBundle` stops matching; failures are retried every 30 s.
    pub async fn run(self, mut serving: certs::TlsBundle, tls: RustlsConfig) {
        let mut ca = serving.ca_pem.clone();
        let mut changes = pin!(self.configuration_changes());
        let mut first = true;
        loop {
            let mut ok = true;
            if !first {
                match self.refresh(&mut serving, &tls).await {
                    Ok((secret_ca, reloaded)) => {
                        ca = secret_ca;
                        ok = reloaded;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate check failed");
                        ok = false;
                    }
                }
            }
            first = false;
            record_expiry(&self.metrics, &serving);
            if let Err(e) = self.sync(&ca).await {
                tracing::warn!(error = %e, "cannot update the webhook caBundle");
                ok = false;
            }
            let mut wait = pin!(tokio::time::sleep(if ok {
                CHECK_INTERVAL
            } else {
                RETRY_INTERVAL
            }));
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    Some(bundles) = changes.next() => {
                        if bundles.iter().any(|b| b.as_deref() != Some(ca.as_bytes())) {
                            tracing::info!("the webhook configuration's caBundle changed; checking");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The `caBundle` of every webhook of the configuration, at each change seen by a watch
    /// (an empty list when the configuration is deleted).
    fn configuration_changes(&self) -> impl Stream<Item = Vec<Option<Vec<u8>>>> + use<> {
        let api = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.configuration));
        watcher(api, config).default_backoff().filter_map(|event| {
            std::future::ready(match event {
                Ok(watcher::Event::Apply(config) | watcher::Event::InitApply(config)) => Some(
                    config
                        .webhooks
                        .iter()
                        .flatten()
                        .map(|h| h.client_config.ca_bundle.clone().map(|b| b.0))
                        .collect(),
                ),
                Ok(watcher::Event::Delete(_)) => Some(vec![None]),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "watching the webhook configuration");
                    None
                }
            })
        })
    }

    /// Re-reads the Secret (renewing what is due) and reloads the TLS server when it changed.
    /// Returns the Secret's CA bundle — the one to publish, whether or not the reload worked —
    /// and whether the server now serves the Secret's certificate.
    pub async fn refresh(
        &self,
        serving: &mut certs::TlsBundle,
        tls: &RustlsConfig,
    ) -> Result<(String, bool)> {
        let names = self.endpoint.certificate_names();
        let fresh = webhook_config::load_or_renew(
            &self.client,
            &self.namespace,
            &self.secret,
            &names,
            now(),
        )
        .await?;
        if fresh == *serving {
            return Ok((fresh.ca_pem, true));
        }
        let reloaded = tls
            .reload_from_pem(fresh.cert_pem.clone().into(), fresh.key_pem.clone().into())
            .await;
        match reloaded {
            Ok(()) => {
                tracing::info!("webhook certificate reloaded");
                *serving = fresh.clone();
                Ok((fresh.ca_pem, true))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the new webhook certificate; retrying");
                Ok((fresh.ca_pem, false))
            }
        }
    }

    /// Makes every webhook of the configuration trust `ca` (creating the configuration in
    /// development mode).
    pub async fn sync(&self, ca: &str) -> Result<()> {
        let create_with = self.register.then(|| {
            webhook_config::webhook_configuration(
                &self.configuration,
                &self.endpoint,
                &self.namespace,
                ca,
                self.timeout_seconds,
            )
        });
        webhook_config::sync_ca_bundle(&self.client, &self.configuration, ca, create_with).await
    }
}

/// Every 10 s: records whether the API server answers (for `/readyz`).
pub async fn api_health_loop(client: Client, health: Health) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        health.set_api_reachable(client.apiserver_version().await.is_ok());
    }
}
