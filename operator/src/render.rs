//! Renders the sidecar's configuration (a `PolicyDocument`) from an `McpAuthPolicy`.

use std::collections::BTreeSet;

use aws_lc_rs::digest;
use kube::ResourceExt;
use mcp_warden_policy::{
    API_VERSION, AuthMode, KIND, McpAuthPolicy, McpAuthPolicySpec, PolicyDocument, PolicyMetadata,
    SecretRef,
};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::names::{POLICY_KEY, POLICY_LABEL, config_map_name, keys_secret_name};

/// Key of the signing keys in the operator-managed keys Secret.
pub const SIGNING_KEY: &str = "signing.pem";
/// Key of the encryption keys in the operator-managed keys Secret.
pub const ENCRYPTION_KEY: &str = "encryption.keys";

/// The document the sidecar reads: the policy's spec, with the operator-managed key Secret
/// filled in for `oauthProxy` mode when the user left the references empty.
pub fn render_document(policy: &McpAuthPolicy) -> PolicyDocument {
    let name = policy.name_any();
    PolicyDocument {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: PolicyMetadata {
            name: name.clone(),
            namespace: policy.namespace(),
        },
        spec: effective_spec(&name, &policy.spec),
    }
}

/// The spec with defaults the operator supplies (managed key references).
pub fn effective_spec(name: &str, spec: &McpAuthPolicySpec) -> McpAuthPolicySpec {
    let mut spec = spec.clone();
    if spec.mode == AuthMode::OauthProxy
        && let Some(proxy) = spec.oauth_proxy.as_mut()
    {
        let secret = keys_secret_name(name);
        proxy.signing_key_secret_ref.get_or_insert(SecretRef {
            name: secret.clone(),
            key: SIGNING_KEY.to_owned(),
        });
        proxy.encryption_key_secret_ref.get_or_insert(SecretRef {
            name: secret,
            key: ENCRYPTION_KEY.to_owned(),
        });
    }
    spec
}

/// True when the operator must create and rotate the keys Secret for this policy.
pub fn needs_managed_keys(name: &str, spec: &McpAuthPolicySpec) -> bool {
    let managed = keys_secret_name(name);
    let effective = effective_spec(name, spec);
    effective
        .oauth_proxy
        .iter()
        .flat_map(|p| [&p.signing_key_secret_ref, &p.encryption_key_secret_ref])
        .flatten()
        .any(|r| r.name == managed)
}

/// Every Secret the sidecar needs mounted for this policy, sorted.
pub fn secret_names(name: &str, spec: &McpAuthPolicySpec) -> BTreeSet<String> {
    let spec = effective_spec(name, spec);
    let mut names = BTreeSet::new();
    if let Some(proxy) = &spec.oauth_proxy {
        for r in [
            &proxy.client_secret_ref,
            &proxy.signing_key_secret_ref,
            &proxy.encryption_key_secret_ref,
        ]
        .into_iter()
        .flatten()
        {
            names.insert(r.name.clone());
        }
    }
    if let Some(i) = spec.jwt.as_ref().and_then(|j| j.introspection.as_ref()) {
        names.insert(i.client_secret_ref.name.clone());
    }
    if let Some(r) = spec
        .storage
        .as_ref()
        .and_then(|s| s.redis.as_ref())
        .and_then(|r| r.password_secret_ref.as_ref())
    {
        names.insert(r.name.clone());
    }
    names
}

/// Annotation on the ConfigMap: hash of the rendered policy.
pub const CONFIG_HASH_ANNOTATION: &str = "mcpwarden.dev/config-hash";

/// The ConfigMap `mcp-warden-<policy>` holding the rendered policy, and the hash of its content.
pub fn config_map(policy: &McpAuthPolicy, owner: Option<OwnerReference>) -> (ConfigMap, String) {
    let name = policy.name_any();
    let rendered = render_document(policy).to_yaml();
    let hash = config_hash(&rendered);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&name)),
            namespace: policy.namespace(),
            owner_references: owner.map(|o| vec![o]),
            labels: Some([(POLICY_LABEL.to_owned(), name)].into()),
            annotations: Some([(CONFIG_HASH_ANNOTATION.to_owned(), hash.clone())].into()),
            ..Default::default()
        },
        data: Some([(POLICY_KEY.to_owned(), rendered)].into()),
        ..Default::default()
    };
    (config_map, hash)
}

/// Short, stable hash of the rendered configuration (hex SHA-256, first 16 characters).
pub fn config_hash(rendered: &str) -> String {
    let d = digest::digest(&digest::SHA256, rendered.as_bytes());
    d.as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_policy() -> McpAuthPolicy {
        let doc = PolicyDocument::from_yaml(
            r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: gh, namespace: tools}
spec:
  resource: {url: "https://mcp.example.com/mcp"}
  mode: oauthProxy
  oauthProxy:
    provider: github
    clientId: abc
    clientSecretRef: {name: github-oauth, key: client-secret}
    access: {anyAuthenticatedUser: true}
  storage:
    redis: {url: "redis://r:6379", passwordSecretRef: {name: redis-auth, key: password}}
"#,
        )
        .unwrap();
        let mut p = McpAuthPolicy::new("gh", doc.spec);
        p.metadata.namespace = Some("tools".into());
        p
    }

    #[test]
    fn fills_managed_key_refs_and_lists_every_secret() {
        let p = proxy_policy();
        let doc = render_document(&p);
        let proxy = doc.spec.oauth_proxy.as_ref().unwrap();
        assert_eq!(
            proxy.signing_key_secret_ref,
            Some(SecretRef {
                name: "mcp-warden-gh-keys".into(),
                key: "signing.pem".into()
            })
        );
        assert_eq!(
            proxy.encryption_key_secret_ref.as_ref().unwrap().key,
            "encryption.keys"
        );
        assert!(needs_managed_keys("gh", &p.spec));
        let names: Vec<_> = secret_names("gh", &p.spec).into_iter().collect();
        assert_eq!(names, ["github-oauth", "mcp-warden-gh-keys", "redis-auth"]);
        // The rendered document is what the sidecar parses.
        let again = PolicyDocument::from_yaml(&doc.to_yaml()).unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn introspection_client_secret_is_mounted() {
        let doc = PolicyDocument::from_yaml(
            r#"
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: opaque, namespace: tools}
spec:
  resource: {url: "https://mcp.example.com/mcp"}
  mode: jwt
  jwt:
    issuer: https://login.example.com
    introspection: {clientId: warden, clientSecretRef: {name: introspection, key: secret}}
"#,
        )
        .unwrap();
        let names: Vec<_> = secret_names("opaque", &doc.spec).into_iter().collect();
        assert_eq!(names, ["introspection"]);
    }

    #[test]
    fn user_supplied_key_refs_are_kept() {
        let mut p = proxy_policy();
        let proxy = p.spec.oauth_proxy.as_mut().unwrap();
        proxy.signing_key_secret_ref = Some(SecretRef {
            name: "mine".into(),
            key: "s.pem".into(),
        });
        proxy.encryption_key_secret_ref = Some(SecretRef {
            name: "mine".into(),
            key: "e".into(),
        });
        assert!(!needs_managed_keys("gh", &p.spec));
        assert_eq!(
            render_document(&p)
                .spec
                .oauth_proxy
                .unwrap()
                .signing_key_secret_ref
                .unwrap()
                .name,
            "mine"
        );
    }

    #[test]
    fn hash_changes_with_content() {
        assert_eq!(config_hash("a").len(), 16);
        assert_ne!(config_hash("a"), config_hash("b"));
        assert_eq!(config_hash("a"), config_hash("a"));
    }
}
