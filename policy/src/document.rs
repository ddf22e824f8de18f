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
    /// Parses one YAML (or JSON) document and checks `apiVersion`, `kind` and the spec.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let doc: PolicyDocument =
            serde_norway::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if doc.api_version != API_VERSION || doc.kind != KIND {
            return Err(PolicyError::WrongKind {
                api_version: doc.api_version,
                kind: doc.kind,
            });
        }
        if doc.metadata.name.is_empty() {
            return Err(PolicyError::Parse("metadata.name is empty".into()));
        }
        doc.spec.validate()?;
        Ok(doc)
    }

    /// Serialises the document as YAML.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("policy documents always serialise")
    }
}
