//! Command-line flags (each also readable from an `MCP_WARDEN_*` environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Log output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    Json,
    /// Human-readable.
    Text,
}

/// mcp-warden-sidecar: puts OAuth in front of an MCP server.
///
/// Verifies bearer tokens (jwt mode) and forwards authorised requests to the MCP server at
/// --upstream with their paths unchanged; unauthenticated clients get a 401 that tells them
/// where to obtain a token.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "mcp-warden-sidecar", version)]
pub struct Args {
    /// McpAuthPolicy YAML document (as given to `kubectl apply`); reloaded when it changes.
    #[arg(long, env = "MCP_WARDEN_POLICY")]
    pub policy: PathBuf,
    /// Base URL of the MCP server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "MCP_WARDEN_UPSTREAM")]
    pub upstream: String,
    /// Public listen address (clients and the ingress connect here).
    #[arg(long, env = "MCP_WARDEN_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Admin listen address: /metrics, /healthz, /readyz.
    #[arg(long, env = "MCP_WARDEN_ADMIN", default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Directory holding secrets as <secret name>/<key> files.
    #[arg(
        long,
        env = "MCP_WARDEN_SECRETS_DIR",
        default_value = "/etc/mcp-warden/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// Overrides spec.resource.url (the external URL clients use).
    #[arg(long, env = "MCP_WARDEN_RESOURCE_URL")]
    pub resource_url: Option<String>,
    /// Threads serving the public port (default: one per available CPU, container limits
    /// included, at most 4).
    #[arg(long, env = "MCP_WARDEN_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// How often the policy file is checked for changes, in seconds.
    #[arg(long, env = "MCP_WARDEN_RELOAD_INTERVAL", default_value_t = 2)]
    pub reload_interval: u64,
    /// Byte budget of the in-memory OAuth state store (oauthProxy mode without Redis). Once it
    /// is three quarters full, new registrations are refused (503); flows already under way
    /// keep the rest.
    #[arg(long, env = "MCP_WARDEN_MEMORY_STORE_BYTES", default_value_t = crate::store::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(usize))]
    pub memory_store_bytes: usize,
    /// Log format.
    #[arg(
        long,
        env = "MCP_WARDEN_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}
