//! The committed CRD equals the generated one, and it is a structural schema an API server
//! accepts. `UPDATE_GOLDEN=1 cargo test -p mcp-warden-operator --test crd` rewrites the file.

use std::path::PathBuf;

use mcp_warden_operator::crd::{crd, crd_yaml};
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/mcpauthpolicies.yaml")
}

#[test]
fn committed_crd_is_up_to_date() {
    let generated = crd_yaml();
    let path = committed_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/mcpauthpolicies.yaml is stale: run `cargo run -p mcp-warden-operator --bin \
         mcp-warden -- crd > crds/mcpauthpolicies.yaml` (or UPDATE_GOLDEN=1 cargo test)"
    );
}

/// The rules of a structural schema (apiextensions.k8s.io/v1) that generated schemas can break.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for banned in [
        "$ref",
        "definitions",
        "$defs",
        "oneOf",
        "allOf",
        "anyOf",
        "not",
    ] {
        if obj.contains_key(banned) {
            problems.push(format!("{path}: has {banned}"));
        }
    }
    let preserve = obj.contains_key("x-kubernetes-preserve-unknown-fields")
        || obj.contains_key("x-kubernetes-int-or-string");
    if !obj.contains_key("type") && !preserve {
        problems.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if obj.contains_key("description") && obj["description"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{path}: empty description"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            check_structural(child, &format!("{path}.{name}"), problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key).filter(|c| c.is_object()) {
            check_structural(child, &format!("{path}[{key}]"), problems);
        }
    }
}

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn schema_is_structural() {
    let mut problems = Vec::new();
    check_structural(&schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn crd_has_status_printer_columns_and_cel_rules() {
    let crd = serde_json::to_value(crd()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "mcpap");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert!(v["subresources"]["status"].is_object());
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Mode", "Issuer", "Ready", "Bound", "Age"] {
        assert!(columns.contains(&want), "{columns:?}");
    }
    let spec = &schema()["properties"]["spec"];
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"self.mode != 'jwt' || has(self.jwt)"));
    assert!(rules.contains(&"self.mode != 'oauthProxy' || has(self.oauthProxy)"));
    // `kubectl explain` text comes from the doc comments.
    let mode = spec["properties"]["mode"]["description"].as_str().unwrap();
    assert!(mode.contains("oauthProxy"), "{mode}");
    let root_rules = schema()["x-kubernetes-validations"].to_string();
    assert!(
        root_rules.contains("self.metadata.name.size() <= 63"),
        "{root_rules}"
    );
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}
