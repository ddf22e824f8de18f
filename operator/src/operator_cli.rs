//! `mcp-warden-operator`: flags and start-up wiring. The admin server starts first and stays up
//! while the Kubernetes API is unreachable (then `/readyz` fails).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use clap::{Parser, ValueEnum};
use kube::Client;

use crate::admin::{self, Health};
use crate::inject::InjectSettings;
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Settings};
use crate::webhook::{self, WebhookState};
use crate::webhook_config::{self, Endpoint};
use crate::{Result, cert_rotation};

/// When to inject a native sidecar (an init container with `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecar {
    /// Native when the API server is 1.29 or newer (where the feature is on by default).
    Auto,
    /// Always native (for 1.28 clusters with the SidecarContainers feature gate on).
    Always,
    /// Always a regular container.
    Never,
}

/// The mcp-warden operator: reconciles McpAuthPolicy resources and serves the sidecar-injection
/// webhook.
///
/// Development outside a cluster: with a kubeconfig (KUBECONFIG or ~/.kube/config), run
/// `mcp-warden-operator --webhook-listen 0.0.0.0:9443 --webhook-url https://<this host's
/// address, reachable from the API server>:9443/mutate-pods --namespace default`. The operator
/// then creates its CA and serving certificate for that host, stores them in the
/// `--tls-secret` Secret, and registers the MutatingWebhookConfiguration by URL with its own
/// caBundle.
#[derive(Debug, Parser)]
#[command(name = "mcp-warden-operator", version, verbatim_doc_comment)]
pub struct Args {
    /// Admin address: /metrics, /healthz, /readyz.
    #[arg(long, env = "MCP_WARDEN_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Webhook address (HTTPS, path /mutate-pods).
    #[arg(
        long,
        env = "MCP_WARDEN_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub webhook_listen: SocketAddr,
    /// The operator's namespace (TLS Secret, Lease, webhook Service).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mcp-warden")]
    pub namespace: String,
    /// Service in front of the webhook.
    #[arg(
        long,
        env = "MCP_WARDEN_WEBHOOK_SERVICE",
        default_value = "mcp-warden-webhook"
    )]
    pub webhook_service: String,
    /// MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "MCP_WARDEN_WEBHOOK_CONFIGURATION",
        default_value = "mcp-warden"
    )]
    pub webhook_configuration: String,
    /// Secret holding the webhook CA and serving certificate (shared by all replicas).
    #[arg(
        long,
        env = "MCP_WARDEN_TLS_SECRET",
        default_value = "mcp-warden-webhook-tls"
    )]
    pub tls_secret: String,
    /// Development: register the webhook by this URL (https://host:port/mutate-pods) instead
    /// of the Service, creating the MutatingWebhookConfiguration if missing.
    #[arg(long, env = "MCP_WARDEN_WEBHOOK_URL")]
    pub webhook_url: Option<url::Url>,
    /// Sidecar image to inject.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_IMAGE", default_value_t = default_image())]
    pub sidecar_image: String,
    /// CPU request of the injected sidecar.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_CPU_REQUEST", default_value = "50m")]
    pub sidecar_cpu_request: String,
    /// Memory request of the injected sidecar.
    #[arg(
        long,
        env = "MCP_WARDEN_SIDECAR_MEMORY_REQUEST",
        default_value = "32Mi"
    )]
    pub sidecar_memory_request: String,
    /// Memory limit of the injected sidecar.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_MEMORY_LIMIT", default_value = "128Mi")]
    pub sidecar_memory_limit: String,
    /// CPU limit of the injected sidecar (none by default: throttling adds latency).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_CPU_LIMIT")]
    pub sidecar_cpu_limit: Option<String>,
    /// Preferred public port of the sidecar (moved up when the pod already uses it).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_PORT", default_value_t = crate::names::DEFAULT_PUBLIC_PORT)]
    pub sidecar_port: i32,
    /// Preferred admin port of the sidecar.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_ADMIN_PORT", default_value_t = crate::names::DEFAULT_ADMIN_PORT)]
    pub sidecar_admin_port: i32,
    /// Native sidecar or regular container.
    #[arg(
        long,
        env = "MCP_WARDEN_NATIVE_SIDECAR",
        value_enum,
        default_value = "auto"
    )]
    pub native_sidecar: NativeSidecar,
    /// Create a NetworkPolicy per policy admitting ingress only on the sidecar ports.
    #[arg(long, env = "MCP_WARDEN_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policy: bool,
    /// Run the controller only in the replica holding the Lease.
    #[arg(long, env = "MCP_WARDEN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "MCP_WARDEN_LEASE_NAME",
        default_value = "mcp-warden-operator"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Timeout of each issuer discovery/JWKS request, in seconds.
    #[arg(long, env = "MCP_WARDEN_ISSUER_TIMEOUT", default_value_t = 5)]
    pub issuer_timeout: u64,
    /// Seconds a new signing/encryption key is only published (tokens and sessions it would
    /// produce verify everywhere) before it signs and encrypts: longer than a Secret update
    /// takes to reach every pod (kubelet sync period plus cache TTL, plus the sidecar's poll).
    #[arg(long, env = "MCP_WARDEN_KEY_ACTIVATION_DELAY", default_value_t = crate::reconcile::DEFAULT_KEY_ACTIVATION_DELAY)]
    pub key_activation_delay: u64,
    /// Log format.
    #[arg(long, env = "MCP_WARDEN_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

fn default_image() -> String {
    InjectSettings::default().sidecar_image
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn retry<T, F, Fut>(what: &str, health: &Health, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_secs(1);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                health.set_api_reachable(false);
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    init_tracing(&args.log_format);
    let metrics = Metrics::new();
    let health = Health::default();
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen).await?;
    tracing::info!(addr = %args.admin_listen, "admin server listening");
    tokio::spawn(
        axum::serve(
            admin_listener,
            admin::router(metrics.clone(), health.clone()),
        )
        .into_future(),
    );
    let held = Arc::new(std::sync::Mutex::new(None));
    tokio::select! {
        res = operate(args, metrics, health, held.clone()) => res,
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            let lock = held.lock().expect("not poisoned").take();
            if let Some(lock) = lock {
                let release = tokio::time::timeout(Duration::from_secs(3), lock.release());
                if let Ok(Err(e)) = release.await {
                    tracing::warn!(error = %e, "cannot release the leader lease");
                }
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The lease this replica holds, released on shutdown.
type Held = Arc<std::sync::Mutex<Option<LeaseLock>>>;

async fn operate(args: Args, metrics: Metrics, health: Health, held: Held) -> anyhow::Result<()> {
    let client = retry(
        "loading the Kubernetes client configuration",
        &health,
        || async { Client::try_default().await.map_err(crate::Error::from) },
    )
    .await;
    let version = retry("reaching the Kubernetes API", &health, || async {
        Ok(client.apiserver_version().await?)
    })
    .await;
    health.set_api_reachable(true);
    let native = native_sidecar(args.native_sidecar, &version.major, &version.minor);
    tracing::info!(server = %version.git_version, native_sidecar = native, "connected to Kubernetes");

    let endpoint = match &args.webhook_url {
        Some(url) => Endpoint::Url(url.clone()),
        None => Endpoint::Service {
            name: args.webhook_service.clone(),
            namespace: args.namespace.clone(),
        },
    };
    let names = endpoint.certificate_names();
    let load =
        || webhook_config::load_or_renew(&client, &args.namespace, &args.tls_secret, &names, now());
    let bundle = retry("loading the webhook certificate", &health, load).await;
    cert_rotation::record_expiry(&metrics, &bundle);
    let tls = RustlsConfig::from_pem(
        bundle.cert_pem.clone().into(),
        bundle.key_pem.clone().into(),
    )
    .await?;
    let settings = inject_settings(&args, native);
    let state = WebhookState {
        client: client.clone(),
        settings: Arc::new(settings),
        metrics: metrics.clone(),
    };
    let server = axum_server::bind_rustls(args.webhook_listen, tls.clone())
        .serve(webhook::router(state).into_make_service());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "webhook server stopped");
        }
    });
    tracing::info!(addr = %args.webhook_listen, "webhook listening");
    health.set_webhook_serving(true);

    let create_with = args.webhook_url.as_ref().map(|_| {
        webhook_config::webhook_configuration(
            &args.webhook_configuration,
            &endpoint,
            &args.namespace,
            &bundle.ca_pem,
        )
    });
    tokio::spawn(cert_rotation::certificate_loop(
        client.clone(),
        args.namespace.clone(),
        args.tls_secret.clone(),
        args.webhook_configuration.clone(),
        endpoint,
        create_with.is_some(),
        bundle,
        tls,
        metrics.clone(),
    ));
    tokio::spawn(cert_rotation::api_health_loop(
        client.clone(),
        health.clone(),
    ));

    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Settings {
            network_policy: args.network_policy,
            issuer_timeout: Duration::from_secs(args.issuer_timeout),
            key_activation_delay: Duration::from_secs(args.key_activation_delay),
            ..Default::default()
        },
    ));
    if !args.leader_election {
        metrics.leader.set(1);
        reconcile::run(ctx).await;
        return Ok(());
    }
    let identity = args.pod_name.clone().unwrap_or_else(fallback_identity);
    let lock = LeaseLock::new(
        client,
        &args.namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(15),
    );
    lock.acquire().await;
    *held.lock().expect("not poisoned") = Some(lock.clone());
    metrics.leader.set(1);
    tokio::select! {
        () = reconcile::run(ctx) => Ok(()),
        () = lock.hold() => {
            metrics.leader.set(0);
            anyhow::bail!("lost leadership; exiting so that only one replica reconciles")
        }
    }
}

/// Whether to inject native sidecars: `auto` means Kubernetes 1.29 or newer, where the
/// SidecarContainers feature is on by default. Managed clusters report minors like `29+`.
pub fn native_sidecar(mode: NativeSidecar, major: &str, minor: &str) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .unwrap_or(0)
    };
    match mode {
        NativeSidecar::Always => true,
        NativeSidecar::Never => false,
        NativeSidecar::Auto => number(major) > 1 || (number(major) == 1 && number(minor) >= 29),
    }
}

/// A replica identity without `POD_NAME`: the host name (a pod's name in Kubernetes) plus a
/// random suffix, so two processes never share one (PIDs repeat across containers).
fn fallback_identity() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mcp-warden-operator".into());
    let mut suffix = [0u8; 4];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{suffix}")
}

/// Injection settings from the flags.
pub fn inject_settings(args: &Args, native: bool) -> InjectSettings {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let q = |s: &str| Quantity(s.to_owned());
    let mut limits =
        std::collections::BTreeMap::from([("memory".to_owned(), q(&args.sidecar_memory_limit))]);
    if let Some(cpu) = &args.sidecar_cpu_limit {
        limits.insert("cpu".to_owned(), q(cpu));
    }
    InjectSettings {
        sidecar_image: args.sidecar_image.clone(),
        native_sidecar: native,
        public_port: args.sidecar_port,
        admin_port: args.sidecar_admin_port,
        resources: k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), q(&args.sidecar_cpu_request)),
                    ("memory".to_owned(), q(&args.sidecar_memory_request)),
                ]
                .into(),
            ),
            limits: Some(limits),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_default_to_the_contract_and_feed_injection() {
        let args = Args::parse_from(["mcp-warden-operator", "--sidecar-cpu-limit", "500m"]);
        assert_eq!(args.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(args.webhook_listen.to_string(), "0.0.0.0:9443");
        assert_eq!(args.webhook_service, "mcp-warden-webhook");
        assert_eq!(args.tls_secret, "mcp-warden-webhook-tls");
        assert_eq!(args.native_sidecar, NativeSidecar::Auto);
        assert!(args.network_policy && args.leader_election);
        let s = inject_settings(&args, false);
        assert_eq!((s.public_port, s.admin_port), (8000, 9090));
        assert_eq!(s.resources.limits.unwrap()["cpu"].0, "500m");
        assert!(native_sidecar(NativeSidecar::Auto, "1", "29+"));
        assert!(native_sidecar(NativeSidecar::Auto, "1", "33"));
        assert!(!native_sidecar(NativeSidecar::Auto, "1", "28"));
        assert!(!native_sidecar(NativeSidecar::Auto, "1", "garbage"));
        assert!(native_sidecar(NativeSidecar::Always, "1", "28"));
        assert!(!native_sidecar(NativeSidecar::Never, "1", "33"));
        let off = Args::parse_from([
            "x",
            "--network-policy",
            "false",
            "--native-sidecar",
            "never",
        ]);
        assert!(!off.network_policy);
        assert_eq!(off.native_sidecar, NativeSidecar::Never);
    }
}
