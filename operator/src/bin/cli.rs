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
    /// Probe a deployed MCP endpoint the way a client does (401 challenge, protected-resource
    /// and authorization server metadata, JWKS, CORS; with `--token` the token's claims and an
    /// `initialize` call) and explain each finding. Exits 0 only when no check fails.
    Doctor {
        /// The MCP endpoint URL, exactly as clients are configured with it.
        url: String,
        /// An access token to check (decoded, not trusted) and to call `initialize` with.
        #[arg(long, env = "MCP_WARDEN_DOCTOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Browser origin for the CORS checks (default: the MCP Inspector's).
        #[arg(long, default_value = "http://localhost:6274")]
        origin: String,
        /// Timeout of each request, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// `doctor` report formats.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    /// One line per check.
    Text,
    /// The same checks as a JSON object.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Doctor {
        url,
        token,
        output,
        origin,
        timeout,
    } = cli.command
    {
        return doctor(url, token, output, origin, timeout);
    }
    match run(cli) {
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
        Command::Doctor { .. } => unreachable!("handled in main"),
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

fn doctor(
    url: String,
    token: Option<String>,
    output: Output,
    origin: String,
    timeout: u64,
) -> ExitCode {
    mcp_warden_operator::install_crypto_provider();
    let options = mcp_warden_operator::doctor::Options {
        url,
        token,
        origin,
        timeout: std::time::Duration::from_secs(timeout),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-warden: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(mcp_warden_operator::doctor::run(&options));
    match output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        ),
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
