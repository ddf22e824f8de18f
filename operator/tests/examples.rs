//! The example manifests: valid policies pass the CRD's CEL rules and the operator's own
//! validation; invalid ones are rejected with the documented message; the example Deployment
//! injects offline. (Schema-level checks run in tests/operator/test_examples.py.)

use std::path::{Path, PathBuf};

use mcp_warden_operator::inject::InjectSettings;
use mcp_warden_operator::offline;
use mcp_warden_policy::PolicyDocument;
use serde_json::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn schema() -> Value {
    let crd = serde_json::to_value(mcp_warden_operator::crd::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn header(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("no `# {key}:` line"))
        .trim()
        .to_owned()
}

#[test]
fn valid_policies_pass_cel_rules_and_validation() {
    let schema = schema();
    let mut checked = 0;
    for path in yaml_files(&examples()) {
        if path.components().any(|c| c.as_os_str() == "invalid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in offline::parse_documents(&text).unwrap() {
            if doc["kind"] != "McpAuthPolicy" {
                continue;
            }
            let yaml = serde_norway::to_string(&doc).unwrap();
            PolicyDocument::from_yaml(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            kube_cel::validate(&schema, &doc, None)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example policies found");
}

#[test]
fn invalid_policies_are_rejected() {
    let schema = schema();
    let files = yaml_files(&examples().join("invalid"));
    assert!(files.len() >= 5);
    let mut cel = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            PolicyDocument::from_yaml(&text).is_err(),
            "{} passes the operator's validation",
            path.display()
        );
        if header(&text, "rejected-by") != "cel" {
            continue;
        }
        let expect = header(&text, "expect");
        let doc = &offline::parse_documents(&text).unwrap()[0];
        let errors = kube_cel::validate(&schema, doc, None)
            .expect_err(&format!("{} passes the CEL rules", path.display()));
        let messages: Vec<String> = errors
            .as_slice()
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert!(
            messages.iter().any(|m| m.contains(&expect)),
            "{}: {messages:?} lacks {expect:?}",
            path.display()
        );
        cel += 1;
    }
    assert!(cel >= 4);
}

#[test]
fn example_deployment_injects_offline() {
    let policies = offline::policies_in(
        &offline::parse_documents(
            &std::fs::read_to_string(examples().join("policies/jwt-corp-sso.yaml")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let docs = offline::parse_documents(
        &std::fs::read_to_string(examples().join("workloads/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let (docs, report) =
        offline::inject_documents(docs, &policies, &InjectSettings::default()).unwrap();
    assert_eq!(report, ["Deployment mcp-server: injected"]);
    let spec = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(spec["initContainers"][0]["name"], "mcp-warden");
    assert_eq!(spec["initContainers"][0]["ports"][0]["name"], "http");
    assert_eq!(spec["containers"][0]["ports"][0]["name"], "app-http");
    assert_eq!(
        spec["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "app-http"
    );
    let args: Vec<&str> = spec["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--resource-url"));
    // The Service is passed through untouched.
    assert_eq!(docs[1]["spec"]["ports"][0]["targetPort"], "http");
}

/// Every example policy and workload, injected natively and as a plain container, and the
/// ConfigMap each policy renders to: objects the API server accepts.
#[test]
fn example_manifests_and_their_injection_pass_the_api_server_rules() {
    let mut policies = Vec::new();
    let mut workloads = Vec::new();
    for path in yaml_files(&examples()) {
        if path.components().any(|c| c.as_os_str() == "invalid") {
            continue;
        }
        let docs = offline::parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for doc in &docs {
            k8s_rules::assert_valid(doc);
        }
        policies.extend(offline::policies_in(&docs).unwrap());
        if docs.iter().any(|d| d["kind"] != "McpAuthPolicy") {
            workloads.push((path, docs));
        }
    }
    for policy in &policies {
        let (config_map, _) = mcp_warden_operator::render::config_map(policy, None);
        k8s_rules::assert_valid(&serde_json::to_value(config_map).unwrap());
    }
    let mut injected = 0;
    for native in [true, false] {
        let settings = InjectSettings {
            native_sidecar: native,
            ..Default::default()
        };
        for (path, docs) in &workloads {
            let (out, report) = offline::inject_documents(docs.clone(), &policies, &settings)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for doc in &out {
                k8s_rules::assert_valid(doc);
            }
            injected += report.iter().filter(|r| r.ends_with("injected")).count();
        }
    }
    assert!(injected >= 2, "only {injected} example workloads injected");
}
