//! McpAuthPolicy objects as the API server stores them, read one at a time. A policy this
//! operator cannot decode (version skew between the CRD and the operator, a value the CRD's
//! schema admits but the Rust types do not) becomes an [`Unreadable`] entry naming the field,
//! instead of failing the LIST or WATCH that carried it, and so every other policy with it.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use mcp_warden_policy::{McpAuthPolicy, from_value_with_unknown};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Why a stored policy cannot be read: the field and serde's complaint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Unreadable {
    /// Dotted path of the offending field (`spec.mode`, `spec.resource.url`), `.` for the root.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads one policy leniently: fields this operator does not know are ignored and returned
/// (dotted paths), anything else wrong fails with the path of the offending field.
pub fn read(value: Value) -> Result<(McpAuthPolicy, Vec<String>), Unreadable> {
    from_value_with_unknown(value.clone()).map_err(|e| {
        // Decode again, only to learn where it failed.
        match serde_path_to_error::deserialize::<_, McpAuthPolicy>(value) {
            Err(located) => Unreadable {
                path: located.path().to_string(),
                message: located.into_inner().to_string(),
            },
            Ok(_) => Unreadable {
                path: ".".into(),
                message: e.to_string(),
            },
        }
    })
}

/// One McpAuthPolicy as stored, decoded on its own. Its deserialization never fails (for any
/// JSON object), so a watch of these survives an object this operator cannot read.
#[derive(Clone, Debug)]
pub struct StoredPolicy {
    metadata: ObjectMeta,
    /// The policy, or why this operator cannot read it.
    pub policy: Result<McpAuthPolicy, Unreadable>,
}

impl StoredPolicy {
    /// Decodes `value` (an McpAuthPolicy object as JSON).
    pub fn from_value(value: Value) -> Self {
        match read(value.clone()) {
            Ok((policy, _)) => Self {
                metadata: policy.metadata.clone(),
                policy: Ok(policy),
            },
            Err(e) => Self {
                metadata: metadata_of(&value),
                policy: Err(e),
            },
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

impl From<McpAuthPolicy> for StoredPolicy {
    fn from(policy: McpAuthPolicy) -> Self {
        Self {
            metadata: policy.metadata.clone(),
            policy: Ok(policy),
        }
    }
}

/// The object's metadata; should even that not decode, its name and namespace (what the
/// caches key it by).
fn metadata_of(value: &Value) -> ObjectMeta {
    let meta = &value["metadata"];
    serde_json::from_value(meta.clone()).unwrap_or_else(|_| {
        let text = |k: &str| meta[k].as_str().map(str::to_owned);
        ObjectMeta {
            name: text("name"),
            namespace: text("namespace"),
            uid: text("uid"),
            resource_version: text("resourceVersion"),
            ..Default::default()
        }
    })
}

impl<'de> Deserialize<'de> for StoredPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from_value)
    }
}

impl fmt::Display for StoredPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl Resource for StoredPolicy {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        McpAuthPolicy::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        McpAuthPolicy::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        McpAuthPolicy::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        McpAuthPolicy::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: Value) -> Value {
        json!({"apiVersion": "mcpwarden.dev/v1alpha1", "kind": "McpAuthPolicy",
               "metadata": {"name": "p", "namespace": "tools"}, "spec": spec})
    }

    #[test]
    fn names_the_field_it_cannot_read() {
        let stored: StoredPolicy = serde_json::from_value(object(json!({
            "resource": {"url": "https://mcp.example.com/mcp"}, "mode": "mtls"
        })))
        .unwrap();
        assert_eq!(stored.key(), "tools/p");
        let e = stored.policy.unwrap_err();
        assert_eq!(e.path, "spec.mode");
        assert!(e.message.contains("mtls"), "{e}");
    }

    #[test]
    fn reports_unknown_fields_and_reads_the_rest() {
        let (policy, unknown) = read(object(json!({
            "resource": {"url": "https://mcp.example.com/mcp"}, "mode": "jwt",
            "jwt": {"issuer": "https://login.example.com", "future": 1}
        })))
        .unwrap();
        assert_eq!(policy.metadata.name.as_deref(), Some("p"));
        assert!(
            unknown.contains(&"spec.jwt.future".to_owned()),
            "{unknown:?}"
        );
    }

    #[test]
    fn keeps_name_and_namespace_of_broken_metadata() {
        let mut value = object(json!({}));
        value["metadata"]["labels"] = json!(["not", "a", "map"]);
        let stored = StoredPolicy::from_value(value);
        assert_eq!(stored.key(), "tools/p");
        assert!(stored.policy.is_err());
    }
}
