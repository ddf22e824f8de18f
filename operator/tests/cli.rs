//! The user CLI: `mcp-warden crd` prints the committed CRD; `mcp-warden inject -f -` injects
//! from stdin and fails clearly on a missing policy.

use std::io::Write;
use std::process::{Command, Stdio};

fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: mcp, namespace: tools}
spec:
  selector: {matchLabels: {app: mcp}}
  template:
    metadata:
      labels: {app: mcp}
      annotations: {mcpwarden.dev/policy: corp-sso}
    spec:
      containers:
        - {name: app, image: "mcp:1", ports: [{containerPort: 8080}], x-unknown: kept}
"#;

const POLICY: &str = r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: corp-sso, namespace: tools}
spec:
  resource: {url: "https://mcp.example.com/mcp"}
  mode: jwt
  jwt: {issuer: "https://login.example.com"}
"#;

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let (ok, out, _) = cli(&["crd"], "");
    assert!(ok);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/mcpauthpolicies.yaml"
    ))
    .unwrap();
    assert_eq!(out, committed);
}

#[test]
fn inject_from_stdin_with_the_policy_in_the_stream() {
    let input = format!("{POLICY}---\n{DEPLOYMENT}");
    let (ok, out, err) = cli(&["inject", "-f", "-", "--native-sidecar", "false"], &input);
    assert!(ok, "{err}");
    assert!(err.contains("Deployment mcp: injected"), "{err}");
    let docs: Vec<serde_json::Value> = mcp_warden_operator::offline::parse_documents(&out).unwrap();
    assert_eq!(docs.len(), 2);
    let spec = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][1]["name"], "mcp-warden");
    assert_eq!(
        spec["containers"][0]["x-unknown"], "kept",
        "unknown fields survive"
    );
    assert_eq!(
        docs[1]["spec"]["template"]["metadata"]["labels"]["mcpwarden.dev/policy"],
        "corp-sso"
    );
    // Idempotent: injecting the output again changes nothing.
    let (ok, again, err) = cli(&["inject", "-f", "-", "--native-sidecar", "false"], &out);
    assert!(ok && err.contains("skipped (AlreadyInjected)"), "{err}");
    assert_eq!(again, out);
}

#[test]
fn jobs_are_warned_about_a_regular_container_sidecar() {
    let cron_job = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: tools}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {mcpwarden.dev/policy: corp-sso}
        spec:
          restartPolicy: OnFailure
          containers:
            - {name: app, image: "mcp:1", ports: [{containerPort: 8080}]}
"#;
    let input = format!("{POLICY}---\n{cron_job}");
    let (ok, out, err) = cli(&["inject", "-f", "-", "--native-sidecar", "false"], &input);
    assert!(ok, "{err}");
    assert!(
        err.contains("CronJob nightly: mcp-warden: the sidecar runs as a regular container"),
        "{err}"
    );
    assert!(!out.contains("ownerReferences"), "{out}");
    // Native sidecars end with the Job: no warning.
    let (ok, _, err) = cli(&["inject", "-f", "-", "--native-sidecar", "true"], &input);
    assert!(ok && !err.contains("never completes"), "{err}");
}

#[test]
fn inject_fails_clearly_without_the_policy() {
    let (ok, out, err) = cli(&["inject", "-f", "-"], DEPLOYMENT);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("McpAuthPolicy tools/corp-sso"), "{err}");
}

#[test]
fn render_prints_the_config_map_the_sidecar_reads() {
    let (ok, out, err) = cli(&["render", "-f", "-"], POLICY);
    assert!(ok, "{err}");
    let docs = mcp_warden_operator::offline::parse_documents(&out).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[0]["metadata"]["name"], "mcp-warden-corp-sso");
    assert_eq!(docs[0]["metadata"]["namespace"], "tools");
    let doc = mcp_warden_policy::PolicyDocument::from_yaml(
        docs[0]["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(doc.metadata.name, "corp-sso");
    let (ok, _, err) = cli(
        &["render", "-f", "-"],
        &POLICY.replace("mode: jwt", "mode: oauthProxy"),
    );
    assert!(!ok && err.contains("spec.oauthProxy: required"), "{err}");
}
