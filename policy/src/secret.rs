//! References to Kubernetes Secret keys, resolved as files so that a pod (Secret volume) and a
//! local run (a plain directory) look the same to the sidecar.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the policy's namespace. The sidecar reads it from
/// `<secrets-dir>/<name>/<key>`, the layout a Secret volume mounted at `<secrets-dir>/<name>` has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference names a path that could escape the secrets directory.
    #[error("secret reference {name}/{key} is not a plain name (no '/', '..' or empty parts)")]
    BadName {
        /// Secret name as written.
        name: String,
        /// Key as written.
        key: String,
    },
    /// The file is missing or unreadable.
    #[error("cannot read secret {path}: {source}")]
    Read {
        /// The file that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn plain(part: &str) -> bool {
    !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0'])
}

impl SecretRef {
    /// The file this reference resolves to below `secrets_dir`.
    pub fn path(&self, secrets_dir: &Path) -> Result<PathBuf, SecretError> {
        if !plain(&self.name) || !plain(&self.key) {
            return Err(SecretError::BadName {
                name: self.name.clone(),
                key: self.key.clone(),
            });
        }
        Ok(secrets_dir.join(&self.name).join(&self.key))
    }

    /// Reads the secret value, without a single trailing newline (editors and `echo` add one).
    pub fn read(&self, secrets_dir: &Path) -> Result<String, SecretError> {
        let path = self.path(secrets_dir)?;
        let text =
            std::fs::read_to_string(&path).map_err(|source| SecretError::Read { path, source })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_secret_volume() {
        let dir = std::env::temp_dir().join(format!("mcpw-secret-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("gh")).unwrap();
        std::fs::write(dir.join("gh/client-secret"), "s3cret\n").unwrap();
        let r = SecretRef {
            name: "gh".into(),
            key: "client-secret".into(),
        };
        assert_eq!(r.read(&dir).unwrap(), "s3cret");
        let missing = SecretRef {
            name: "gh".into(),
            key: "nope".into(),
        };
        assert!(matches!(missing.read(&dir), Err(SecretError::Read { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_path_escapes() {
        for (name, key) in [("..", "k"), ("a/b", "k"), ("a", "../etc"), ("", "k")] {
            let r = SecretRef {
                name: name.into(),
                key: key.into(),
            };
            assert!(
                matches!(r.path(Path::new("/s")), Err(SecretError::BadName { .. })),
                "{name}/{key}"
            );
        }
    }
}
