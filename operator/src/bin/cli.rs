//! `mcp-warden`: the user CLI (offline injection, CRD output).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_warden_operator::inject::InjectSettings;
use mcp_warden_operator::offline;

/// mcp-warden command-line tools.
#[derive(Parser)]
#[command(name = "mcp-warden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inject the mcp-warden sidecar into Deployments, StatefulSets, DaemonSets, Jobs, CronJobs
    /// and Pods of a multi-document YAML file and print the result (GitOps, no webhook).
    /// Workloads whose pod template carries the `mcpwarden.dev/policy` annotation are injected;
    /// the policy is read from the same file or from `--policy`.
    Inject {
        /// Manifest file, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Extra files holding the McpAuthPolicy documents the workloads name.
        #[arg(short = 'p', long = "policy")]
        policies: Vec<PathBuf>,
        /// Sidecar image.
        #[arg(long, env = "MCP_WARDEN_SIDECAR_IMAGE")]
        sidecar_image: Option<String>,
        /// Inject a native sidecar (Kubernetes 1.29+); `false` adds a regular container.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        native_sidecar: bool,
    },
    /// Print the McpAuthPolicy CustomResourceDefinition.
    Crd,
    /// Print the sidecar ConfigMap (`mcp-warden-<policy>`) the operator would write for each
    /// McpAuthPolicy in a file, for GitOps setups that do not run the operator. Key Secrets of
    /// oauthProxy policies are not rendered (private keys do not belong in git): name your own
    /// in `signingKeySecretRef`/`encryptionKeySecretRef`, or let the operator manage them.
    Render {
        /// File with McpAuthPolicy documents, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-warden: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => print!("{}", mcp_warden_operator::crd::crd_yaml()),
        Command::Render { file } => {
            let docs = offline::parse_documents(&read_input(&file)?)?;
            let policies = offline::policies_in(&docs)?;
            anyhow::ensure!(!policies.is_empty(), "no McpAuthPolicy in {file}");
            let mut out = Vec::new();
            for policy in &policies {
                if let Err(e) = policy.spec.validate() {
                    anyhow::bail!("McpAuthPolicy {}: {e}", kube::ResourceExt::name_any(policy));
                }
                let (config_map, _) = mcp_warden_operator::render::config_map(policy, None);
                out.push(serde_json::to_value(config_map)?);
            }
            print!("{}", offline::to_yaml_stream(&out)?);
        }
        Command::Inject {
            file,
            policies,
            sidecar_image,
            native_sidecar,
        } => {
            let input = read_input(&file)?;
            let mut extra = Vec::new();
            for path in policies {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                extra.extend(offline::policies_in(&offline::parse_documents(&text)?)?);
            }
            let mut settings = InjectSettings {
                native_sidecar,
                ..Default::default()
            };
            if let Some(image) = sidecar_image {
                settings.sidecar_image = image;
            }
            let docs = offline::parse_documents(&input)?;
            let (docs, report) = offline::inject_documents(docs, &extra, &settings)?;
            for line in report {
                eprintln!("{line}");
            }
            print!("{}", offline::to_yaml_stream(&docs)?);
        }
    }
    Ok(())
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))
    }
}
