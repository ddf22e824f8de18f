//! `mcp-warden inject`: the webhook's injection applied to manifests on disk, for GitOps
//! users who do not run the webhook.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use mcp_warden_policy::{KIND, McpAuthPolicy};
use serde::Deserialize;
use serde_json::Value;

use crate::inject::{InjectSettings, Outcome, pod_from_template, review};
use crate::names::POLICY_ANNOTATION;
use crate::{Error, Result};

/// Splits a multi-document YAML stream into JSON values (empty documents dropped).
pub fn parse_documents(input: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(input).enumerate() {
        let value = Value::deserialize(de)
            .map_err(|e| Error::Serialization(format!("document {}: {e}", i + 1)))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Reads the `McpAuthPolicy` documents among `docs`.
pub fn policies_in(docs: &[Value]) -> Result<Vec<McpAuthPolicy>> {
    docs.iter()
        .filter(|d| d["kind"] == KIND)
        .map(|d| {
            serde_json::from_value(d.clone())
                .map_err(|e| Error::Serialization(format!("McpAuthPolicy: {e}")))
        })
        .collect()
}

/// Where the pod template sits in a workload of this kind, if it has one.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects the sidecar into every workload whose pod template names a policy
/// (`mcpwarden.dev/policy`); policies come from `docs` themselves and `extra`.
/// Returns the documents and one line per workload saying what happened.
pub fn inject_documents(
    mut docs: Vec<Value>,
    extra: &[McpAuthPolicy],
    settings: &InjectSettings,
) -> Result<(Vec<Value>, Vec<String>)> {
    let mut policies = policies_in(&docs)?;
    policies.extend_from_slice(extra);
    let mut report = Vec::new();
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let Some(path) = template_path(&kind) else {
            continue;
        };
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        let namespace = doc["metadata"]["namespace"].as_str().map(str::to_owned);
        let Some(template) = doc.pointer_mut(path) else {
            continue;
        };
        let wants = template["metadata"]["annotations"][POLICY_ANNOTATION].is_string();
        let pod = if path.is_empty() {
            serde_json::from_value::<Pod>(template.clone())
        } else {
            serde_json::from_value(template["metadata"].clone())
                .and_then(|meta| Ok((meta, serde_json::from_value(template["spec"].clone())?)))
                .map(|(meta, spec)| pod_from_template(meta, spec, namespace.clone()))
        }
        .map_err(|e| Error::Serialization(format!("{kind} {name}: {e}")))?;
        let mut pod = pod;
        if matches!(kind.as_str(), "Job" | "CronJob") && pod.metadata.owner_references.is_none() {
            // The pods of this template will belong to a Job: the injector then warns when a
            // regular-container sidecar would keep them from completing. Present before and
            // after injection, the reference is not part of the patch.
            pod.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.clone(),
                uid: String::new(),
                ..Default::default()
            }]);
        }
        let ns = namespace.clone().unwrap_or_else(|| "default".into());
        let candidates: Vec<McpAuthPolicy> = policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref().is_none_or(|pns| pns == ns))
            .cloned()
            .collect();
        match review(&pod, wants, &candidates, settings) {
            Outcome::Skipped(skip) => report.push(format!("{kind} {name}: skipped ({skip:?})")),
            Outcome::Denied(why) => {
                return Err(Error::Invalid(format!("{kind} {name}: {why}")));
            }
            Outcome::Injected {
                patch, warnings, ..
            } => {
                report.extend(warnings.iter().map(|w| format!("{kind} {name}: {w}")));
                // Pods hold their template at the root; workloads under spec.template, whose
                // JSON mirrors a pod's metadata and spec, so the same patch applies.
                let mut target = if path.is_empty() {
                    template.clone()
                } else {
                    serde_json::json!({
                        "metadata": template["metadata"].clone(),
                        "spec": template["spec"].clone(),
                    })
                };
                json_patch::patch(&mut target, &patch)
                    .map_err(|e| Error::Invalid(format!("{kind} {name}: {e}")))?;
                if path.is_empty() {
                    *template = target;
                } else {
                    template["metadata"] = target["metadata"].take();
                    template["spec"] = target["spec"].take();
                }
                report.push(format!("{kind} {name}: injected"));
            }
        }
    }
    Ok((docs, report))
}

/// Writes documents back as a multi-document YAML stream.
pub fn to_yaml_stream(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(doc)?);
    }
    Ok(out)
}
