//! `mcp-warden-sidecar` binary: parses flags, sets up logging, runs the server.

use clap::Parser;
use mcp_warden_sidecar::cli::{Args, LogFormat};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    // Before any async runtime: the OTLP exporter's blocking HTTP client runs its own.
    let _traces = match mcp_warden_sidecar::telemetry::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("mcp-warden-sidecar: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Housekeeping (policy reloads, key refreshes, the admin port, accepting connections) runs
    // here; requests are served on the threads `workers` starts.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-warden-sidecar: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mcp_warden_sidecar::server::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mcp-warden-sidecar stopped");
            eprintln!("mcp-warden-sidecar: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
