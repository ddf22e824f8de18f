//! `mcp-warden-operator`: flags and start-up wiring. The admin server starts first and stays up
//! while the Kubernetes API is unreachable (then `/readyz` fails).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use clap::{Parser, ValueEnum};
use kube::Client;

use crate::admin::{self, Health};
use crate::caches::Caches;
use crate::inject::InjectSettings;
use crate::kubelets::{Kubelets, NativeDefault};
use crate::leader::{self, LeaseLock};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Settings};
use crate::shutdown::Shutdown;
use crate::webhook::{self, WebhookState};
use crate::webhook_config::{self, Endpoint};
use crate::{Result, cert_rotation};

/// When to inject a native sidecar (an init container with `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecar {
    /// Native when every Node's kubelet is 1.29 or newer (where the feature is on by default),
    /// from a watch on Nodes; a regular container otherwise.
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
    /// The webhook configuration's `timeoutSeconds` (1-30): the webhook answers one second
    /// before it, denying a pod it could not decide rather than letting the API server give up.
    #[arg(long, env = "MCP_WARDEN_WEBHOOK_TIMEOUT_SECONDS", default_value_t = webhook::DEFAULT_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=30))]
    pub webhook_timeout_seconds: u64,
    /// On SIGTERM: seconds the webhook keeps answering after `/readyz` starts failing, so the
    /// API server stops sending it reviews before it closes (the lease is released at once).
    #[arg(long, env = "MCP_WARDEN_SHUTDOWN_DRAIN_SECONDS", default_value_t = 3)]
    pub shutdown_drain_seconds: u64,
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
    /// Ephemeral-storage request of the injected sidecar (none by default).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_EPHEMERAL_STORAGE_REQUEST")]
    pub sidecar_ephemeral_storage_request: Option<String>,
    /// Ephemeral-storage limit of the injected sidecar (none by default).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_EPHEMERAL_STORAGE_LIMIT")]
    pub sidecar_ephemeral_storage_limit: Option<String>,
    /// Run the sidecar as uid/gid 65532; `false` leaves the IDs to the platform (OpenShift).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_FIXED_UID", default_value_t = true, action = clap::ArgAction::Set)]
    pub sidecar_fixed_uid: bool,
    /// Preferred public port of the sidecar (moved up when the pod already uses it).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_PORT", default_value_t = crate::names::DEFAULT_PUBLIC_PORT,
          value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub sidecar_port: i32,
    /// Preferred admin port of the sidecar.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_ADMIN_PORT", default_value_t = crate::names::DEFAULT_ADMIN_PORT,
          value_parser = clap::value_parser!(i32).range(1..=65535))]
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
    /// Reconcile only the policies of these namespaces (comma-separated), so that RBAC can be
    /// namespaced Roles there; default: every namespace.
    #[arg(long, env = "MCP_WARDEN_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Seconds a new signing/encryption key is only published (tokens and sessions it would
    /// produce verify everywhere) before it signs and encrypts: longer than a Secret update
    /// takes to reach every pod (kubelet sync period plus cache TTL, plus the sidecar's poll).
    #[arg(long, env = "MCP_WARDEN_KEY_ACTIVATION_DELAY", default_value_t = crate::reconcile::DEFAULT_KEY_ACTIVATION_DELAY)]
    pub key_activation_delay: u64,
    /// OTLP/HTTP endpoint the injected sidecars export traces to (their
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. `http://otel-collector.observability:4318`; none: no
    /// traces.
    #[arg(long, env = "MCP_WARDEN_SIDECAR_OTLP_ENDPOINT")]
    pub sidecar_otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME` of the injected sidecars.
    #[arg(
        long,
        env = "MCP_WARDEN_SIDECAR_SERVICE_NAME",
        default_value = "mcp-warden-sidecar"
    )]
    pub sidecar_service_name: String,
    /// `OTEL_TRACES_SAMPLER` of the injected sidecars (e.g. `parentbased_traceidratio`).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_TRACES_SAMPLER")]
    pub sidecar_traces_sampler: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG` of the injected sidecars (e.g. `0.1`).
    #[arg(long, env = "MCP_WARDEN_SIDECAR_TRACES_SAMPLER_ARG")]
    pub sidecar_traces_sampler_arg: Option<String>,
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

/// What has started so far, for the shutdown sequence.
#[derive(Default)]
struct Started {
    webhook: Option<(axum_server::Handle<SocketAddr>, tokio::task::JoinHandle<()>)>,
    lease: Option<LeaseLock>,
}

type SharedStarted = Arc<std::sync::Mutex<Started>>;

/// Runs the operator until SIGTERM/SIGINT, then stops as [`stop`] describes.
pub async fn run(args: Args) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    init_tracing(&args.log_format);
    check_sidecar_resources(&args)?;
    check_sidecar_tracing(&args)?;
    let metrics = Metrics::new();
    let health = Health::default();
    let shutdown = Shutdown::on_signals();
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen).await?;
    tracing::info!(addr = %args.admin_listen, "admin server listening");
    tokio::spawn(
        axum::serve(
            admin_listener,
            admin::router(metrics.clone(), health.clone()),
        )
        .into_future(),
    );
    let started = SharedStarted::default();
    tokio::select! {
        res = operate(&args, metrics.clone(), health.clone(), started.clone()) => res?,
        () = shutdown.requested() => {}
    }
    stop(&args, &health, &metrics, &started).await;
    Ok(())
}

/// The shutdown sequence. Dropping `operate` has already stopped the controller (a reconcile in
/// flight is abandoned; reconciling is idempotent). Then, at the same time: the lease is
/// released so another replica takes over at once, and the webhook drains: `/readyz` fails
/// while admission is still answered for `--shutdown-drain-seconds`, so the API server stops
/// choosing this replica before it goes. Last, the webhook closes idle keep-alive connections
/// at once and gives requests in flight until their answer deadline.
async fn stop(args: &Args, health: &Health, metrics: &Metrics, started: &SharedStarted) {
    tracing::info!("shutdown requested");
    health.set_draining();
    metrics.leader.set(0);
    let (lease, webhook) = {
        let mut started = started.lock().expect("not poisoned");
        (started.lease.take(), started.webhook.take())
    };
    let release = async {
        let Some(lock) = lease else { return };
        match tokio::time::timeout(Duration::from_secs(2), lock.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    };
    let drain = async {
        if webhook.is_some() {
            tokio::time::sleep(Duration::from_secs(args.shutdown_drain_seconds)).await;
        }
    };
    tokio::join!(release, drain);
    if let Some((handle, task)) = webhook {
        let deadline = webhook::answer_deadline(args.webhook_timeout_seconds);
        handle.graceful_shutdown(Some(deadline));
        let _ = tokio::time::timeout(deadline + Duration::from_secs(1), task).await;
    }
    tracing::info!("stopped");
}

async fn operate(
    args: &Args,
    metrics: Metrics,
    health: Health,
    started: SharedStarted,
) -> anyhow::Result<()> {
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
    tracing::info!(server = %version.git_version, "connected to Kubernetes");

    let (caches, drive) = Caches::watch(client.clone());
    tokio::spawn(drive);
    let synced = caches.clone();
    let ready = health.clone();
    tokio::spawn(async move {
        synced.wait_until_synced().await;
        ready.set_caches_synced(true);
    });
    let native = match args.native_sidecar {
        NativeSidecar::Always => NativeDefault::Fixed(true),
        NativeSidecar::Never => NativeDefault::Fixed(false),
        NativeSidecar::Auto => {
            let (kubelets, drive) = Kubelets::watch(client.clone());
            tokio::spawn(drive);
            NativeDefault::Kubelets(kubelets)
        }
    };

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
    let state = WebhookState {
        client: client.clone(),
        caches,
        settings: Arc::new(inject_settings(args, false)),
        native,
        metrics: metrics.clone(),
        deadline: webhook::answer_deadline(args.webhook_timeout_seconds),
    };
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(args.webhook_listen, tls.clone())
        .handle(handle.clone())
        .serve(webhook::router(state).into_make_service());
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "webhook server stopped");
        }
    });
    started.lock().expect("not poisoned").webhook = Some((handle, task));
    tracing::info!(addr = %args.webhook_listen, "webhook listening");
    health.set_webhook_serving(true);

    let timeout = i32::try_from(args.webhook_timeout_seconds).unwrap_or(30);
    let keeper = cert_rotation::Keeper {
        client: client.clone(),
        namespace: args.namespace.clone(),
        secret: args.tls_secret.clone(),
        configuration: args.webhook_configuration.clone(),
        register: args.webhook_url.is_some(),
        endpoint,
        timeout_seconds: timeout,
        metrics: metrics.clone(),
    };
    tokio::spawn(keeper.run(bundle, tls));
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
            namespaces: args.watch_namespaces.clone(),
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
    started.lock().expect("not poisoned").lease = Some(lock.clone());
    leader::run_elected(
        &lock,
        || reconcile::run(ctx.clone()),
        |leading| {
            metrics.leader.set(i64::from(leading));
        },
    )
    .await;
    Ok(())
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

/// Refuses sidecar resources the API server would refuse in every injected pod: a quantity it
/// cannot parse, or a request above its limit.
pub fn check_sidecar_resources(args: &Args) -> crate::Result<()> {
    let flags = [
        ("--sidecar-cpu-request", Some(&args.sidecar_cpu_request)),
        ("--sidecar-cpu-limit", args.sidecar_cpu_limit.as_ref()),
        (
            "--sidecar-memory-request",
            Some(&args.sidecar_memory_request),
        ),
        ("--sidecar-memory-limit", Some(&args.sidecar_memory_limit)),
        (
            "--sidecar-ephemeral-storage-request",
            args.sidecar_ephemeral_storage_request.as_ref(),
        ),
        (
            "--sidecar-ephemeral-storage-limit",
            args.sidecar_ephemeral_storage_limit.as_ref(),
        ),
    ];
    let mut values = [None; 6];
    for (slot, (flag, value)) in flags.iter().enumerate() {
        let Some(value) = value else { continue };
        let parsed = crate::quantity::parse(value)
            .filter(|v| *v >= 0.0)
            .ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "{flag} {value:?} is not a Kubernetes quantity (e.g. 50m, 128Mi)"
                ))
            })?;
        values[slot] = Some(parsed);
    }
    for (request, limit) in [(0, 1), (2, 3), (4, 5)] {
        if let (Some(r), Some(l)) = (values[request], values[limit])
            && r > l
        {
            return Err(crate::Error::Invalid(format!(
                "{} {} is above {} {}: the API server would refuse every injected pod",
                flags[request].0,
                flags[request].1.map(String::as_str).unwrap_or_default(),
                flags[limit].0,
                flags[limit].1.map(String::as_str).unwrap_or_default(),
            )));
        }
    }
    Ok(())
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
    if let Some(storage) = &args.sidecar_ephemeral_storage_limit {
        limits.insert("ephemeral-storage".to_owned(), q(storage));
    }
    let mut requests = std::collections::BTreeMap::from([
        ("cpu".to_owned(), q(&args.sidecar_cpu_request)),
        ("memory".to_owned(), q(&args.sidecar_memory_request)),
    ]);
    if let Some(storage) = &args.sidecar_ephemeral_storage_request {
        requests.insert("ephemeral-storage".to_owned(), q(storage));
    }
    InjectSettings {
        env: tracing_env(args),
        sidecar_image: args.sidecar_image.clone(),
        native_sidecar: native,
        public_port: args.sidecar_port,
        admin_port: args.sidecar_admin_port,
        fixed_uid: args.sidecar_fixed_uid,
        resources: k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        },
    }
}

/// The sidecar's OpenTelemetry environment: empty without `--sidecar-otlp-endpoint`; otherwise
/// the endpoint, service name, sampler and the pod's name and namespace as resource attributes
/// (from the downward API).
fn tracing_env(args: &Args) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    let Some(endpoint) = &args.sidecar_otlp_endpoint else {
        return Vec::new();
    };
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..Default::default()
        }),
    };
    let mut env = vec![
        value("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        value("OTEL_SERVICE_NAME", &args.sidecar_service_name),
        field("MCP_WARDEN_POD_NAME", "metadata.name"),
        field("MCP_WARDEN_POD_NAMESPACE", "metadata.namespace"),
        // `$(NAME)` expands variables defined earlier in the list.
        value(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=$(MCP_WARDEN_POD_NAME),k8s.namespace.name=$(MCP_WARDEN_POD_NAMESPACE)",
        ),
    ];
    if let Some(sampler) = &args.sidecar_traces_sampler {
        env.push(value("OTEL_TRACES_SAMPLER", sampler));
    }
    if let Some(arg) = &args.sidecar_traces_sampler_arg {
        env.push(value("OTEL_TRACES_SAMPLER_ARG", arg));
    }
    env
}

/// Refuses an OTLP endpoint that is not an absolute http(s) URL (every sidecar would fail).
pub fn check_sidecar_tracing(args: &Args) -> crate::Result<()> {
    let Some(endpoint) = &args.sidecar_otlp_endpoint else {
        return Ok(());
    };
    match url::Url::parse(endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(crate::Error::Invalid(format!(
            "--sidecar-otlp-endpoint {endpoint:?} is not an http(s) URL"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_flags_become_sidecar_environment() {
        let args = Args::parse_from(["x"]);
        assert!(
            inject_settings(&args, false).env.is_empty(),
            "off by default"
        );
        let args = Args::parse_from([
            "x",
            "--sidecar-otlp-endpoint",
            "http://otel-collector.observability:4318",
            "--sidecar-traces-sampler",
            "parentbased_traceidratio",
            "--sidecar-traces-sampler-arg",
            "0.25",
        ]);
        check_sidecar_tracing(&args).unwrap();
        let env = inject_settings(&args, false).env;
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            get("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
            Some("http://otel-collector.observability:4318")
        );
        assert_eq!(
            get("OTEL_SERVICE_NAME").as_deref(),
            Some("mcp-warden-sidecar")
        );
        assert_eq!(get("OTEL_TRACES_SAMPLER_ARG").as_deref(), Some("0.25"));
        let bad = Args::parse_from(["x", "--sidecar-otlp-endpoint", "collector:4318"]);
        assert!(check_sidecar_tracing(&bad).is_err());
    }

    #[test]
    fn flags_default_to_the_contract_and_feed_injection() {
        let args = Args::parse_from(["mcp-warden-operator", "--sidecar-cpu-limit", "500m"]);
        assert_eq!(args.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(args.webhook_listen.to_string(), "0.0.0.0:9443");
        assert_eq!(args.webhook_service, "mcp-warden-webhook");
        assert_eq!(args.tls_secret, "mcp-warden-webhook-tls");
        assert_eq!(args.native_sidecar, NativeSidecar::Auto);
        assert!(args.network_policy && args.leader_election);
        check_sidecar_resources(&args).unwrap();
        let s = inject_settings(&args, false);
        assert_eq!((s.public_port, s.admin_port), (8000, 9090));
        assert_eq!(s.resources.limits.unwrap()["cpu"].0, "500m");
        assert_eq!(args.webhook_timeout_seconds, 10);
        assert_eq!(args.shutdown_drain_seconds, 3);
        assert!(Args::try_parse_from(["x", "--webhook-timeout-seconds", "31"]).is_err());
        let storage = Args::parse_from([
            "x",
            "--sidecar-ephemeral-storage-request",
            "16Mi",
            "--sidecar-ephemeral-storage-limit",
            "64Mi",
        ]);
        let r = inject_settings(&storage, false).resources;
        assert_eq!(r.requests.unwrap()["ephemeral-storage"].0, "16Mi");
        assert_eq!(r.limits.unwrap()["ephemeral-storage"].0, "64Mi");
        let inverted = Args::parse_from([
            "x",
            "--sidecar-ephemeral-storage-request",
            "1Gi",
            "--sidecar-ephemeral-storage-limit",
            "64Mi",
        ]);
        assert!(check_sidecar_resources(&inverted).is_err());
        let scoped = Args::parse_from(["x", "--watch-namespaces", "tools,agents"]);
        assert_eq!(scoped.watch_namespaces, ["tools", "agents"]);
        assert!(
            args.watch_namespaces.is_empty(),
            "every namespace by default"
        );
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

    #[test]
    fn sidecar_resources_the_api_server_would_refuse_stop_the_operator() {
        let check = |flags: &[&str]| {
            let mut argv = vec!["x"];
            argv.extend_from_slice(flags);
            check_sidecar_resources(&Args::parse_from(argv)).map_err(|e| e.to_string())
        };
        check(&[]).unwrap();
        check(&[
            "--sidecar-cpu-limit",
            "50m",
            "--sidecar-memory-request",
            "128Mi",
        ])
        .unwrap();
        let over = check(&["--sidecar-memory-request", "256Mi"]).unwrap_err();
        assert!(
            over.contains("--sidecar-memory-request 256Mi is above --sidecar-memory-limit 128Mi"),
            "{over}"
        );
        let cpu =
            check(&["--sidecar-cpu-request", "1", "--sidecar-cpu-limit", "500m"]).unwrap_err();
        assert!(
            cpu.contains("--sidecar-cpu-request 1 is above --sidecar-cpu-limit 500m"),
            "{cpu}"
        );
        let bad = check(&["--sidecar-memory-limit", "128MB"]).unwrap_err();
        assert!(bad.contains("not a Kubernetes quantity"), "{bad}");
    }
}
