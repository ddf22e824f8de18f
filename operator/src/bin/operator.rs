//! `mcp-warden-operator`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_warden_operator::operator_cli::run(mcp_warden_operator::operator_cli::Args::parse()).await
}
