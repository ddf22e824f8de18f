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
/// is picked up like a policy edit. The policy is parsed for its secret files only when its
/// bytes differ from the last poll's: polling an unchanged policy reads files and nothing more.
#[derive(Default)]
struct Watched {
    /// The policy file's bytes at the last poll.
    policy: Vec<u8>,
    /// The secret files that policy references (`None`: a reference with an invalid name).
    secrets: Vec<Option<PathBuf>>,
    /// How often the policy was parsed.
    #[cfg(test)]
    parses: usize,
}

impl Watched {
    /// Reads the files (blocking) and returns their fingerprint.
    fn read(&mut self, path: &Path, secrets_dir: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        if bytes != self.policy {
            #[cfg(test)]
            {
                self.parses += 1;
            }
            let doc = PolicyDocument::from_yaml(&String::from_utf8_lossy(&bytes)).ok();
            self.secrets = secret_files(doc.as_ref(), secrets_dir);
            self.policy = bytes;
        }
        let mut seen = self.policy.clone();
        for file in &self.secrets {
            seen.push(0);
            if let Some(file) = file {
                // A missing file counts as empty: its appearance is a change too.
                seen.extend(std::fs::read(file).unwrap_or_default());
            }
        }
        Ok(seen)
    }

    /// [`Watched::read`] on a blocking thread (one hand-off per poll, whatever the files).
    async fn poll(&mut self, path: &Path, secrets_dir: &Path) -> std::io::Result<Vec<u8>> {
        let (mut watched, path, dir) = (
            std::mem::take(self),
            path.to_owned(),
            secrets_dir.to_owned(),
        );
        let (watched, seen) = tokio::task::spawn_blocking(move || {
            let seen = watched.read(&path, &dir);
            (watched, seen)
        })
        .await
        .map_err(std::io::Error::other)?;
        *self = watched;
        seen
    }
}

fn secret_files(doc: Option<&PolicyDocument>, dir: &Path) -> Vec<Option<PathBuf>> {
    doc.map(|d| d.spec.secret_refs())
        .unwrap_or_default()
        .into_iter()
        .map(|reference| reference.path(dir).ok())
        .collect()
}

async fn with_secrets(mut seen: Vec<u8>, doc: Option<&PolicyDocument>, dir: &Path) -> Vec<u8> {
    for file in secret_files(doc, dir) {
        seen.push(0);
        if let Some(file) = file {
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
    let mut watched = Watched::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match watched.poll(&path, &ctx.secrets_dir).await {
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
                if let Ok(seen) = watched.poll(&path, &ctx.secrets_dir).await {
                    current = seen;
                }
                tracing::error!(error = %e, "policy reload rejected; the previous policy stays in force");
                record(FetchResult::Error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(issuer: &str) -> String {
        format!(
            r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {{name: p}}
spec:
  resource: {{url: "https://mcp.example.com/mcp"}}
  mode: jwt
  jwt:
    issuer: {issuer}
    introspection: {{clientId: w, clientSecretRef: {{name: s, key: k}}}}
"#
        )
    }

    #[test]
    fn an_unchanged_policy_is_not_parsed_again_and_its_secrets_are_still_watched() {
        let dir = std::env::temp_dir().join(format!("mcp-warden-watched-{}", std::process::id()));
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(secrets.join("s")).unwrap();
        let path = dir.join("policy.yaml");
        std::fs::write(&path, policy("https://a.example.com")).unwrap();
        let mut watched = Watched::default();
        let first = watched.read(&path, &secrets).unwrap();
        assert_eq!(watched.read(&path, &secrets).unwrap(), first);
        assert_eq!(watched.read(&path, &secrets).unwrap(), first);
        assert_eq!(watched.parses, 1);
        // The secret file appears, then changes: both seen without parsing the policy again.
        std::fs::write(secrets.join("s").join("k"), "one").unwrap();
        let with_secret = watched.read(&path, &secrets).unwrap();
        assert_ne!(with_secret, first);
        std::fs::write(secrets.join("s").join("k"), "two").unwrap();
        assert_ne!(watched.read(&path, &secrets).unwrap(), with_secret);
        assert_eq!(watched.parses, 1);
        // An edit of the policy is parsed (and still carries the secret).
        std::fs::write(&path, policy("https://b.example.com")).unwrap();
        let edited = watched.read(&path, &secrets).unwrap();
        assert!(edited.ends_with(b"\0two"), "{edited:?}");
        assert_eq!(watched.parses, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
