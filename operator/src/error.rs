//! The operator's error type.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (usually transient: retried with backoff).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A YAML or JSON document could not be read or written.
    #[error("serialization: {0}")]
    Serialization(String),
    /// A certificate or key could not be made or read.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A setting or annotation is invalid.
    #[error("{0}")]
    Invalid(String),
    /// An I/O error (files, sockets).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization(e.to_string())
    }
}

impl From<serde_norway::Error> for Error {
    fn from(e: serde_norway::Error) -> Self {
        Error::Serialization(e.to_string())
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
