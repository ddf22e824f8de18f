//! The `McpAuthPolicy` resource (`mcpwarden.dev/v1alpha1`), defined once for both halves of
//! mcp-warden: the operator serves it as a CRD, the sidecar reads the same YAML document from a
//! file. Nothing here talks to Kubernetes; the `kube` feature only adds the `CustomResource`
//! derive so the operator gets the typed `McpAuthPolicy` object.

mod document;
pub mod key_activation;
mod secret;
mod spec;
mod status;
mod validate;

pub use document::{
    API_VERSION, GROUP, KIND, PolicyDocument, PolicyMetadata, VERSION, from_value_with_unknown,
};
pub use secret::{SecretError, SecretRef};
pub use spec::*;
pub use status::{McpAuthPolicyStatus, PolicyCondition};
pub use validate::{MAX_TOOL_METRICS, PolicyError, ValidatedResource, is_loopback_host};

#[cfg(feature = "kube")]
pub use spec::McpAuthPolicy;
