//! The whole YAML document a user applies, as the sidecar reads it from a file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::McpAuthPolicySpec;
use crate::validate::PolicyError;

/// API group of the resource.
pub const GROUP: &str = "mcpwarden.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` field value.
pub const API_VERSION: &str = "mcpwarden.dev/v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "McpAuthPolicy";

/// An `McpAuthPolicy` document: exactly what `kubectl apply` takes, and what the operator renders
/// into the sidecar's ConfigMap. `status` and unknown `metadata` fields are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDocument {
    /// Must be `mcpwarden.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `McpAuthPolicy`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: PolicyMetadata,
    /// The policy.
    pub spec: McpAuthPolicySpec,
}

/// The parts of `metadata` the sidecar uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyMetadata {
    /// Policy name; the `policy` label of the sidecar's metrics.
    pub name: String,
    /// Namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl PolicyDocument {
    /// Parses one YAML (or JSON) document and checks `apiVersion`, `kind` and the spec. Files
    /// are read strictly: an unknown field under `spec` (a typo, or a field of a newer version)
    /// is an error naming its path. (The operator reads the custom resource leniently instead,
    /// see [`from_value_with_unknown`].)
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let mut unknown = Vec::new();
        let doc: PolicyDocument =
            serde_ignored::deserialize(serde_norway::Deserializer::from_str(text), |path| {
                unknown.push(dotted(&path))
            })
            .map_err(|e| PolicyError::Parse(e.to_string()))?;
        // `status` and extra `metadata` (labels, uid, …) are not the sidecar's business.
        unknown.retain(|p| p.starts_with("spec."));
        if !unknown.is_empty() {
            return Err(PolicyError::Parse(format!(
                "unknown field(s) {}",
                unknown.join(", ")
            )));
        }
        if doc.api_version != API_VERSION || doc.kind != KIND {
            return Err(PolicyError::WrongKind {
                api_version: doc.api_version,
                kind: doc.kind,
            });
        }
        if doc.metadata.name.is_empty() {
            return Err(PolicyError::Parse("metadata.name is empty".into()));
        }
        if doc.metadata.name.len() > 63 {
            return Err(PolicyError::Parse(
                "metadata.name must be at most 63 characters: it becomes the value of the \
                 mcpwarden.dev/policy label"
                    .into(),
            ));
        }
        doc.spec.validate()?;
        Ok(doc)
    }

    /// Serialises the document as YAML.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("policy documents always serialise")
    }
}

/// `spec.jwt.issuer` for a path (without the `?` segments `serde_ignored` writes for options).
fn dotted(path: &serde_ignored::Path) -> String {
    path.to_string()
        .split('.')
        .filter(|s| *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// Deserialises `value` leniently, returning the dotted paths of the fields it ignored (fields
/// of a newer version of the type). For custom resources, which the API server has already
/// checked against the installed CRD's schema.
pub fn from_value_with_unknown<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<(T, Vec<String>), serde_json::Error> {
    let mut unknown = Vec::new();
    let parsed = serde_ignored::deserialize(value, |path| unknown.push(dotted(&path)))?;
    Ok((parsed, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: p, labels: {a: b}}
spec:
  resource: {url: "https://mcp.example.com/mcp"}
  mode: jwt
  jwt: {issuer: "https://login.example.com"}
status: {}
"#;

    #[test]
    fn files_are_strict_about_spec_fields_only() {
        assert!(PolicyDocument::from_yaml(DOC).is_ok());
        let typo = DOC.replace("issuer:", "issuer: \"https://login.example.com\", isuer:");
        let err = PolicyDocument::from_yaml(&typo).unwrap_err().to_string();
        assert!(err.contains("spec.jwt.isuer"), "{err}");
    }

    #[test]
    fn values_report_the_fields_they_ignore() {
        let value = serde_json::json!({
            "resource": {"url": "https://mcp.example.com/mcp", "futureField": 1},
            "mode": "jwt",
            "jwt": {"issuer": "https://login.example.com"},
            "newSection": {"x": true}
        });
        let (spec, unknown): (McpAuthPolicySpec, _) = from_value_with_unknown(value).unwrap();
        assert_eq!(spec.jwt.unwrap().issuer, "https://login.example.com");
        assert_eq!(unknown, ["newSection", "resource.futureField"]);
    }
}
