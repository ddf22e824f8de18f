//! `mcp-warden-operator`: see `--help`.

use std::time::Duration;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = mcp_warden_operator::operator_cli::Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(mcp_warden_operator::operator_cli::run(args));
    // Whatever is still open (connections, watches, a blocking DNS lookup) must not delay exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}
