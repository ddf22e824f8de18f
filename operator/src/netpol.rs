//! Bypass protection: a NetworkPolicy per McpAuthPolicy that lets ingress reach the pods bound
//! to it only on the sidecar's ports, so the app's own port is no way around authentication.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::Value;

use crate::names::*;

/// The sidecar ports in use by `pods` (from their `mcpwarden.dev/status`), plus the defaults.
pub fn sidecar_ports(pods: &[Pod]) -> BTreeSet<i32> {
    let mut ports = BTreeSet::from([DEFAULT_PUBLIC_PORT, DEFAULT_ADMIN_PORT]);
    for pod in pods {
        let Some(status) = pod.annotations().get(STATUS_ANNOTATION) else {
            continue;
        };
        let Ok(status) = serde_json::from_str::<Value>(status) else {
            continue;
        };
        for key in ["port", "adminPort"] {
            if let Some(p) = status[key].as_i64().and_then(|p| i32::try_from(p).ok()) {
                ports.insert(p);
            }
        }
    }
    ports
}

/// The NetworkPolicy for `policy` admitting ingress only on `ports`.
pub fn network_policy(
    policy: &str,
    namespace: &str,
    owner: OwnerReference,
    ports: &BTreeSet<i32>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(policy)),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![owner]),
            labels: Some([(POLICY_LABEL.to_owned(), policy.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some([(POLICY_LABEL.to_owned(), policy.to_owned())].into()),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(
                    ports
                        .iter()
                        .map(|p| NetworkPolicyPort {
                            port: Some(IntOrString::Int(*p)),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_sidecar_ports_of_bound_pods() {
        let mut pod = Pod::default();
        pod.annotations_mut().insert(
            STATUS_ANNOTATION.into(),
            r#"{"port":8001,"adminPort":9091}"#.into(),
        );
        let ports = sidecar_ports(&[pod, Pod::default()]);
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            [8000, 8001, 9090, 9091]
        );
        let np = network_policy(
            "p",
            "ns",
            OwnerReference::default(),
            &BTreeSet::from([8000]),
        );
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[POLICY_LABEL],
            "p"
        );
        let rule = &spec.ingress.unwrap()[0];
        assert!(rule.from.is_none());
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8000))
        );
    }
}
