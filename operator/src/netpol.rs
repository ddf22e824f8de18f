//! Bypass protection: a NetworkPolicy per McpAuthPolicy that lets ingress reach the pods bound
//! to it only on the sidecar's own ports, named as the webhook named them, so the app's own port
//! is no way around authentication.
//!
//! Ports are allowed by *name*, never by number: a port name resolves per pod, so the sidecar of
//! one pod cannot open the app port of another pod that happens to use the same number. The
//! names come from the injected `mcp-warden` container of every bound pod (its public port,
//! `mcp-warden` or the app port name it took over, and its admin port); a name that some bound
//! pod also gives to an app port is left out, since allowing it would open that app port.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::*;

/// The port names the NetworkPolicy admits, and the names it had to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedPorts {
    /// Names of sidecar ports: admitted.
    pub names: BTreeSet<String>,
    /// Sidecar port names that an app container of some bound pod also uses: not admitted.
    pub conflicts: BTreeSet<String>,
}

fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

fn port_names(c: &Container) -> impl Iterator<Item = String> + '_ {
    c.ports.iter().flatten().filter_map(|p| p.name.clone())
}

/// The sidecar port names of `pods` (always including the default public and admin names, so
/// a pod injected before the next reconciliation is reachable), less any name that an app
/// container of one of them uses.
pub fn allowed_ports(pods: &[Pod]) -> AllowedPorts {
    let mut sidecar = BTreeSet::from([PUBLIC_PORT_NAME.to_owned(), ADMIN_PORT_NAME.to_owned()]);
    let mut app = BTreeSet::new();
    for c in pods.iter().flat_map(containers) {
        if c.name == SIDECAR_NAME {
            sidecar.extend(port_names(c));
        } else {
            app.extend(port_names(c));
        }
    }
    let conflicts: BTreeSet<String> = sidecar.intersection(&app).cloned().collect();
    let names = sidecar.difference(&conflicts).cloned().collect();
    AllowedPorts { names, conflicts }
}

/// The NetworkPolicy for `policy` admitting ingress only on the named ports.
pub fn network_policy(
    policy: &str,
    namespace: &str,
    owner: OwnerReference,
    names: &BTreeSet<String>,
) -> NetworkPolicy {
    // An ingress rule without ports admits every port: with no name left, admit nothing.
    let ingress = if names.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(
                names
                    .iter()
                    .map(|name| NetworkPolicyPort {
                        port: Some(IntOrString::String(name.clone())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }]
    };
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
            ingress: Some(ingress),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    #[test]
    fn admits_sidecar_port_names_only() {
        // Pod a: the sidecar took over `http`; pod b: the sidecar kept `mcp-warden` and the
        // app's other port is named `http`, which must not open.
        let a = pod(serde_json::json!([
            {"name": "app", "ports": [{"name": "app-http", "containerPort": 8000}]},
            {"name": SIDECAR_NAME, "ports": [
                {"name": "http", "containerPort": 8001},
                {"name": ADMIN_PORT_NAME, "containerPort": 9090}]}
        ]));
        let b = pod(serde_json::json!([
            {"name": "app", "ports": [{"name": "http", "containerPort": 8001},
                                      {"containerPort": 8080}]},
            {"name": SIDECAR_NAME, "ports": [
                {"name": PUBLIC_PORT_NAME, "containerPort": 8000},
                {"name": ADMIN_PORT_NAME, "containerPort": 9090}]}
        ]));
        let only_a = allowed_ports(std::slice::from_ref(&a));
        assert_eq!(
            only_a.names,
            BTreeSet::from([
                "http".to_owned(),
                PUBLIC_PORT_NAME.to_owned(),
                ADMIN_PORT_NAME.to_owned()
            ])
        );
        let both = allowed_ports(&[a, b]);
        assert_eq!(both.conflicts, BTreeSet::from(["http".to_owned()]));
        assert!(!both.names.contains("http"));

        let np = network_policy("p", "ns", OwnerReference::default(), &both.names);
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[POLICY_LABEL],
            "p"
        );
        let rule = &spec.ingress.unwrap()[0];
        assert!(rule.from.is_none());
        let ports: Vec<_> = rule.ports.iter().flatten().map(|p| &p.port).collect();
        assert!(
            ports
                .iter()
                .all(|p| matches!(p, Some(IntOrString::String(_)))),
            "ports by name only: {ports:?}"
        );
    }

    #[test]
    fn no_names_admit_nothing() {
        let np = network_policy("p", "ns", OwnerReference::default(), &BTreeSet::new());
        assert_eq!(np.spec.unwrap().ingress, Some(vec![]));
    }
}
