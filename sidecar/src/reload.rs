//! Loads the policy file and keeps it current: a changed file is parsed, validated and built
//! into a new runtime before it replaces the old one, so an invalid edit never takes the
//! sidecar down — the previous policy keeps serving and the error is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_warden_policy::PolicyDocument;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::metrics::{FetchResult, ReloadLabels};
use crate::runtime::{BuildContext, Runtime, RuntimeError};

/// Why the policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy is invalid.
    #[error("policy file {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: RuntimeError,
    },
}

/// Reads and builds the policy at `path`.
pub async fn load(path: &Path, ctx: &BuildContext) -> Result<(Vec<u8>, Runtime), LoadError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
    let invalid = |source: RuntimeError| LoadError::Invalid {
        path: path.into(),
        source,
    };
    let text = String::from_utf8_lossy(&bytes);
    let doc = PolicyDocument::from_yaml(&text).map_err(|e| invalid(e.into()))?;
    let runtime = Runtime::build(doc, ctx).await.map_err(invalid)?;
    Ok((bytes, runtime))
}

/// Fetches a new runtime's keys once (bounded) so a reload does not open a window without keys.
pub async fn warm_up(runtime: &Runtime) {
    if let Some(source) = runtime.verifier.remote() {
        let _ = tokio::time::timeout(Duration::from_secs(5), source.refresh()).await;
    }
}

/// Starts the key refresh loop of a runtime, if it has remote keys.
pub fn spawn_refresh(runtime: &Runtime) -> Option<JoinHandle<()>> {
    runtime
        .verifier
        .remote()
        .map(|source| tokio::spawn(source.clone().run_refresh_loop()))
}

/// Polls `path` every `interval` and swaps in valid changes.
pub async fn watch(
    path: PathBuf,
    interval: Duration,
    ctx: BuildContext,
    state: Arc<AppState>,
    mut current: Vec<u8>,
    mut refresh: Option<JoinHandle<()>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::fs::read(&path).await {
            Ok(bytes) if bytes == current => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the policy file; keeping the current policy");
                continue;
            }
        }
        let record = |result| {
            ctx.metrics
                .reloads
                .get_or_create(&ReloadLabels { result })
                .inc()
        };
        match load(&path, &ctx).await {
            Ok((bytes, runtime)) => {
                current = bytes;
                warm_up(&runtime).await;
                if let Some(old) = refresh.take() {
                    old.abort();
                }
                refresh = spawn_refresh(&runtime);
                tracing::info!(policy = %runtime.policy, "policy reloaded");
                state.runtime.store(Arc::new(runtime));
                record(FetchResult::Success);
            }
            Err(e) => {
                // Remember the bad content so the error is logged once per change, not every tick.
                if let Ok(bytes) = tokio::fs::read(&path).await {
                    current = bytes;
                }
                tracing::error!(error = %e, "policy reload rejected; the previous policy stays in force");
                record(FetchResult::Error);
            }
        }
    }
}
