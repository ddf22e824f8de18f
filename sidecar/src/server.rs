//! Wires the parts together and serves both ports until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use std::future::IntoFuture;

use tokio::net::TcpListener;

use crate::admin::{self, AdminState};
use crate::allocator;
use crate::app::{AppState, SharedRuntime};
use crate::cli::Args;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::reload;
use crate::runtime::BuildContext;
use crate::shutdown::{self, Phase};
use crate::workers::{self, Workers};

/// Runs the sidecar. Returns after SIGINT/SIGTERM, the shutdown delay and the drain of in-flight
/// requests (bounded); see [`shutdown`].
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-warden-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let ctx = BuildContext {
        resource_override: args.resource_url.clone(),
        secrets_dir: args.secrets_dir.clone(),
        http,
        metrics: metrics.clone(),
        audit: crate::audit::Writers::new(&metrics),
        oauth: crate::oauth::Shared::register(&mut registry)
            .with_memory_budget(args.memory_store_bytes),
    };
    // Checked before anything starts; each serving thread then opens its own pool.
    Upstream::new(&args.upstream)?;
    let (bytes, runtime) = reload::load(&args.policy, &ctx).await?;
    reload::warm_up(&runtime).await;
    let refresh = reload::spawn_refresh(&runtime);
    let workers = args
        .workers
        .map_or_else(workers::default_count, usize::from);
    tracing::info!(
        policy = %runtime.policy,
        resource = %runtime.resource.url,
        listen = %args.listen,
        admin = %args.admin,
        upstream = %args.upstream,
        workers,
        keys_ready = runtime.verifier.ready(),
        "mcp-warden sidecar starting"
    );
    let audit = ctx.audit.clone();
    let serving: SharedRuntime = Arc::new(ArcSwap::from_pointee(runtime));
    tokio::spawn(reload::watch(
        args.policy.clone(),
        Duration::from_secs(args.reload_interval.max(1)),
        ctx,
        serving.clone(),
        bytes,
        refresh,
    ));

    let public = TcpListener::bind(args.listen).await?;
    let admin_listener = TcpListener::bind(args.admin).await?;
    tokio::spawn(allocator::release_periodically());
    let (phase_tx, phase) = shutdown::channel();
    tokio::spawn(shutdown::on_signal(
        phase_tx,
        Duration::from_secs(args.shutdown_delay),
    ));
    let admin_router = admin::router(Arc::new(AdminState {
        registry,
        runtime: serving.clone(),
        phase: phase.clone(),
    }));
    // The admin port answers (`/readyz`: 503) until the public port has drained.
    let (drained_tx, drained) = tokio::sync::oneshot::channel::<()>();
    let admin_server = axum::serve(admin_listener, admin_router).with_graceful_shutdown(async {
        let _ = drained.await;
    });
    // Each serving thread gets its own upstream pool, so its connections stay on its thread.
    let states = (0..workers)
        .map(|_| {
            Ok(Arc::new(AppState {
                runtime: serving.clone(),
                upstream: Upstream::new(&args.upstream)?,
                metrics: metrics.clone(),
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let serving = Workers::start(public, states, args.limits(), phase.clone())?;
    let public_done = async move {
        serving.finished().await;
        let _ = drained_tx.send(());
    };
    // Requests in flight get a bounded time to finish; streams that do not end by then are cut.
    let deadline = async {
        shutdown::reached(phase, Phase::Stopping).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        r = async { tokio::join!(admin_server.into_future(), public_done).0 } => { r?; }
        () = deadline => tracing::warn!("drain period over; closing the remaining streams"),
    }
    // The lines of the requests served are written before the process ends.
    audit.finish().await;
    Ok(())
}

/// How long in-flight requests and streams may take to finish once the public port stops
/// accepting.
pub const DRAIN: Duration = Duration::from_secs(10);
