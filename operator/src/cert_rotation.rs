//! Background upkeep of the webhook: certificate renewal and reload, the caBundle, and the API
//! health flag behind `/readyz`.

use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use kube::Client;

use crate::admin::Health;
use crate::certs;
use crate::metrics::{CertificateLabel, Metrics};
use crate::webhook_config::{self, Endpoint};

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

#[allow(clippy::too_many_arguments)]
/// Hourly: renews the webhook certificate when due (shared Secret), reloads the TLS server,
/// and keeps the caBundle of the webhook configuration current (every 30 s until it works).
pub async fn certificate_loop(
    client: Client,
    namespace: String,
    secret: String,
    configuration: String,
    endpoint: Endpoint,
    register: bool,
    mut bundle: certs::TlsBundle,
    tls: RustlsConfig,
    metrics: Metrics,
) {
    let names = endpoint.certificate_names();
    let mut first = true;
    loop {
        if !first {
            match webhook_config::load_or_renew(&client, &namespace, &secret, &names, now()).await {
                Ok(fresh) if fresh != bundle => {
                    match tls
                        .reload_from_pem(
                            fresh.cert_pem.clone().into(),
                            fresh.key_pem.clone().into(),
                        )
                        .await
                    {
                        Ok(()) => {
                            tracing::info!("webhook certificate reloaded");
                            bundle = fresh;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot load the new certificate"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "certificate check failed"),
            }
        }
        first = false;
        record_expiry(&metrics, &bundle);
        let create_with = register.then(|| {
            webhook_config::webhook_configuration(
                &configuration,
                &endpoint,
                &namespace,
                &bundle.ca_pem,
            )
        });
        let synced =
            webhook_config::sync_ca_bundle(&client, &configuration, &bundle.ca_pem, create_with)
                .await;
        let wait = match synced {
            Ok(()) => Duration::from_secs(3600),
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the webhook caBundle");
                Duration::from_secs(30)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Every 10 s: records whether the API server answers (for `/readyz`).
pub async fn api_health_loop(client: Client, health: Health) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        health.set_api_reachable(client.apiserver_version().await.is_ok());
    }
}
