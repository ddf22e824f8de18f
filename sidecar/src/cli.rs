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
    /// Seconds a client has to send a request's headers, counted from when the connection opens
    /// and, on a keep-alive HTTP/1.1 connection, from the first byte of each later request.
    #[arg(long, env = "MCP_WARDEN_HEADER_READ_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,
    /// Seconds a client connection may stay open with no request in flight (an open SSE stream
    /// counts as in flight). Longer than the 60 s upstream keep-alive of common proxies, so the
    /// proxy in front closes first.
    #[arg(long, env = "MCP_WARDEN_IDLE_TIMEOUT", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,
    /// Client connections open at once on the public port; further connections are closed as
    /// soon as they are accepted.
    #[arg(long, env = "MCP_WARDEN_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Requests in flight at once on one HTTP/2 connection (HTTP/1.1 carries one at a time).
    #[arg(long, env = "MCP_WARDEN_MAX_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_streams_per_connection: u32,
    /// Largest request head accepted, in bytes: the request line and headers on HTTP/1.1, the
    /// header list on HTTP/2. Larger requests get 431.
    #[arg(long, env = "MCP_WARDEN_MAX_HEADER_BYTES", default_value_t = 32 * 1024,
          value_parser = clap::value_parser!(u64).range(8192..=1024 * 1024))]
    pub max_header_bytes: u64,
    /// Seconds the public port keeps accepting and serving after SIGTERM while `/readyz` already
    /// fails, so that endpoints and load balancers stop sending new connections first; then it
    /// stops accepting and drains (at most 10 s more). A second signal cuts the delay short.
    #[arg(long, env = "MCP_WARDEN_SHUTDOWN_DELAY", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_delay: u64,
    /// Log format.
    #[arg(
        long,
        env = "MCP_WARDEN_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

impl Args {
    /// The limits on client connections these flags set.
    pub fn limits(&self) -> crate::connection::Limits {
        use std::time::Duration;
        crate::connection::Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_streams: self.max_streams_per_connection,
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
        }
    }
}
