//! Loads the policy file and keeps it current: a changed file is parsed, validated and built
//! into a new runtime before it replaces the old one, so an invalid edit never takes the
//! sidecar down — the previous policy keeps serving and the error is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_warden_policy::PolicyDocument;
use tokio::task::JoinHandle;

use crate::app::SharedRuntime;
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

/// Reads and builds the policy at `path`. Also returns the [`fingerprint`] it was built from.
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
    let seen = with_secrets(bytes, Some(&doc), &ctx.secrets_dir).await;
    let runtime = Runtime::build(doc, ctx).await.map_err(invalid)?;
    Ok((seen, runtime))
}

/// What a change is detected on: the policy file's bytes followed by the bytes of every secret
/// file the policy references, so a rotated signing or encryption key (a Secret volume update)
/// is picked up like a policy edit.
pub async fn fingerprint(path: &Path, secrets_dir: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = tokio::fs::read(path).await?;
    let doc = PolicyDocument::from_yaml(&String::from_utf8_lossy(&bytes)).ok();
    Ok(with_secrets(bytes, doc.as_ref(), secrets_dir).await)
}

async fn with_secrets(mut seen: Vec<u8>, doc: Option<&PolicyDocument>, dir: &Path) -> Vec<u8> {
    for reference in doc.map(|d| d.spec.secret_refs()).unwrap_or_default() {
        seen.push(0);
        if let Ok(file) = reference.path(dir) {
            // A missing file counts as empty: its appearance is a change too.
            seen.extend(tokio::fs::read(file).await.unwrap_or_default());
        }
    }
    seen
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

/// Polls `path` (and the secrets it references) every `interval` and swaps in valid changes.
pub async fn watch(
    path: PathBuf,
    interval: Duration,
    ctx: BuildContext,
    serving: SharedRuntime,
    mut current: Vec<u8>,
    mut refresh: Option<JoinHandle<()>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match fingerprint(&path, &ctx.secrets_dir).await {
            Ok(seen) if seen == current => continue,
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
            Ok((seen, runtime)) => {
                current = seen;
                warm_up(&runtime).await;
                if let Some(old) = refresh.take() {
                    old.abort();
                }
                refresh = spawn_refresh(&runtime);
                tracing::info!(policy = %runtime.policy, "policy reloaded");
                serving.store(Arc::new(runtime));
                record(FetchResult::Success);
            }
            Err(e) => {
                // Remember the bad content so the error is logged once per change, not every tick.
                if let Ok(seen) = fingerprint(&path, &ctx.secrets_dir).await {
                    current = seen;
                }
                tracing::error!(error = %e, "policy reload rejected; the previous policy stays in force");
                record(FetchResult::Error);
            }
        }
    }
}
