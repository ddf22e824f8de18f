//! The Kubernetes API server's validation rules for the objects mcp-warden emits, as a test
//! tool. Schema validators (kubeconform and the like) check the OpenAPI schema only; the rules
//! here live in the API server's code (`pkg/apis/core/validation` and friends) and are what a
//! real cluster refuses objects for: port names longer than 15 characters, duplicate container
//! names, probes naming ports the container does not have, and so on.
//!
//! [`check`] takes any object as JSON (a Pod, a workload with a pod template, a ConfigMap,
//! Secret, Service, NetworkPolicy, webhook configuration, …) and returns every violation, each
//! written the way the API server words it:
//! `spec.containers[1].ports[1].name: Invalid value: "mcp-warden-admin": must be no more than
//! 15 characters`.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

mod config;
mod field;
mod meta;
mod netpol;
mod pod;
pub mod quantity;
mod service;
pub mod syntax;
mod webhook;

pub use field::Violation;
use field::{Errors, Path};

/// Every rule violation in `object`, a Kubernetes object as JSON. Kinds without specific
/// rules get the metadata checks only.
pub fn check(object: &Value) -> Vec<Violation> {
    let mut errs = Errors::default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let root = Path::root();
    meta::object_meta(
        &object["metadata"],
        name_rule(kind),
        &root.child("metadata"),
        &mut errs,
    );
    let spec = root.child("spec");
    match kind {
        "Pod" => pod::pod_spec(&object["spec"], &spec, &mut errs),
        "PodTemplate" => pod::template(&object["template"], &root.child("template"), &mut errs),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            pod::workload(&object["spec"], &spec, &mut errs)
        }
        "CronJob" => {
            let job = spec.child("jobTemplate").child("spec");
            pod::workload(&object["spec"]["jobTemplate"]["spec"], &job, &mut errs)
        }
        "ConfigMap" => config::config_map(object, &mut errs),
        "Secret" => config::secret(object, &mut errs),
        "Service" => service::service(&object["spec"], &spec, &mut errs),
        "NetworkPolicy" => netpol::network_policy(&object["spec"], &spec, &mut errs),
        "MutatingWebhookConfiguration" => webhook::configuration(object, true, &mut errs),
        "ValidatingWebhookConfiguration" => webhook::configuration(object, false, &mut errs),
        "List" => {
            for (i, item) in object["items"].as_array().into_iter().flatten().enumerate() {
                for v in check(item) {
                    errs.push(Violation::new(format!("items[{i}].{}", v.field), v.detail));
                }
            }
        }
        _ => {}
    }
    errs.into_vec()
}

/// Which name rule `metadata.name` follows for objects of `kind`.
fn name_rule(kind: &str) -> meta::NameRule {
    match kind {
        "Namespace" | "Service" => meta::NameRule::Label,
        // Role bindings and the like accept path segments; nothing here checks them.
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => meta::NameRule::Path,
        _ => meta::NameRule::Subdomain,
    }
}

/// One object of a multi-document stream and what is wrong with it.
#[derive(Debug)]
pub struct Report {
    /// `Kind namespace/name` of the object.
    pub object: String,
    /// Its violations (none when it passes).
    pub violations: Vec<Violation>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.violations {
            writeln!(f, "{}: {v}", self.object)?;
        }
        Ok(())
    }
}

/// `Kind namespace/name` of an object, for reports.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("<no kind>");
    let name = object["metadata"]["name"]
        .as_str()
        .or(object["metadata"]["generateName"].as_str())
        .unwrap_or("<no name>");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Splits a multi-document YAML (or JSON) stream into objects; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, serde_norway::Error> {
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(de)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Checks every object of a multi-document stream.
pub fn check_documents(docs: &[Value]) -> Vec<Report> {
    docs.iter()
        .map(|d| Report {
            object: describe(d),
            violations: check(d),
        })
        .collect()
}

/// Panics with every violation when `object` breaks a rule: for tests.
#[track_caller]
pub fn assert_valid(object: &Value) {
    let violations = check(object);
    assert!(
        violations.is_empty(),
        "{} would be refused by the API server:\n{}",
        describe(object),
        violations
            .iter()
            .map(|v| format!("  * {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
