//! Runs every fuzz target's checks over its committed seed corpus (and any crash files kept as
//! regressions), so the targets build and hold on machines without cargo-fuzz.

use std::path::Path;

fn run(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        check(&std::fs::read(&path).expect("corpus file"));
        seen += 1;
    }
    assert!(seen > 0, "{} has no seeds", dir.display());
}

#[test]
fn bearer_jwt() {
    run("bearer_jwt", mcp_warden_fuzz::bearer_jwt);
}

#[test]
fn rpc_rules() {
    run("rpc_rules", mcp_warden_fuzz::rpc_rules);
}

#[test]
fn rpc_fast() {
    run("rpc_fast", mcp_warden_fuzz::rpc_fast);
}

#[test]
fn redirect_uri() {
    run("redirect_uri", mcp_warden_fuzz::redirect_uri);
}

#[test]
fn dcr_body() {
    run("dcr_body", mcp_warden_fuzz::dcr_body);
}

#[test]
fn cimd_document() {
    run("cimd_document", mcp_warden_fuzz::cimd_document);
}

#[test]
fn policy_document() {
    run("policy_document", mcp_warden_fuzz::policy_document);
}

#[test]
fn challenge_metadata() {
    run("challenge_metadata", mcp_warden_fuzz::challenge_metadata);
}

#[test]
fn app_response() {
    run("app_response", mcp_warden_fuzz::app_response);
}

#[test]
fn client_request() {
    run("client_request", mcp_warden_fuzz::client_request);
}
