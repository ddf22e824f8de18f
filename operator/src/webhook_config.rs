//! The webhook's TLS material in Kubernetes: the shared Secret every replica reads, the
//! `caBundle` of the MutatingWebhookConfiguration, and (for development) registering the
//! configuration by URL.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::certs::{self, TlsBundle};
use crate::names::{INJECT_LABEL, NAMESPACE_LABEL};
use crate::{Error, Result};

/// Annotation on the TLS Secret listing the names of the serving certificate.
pub const NAMES_ANNOTATION: &str = "mcpwarden.dev/certificate-names";

/// Where the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// In cluster: a Service in the operator's namespace (port 443 → the webhook port).
    Service {
        /// Service name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// Development: a URL the API server can reach (`https://host:port/mutate-pods`).
    Url(url::Url),
}

impl Endpoint {
    /// The names the serving certificate must carry.
    pub fn certificate_names(&self) -> Vec<String> {
        match self {
            Endpoint::Service { name, namespace } => certs::service_names(name, namespace),
            Endpoint::Url(url) => vec![
                url.host_str()
                    .unwrap_or("localhost")
                    .trim_matches(['[', ']'])
                    .to_owned(),
            ],
        }
    }

    fn client_config(&self, ca: &str) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca.as_bytes().to_vec()));
        match self {
            Endpoint::Service { name, namespace } => WebhookClientConfig {
                ca_bundle,
                service: Some(ServiceReference {
                    name: name.clone(),
                    namespace: namespace.clone(),
                    path: Some("/mutate-pods".into()),
                    port: Some(443),
                }),
                url: None,
            },
            Endpoint::Url(url) => WebhookClientConfig {
                ca_bundle,
                service: None,
                url: Some(url.to_string()),
            },
        }
    }
}

fn bundle_from_secret(secret: &Secret) -> Option<TlsBundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Some(TlsBundle {
        ca_pem: text("ca.crt")?,
        ca_key_pem: text("ca.key")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        names: secret
            .annotations()
            .get(NAMES_ANNOTATION)
            .map(|n| n.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

fn secret_from_bundle(
    name: &str,
    namespace: &str,
    b: &TlsBundle,
    resource_version: Option<String>,
) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version,
            annotations: Some([(NAMES_ANNOTATION.to_owned(), b.names.join(","))].into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "mcp-warden-operator".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_owned(), bytes(&b.ca_pem)),
            ("ca.key".to_owned(), bytes(&b.ca_key_pem)),
            ("tls.crt".to_owned(), bytes(&b.cert_pem)),
            ("tls.key".to_owned(), bytes(&b.key_pem)),
        ])),
        ..Default::default()
    }
}

/// Reads the shared TLS Secret, renewing (and storing) what is due. Replicas race safely: a
/// write that loses (conflict) re-reads the winner's Secret.
pub async fn load_or_renew(
    client: &Client,
    namespace: &str,
    secret: &str,
    names: &[String],
    now: i64,
) -> Result<TlsBundle> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let existing = api.get_opt(secret).await?;
        let current = existing.as_ref().and_then(bundle_from_secret);
        let (bundle, changed) = certs::ensure(current, names, now)?;
        if !changed {
            return Ok(bundle);
        }
        let rv = existing.as_ref().and_then(|s| s.resource_version());
        let object = secret_from_bundle(secret, namespace, &bundle, rv.clone());
        let written = match rv {
            None => api.create(&PostParams::default(), &object).await,
            Some(_) => api.replace(secret, &PostParams::default(), &object).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(%secret, "stored a new webhook certificate");
                return Ok(bundle);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Certificate(format!(
        "could not store Secret {namespace}/{secret} (conflicts)"
    )))
}

/// The MutatingWebhookConfiguration: two entries (pod label, namespace label), both
/// fail-closed because they only ever match pods that asked for injection; system namespaces
/// and the operator's namespace are excluded.
pub fn webhook_configuration(
    name: &str,
    endpoint: &Endpoint,
    operator_namespace: &str,
    ca: &str,
    timeout_seconds: i32,
) -> MutatingWebhookConfiguration {
    let excluded = LabelSelectorRequirement {
        key: "kubernetes.io/metadata.name".into(),
        operator: "NotIn".into(),
        values: Some(vec![
            "kube-system".into(),
            "kube-public".into(),
            "kube-node-lease".into(),
            operator_namespace.into(),
        ]),
    };
    let requirement = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    };
    let entry = |hook: &str,
                 ns: Vec<LabelSelectorRequirement>,
                 obj: Vec<LabelSelectorRequirement>| MutatingWebhook {
        name: hook.into(),
        admission_review_versions: vec!["v1".into()],
        client_config: endpoint.client_config(ca),
        failure_policy: Some("Fail".into()),
        match_policy: Some("Equivalent".into()),
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(ns),
            ..Default::default()
        }),
        object_selector: Some(LabelSelector {
            match_expressions: Some(obj),
            ..Default::default()
        }),
        reinvocation_policy: Some("Never".into()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec!["".into()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(vec!["CREATE".into()]),
            resources: Some(vec!["pods".into()]),
            scope: Some("Namespaced".into()),
        }]),
        side_effects: "None".into(),
        timeout_seconds: Some(timeout_seconds),
        match_conditions: None,
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "mcp-warden-operator".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        webhooks: Some(vec![
            entry(
                "pods.inject.mcpwarden.dev",
                vec![excluded.clone()],
                vec![requirement(INJECT_LABEL, "In", &["true"])],
            ),
            entry(
                "pods.namespace.mcpwarden.dev",
                vec![excluded, requirement(NAMESPACE_LABEL, "In", &["enabled"])],
                vec![requirement(INJECT_LABEL, "NotIn", &["true", "false"])],
            ),
        ]),
    }
}

/// Makes every webhook of the configuration trust `ca`. With `create_with`, a missing
/// configuration is created (development mode); otherwise it must exist (the chart makes it).
pub async fn sync_ca_bundle(
    client: &Client,
    name: &str,
    ca: &str,
    create_with: Option<MutatingWebhookConfiguration>,
) -> Result<()> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    for _ in 0..5 {
        let Some(mut config) = api.get_opt(name).await? else {
            return match create_with {
                Some(config) => {
                    api.create(&PostParams::default(), &config).await?;
                    tracing::info!(%name, "registered the MutatingWebhookConfiguration");
                    Ok(())
                }
                None => Err(Error::Invalid(format!(
                    "MutatingWebhookConfiguration {name} does not exist (install the chart, or \
                     pass --webhook-url for development)"
                ))),
            };
        };
        if let Some(wanted) = &create_with {
            // Development: keep the registration exactly as this process serves it.
            config.webhooks = wanted.webhooks.clone();
        }
        let bundle = ByteString(ca.as_bytes().to_vec());
        let mut changed = create_with.is_some();
        for hook in config.webhooks.iter_mut().flatten() {
            if hook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                hook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(%name, "caBundle updated");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Certificate(format!(
        "could not update {name} (conflicts)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_only_matches_opted_in_pods_and_fails_closed() {
        let c = webhook_configuration(
            "mcp-warden",
            &Endpoint::Service {
                name: "mcp-warden-webhook".into(),
                namespace: "mcp-warden".into(),
            },
            "mcp-warden",
            "CA",
            10,
        );
        let hooks = c.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
        for h in &hooks {
            assert_eq!(h.failure_policy.as_deref(), Some("Fail"));
            assert_eq!(h.side_effects, "None");
            assert_eq!(h.timeout_seconds, Some(10));
            assert_eq!(h.client_config.ca_bundle.as_ref().unwrap().0, b"CA");
            let ns = h
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap();
            assert!(
                ns[0]
                    .values
                    .as_ref()
                    .unwrap()
                    .contains(&"kube-system".to_owned())
            );
            assert!(
                ns[0]
                    .values
                    .as_ref()
                    .unwrap()
                    .contains(&"mcp-warden".to_owned())
            );
        }
        let obj = hooks[0]
            .object_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                obj[0].operator.as_str(),
                obj[0].values.as_ref().unwrap()[0].as_str()
            ),
            ("In", "true")
        );
        let url = Endpoint::Url("https://10.0.0.5:9443/mutate-pods".parse().unwrap());
        assert_eq!(url.certificate_names(), ["10.0.0.5"]);
        assert_eq!(
            url.client_config("x").url.as_deref(),
            Some("https://10.0.0.5:9443/mutate-pods")
        );
    }

    #[test]
    fn secret_round_trip() {
        let (b, _) = certs::ensure(None, &["a.b".into(), "c".into()], 1_800_000_000).unwrap();
        let s = secret_from_bundle("tls", "ns", &b, None);
        assert_eq!(bundle_from_secret(&s).unwrap(), b);
    }
}
