//! Port bookkeeping for injection: free ports, the app's upstream port, renamed port names.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Every container port declared in the pod (app and init containers).
pub fn used_ports(spec: &PodSpec) -> BTreeSet<i32> {
    all_containers(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port)
        .collect()
}

/// Every port name declared in the pod.
pub fn used_port_names(spec: &PodSpec) -> BTreeSet<String> {
    all_containers(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.name.clone())
        .collect()
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// `preferred`, or the next port above it that nothing in `used` takes.
pub fn pick_port(preferred: i32, used: &BTreeSet<i32>) -> i32 {
    let mut port = preferred;
    while used.contains(&port) {
        port += 1;
    }
    port
}

/// Where the sidecar forwards to: the app container (if one declares the port), the port
/// number, and the port's name (if it has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Index into `spec.containers` of the container declaring the port.
    pub container: Option<usize>,
    /// The port number.
    pub port: i32,
    /// The port's name, which the sidecar takes over.
    pub name: Option<String>,
}

/// Resolves the `mcpwarden.dev/upstream-port` annotation (a number or a port name); without
/// one, the only port of the only container.
pub fn resolve_upstream(spec: &PodSpec, annotation: Option<&str>) -> Result<Upstream, String> {
    let declared = |pred: &dyn Fn(i32, Option<&str>) -> bool| {
        spec.containers.iter().enumerate().find_map(|(i, c)| {
            c.ports
                .iter()
                .flatten()
                .find(|p| pred(p.container_port, p.name.as_deref()))
                .map(|p| Upstream {
                    container: Some(i),
                    port: p.container_port,
                    name: p.name.clone(),
                })
        })
    };
    match annotation.map(str::trim) {
        Some(raw) if raw.chars().all(|c| c.is_ascii_digit()) && !raw.is_empty() => {
            let port: i32 = raw
                .parse()
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("upstream port {raw} is not between 1 and 65535"))?;
            Ok(declared(&|p, _| p == port).unwrap_or(Upstream {
                container: None,
                port,
                name: None,
            }))
        }
        Some(name) => declared(&|_, n| n == Some(name))
            .ok_or_else(|| format!("no container declares a port named {name:?}")),
        None => {
            let ports: Vec<_> = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .collect();
            match (spec.containers.len(), ports.as_slice()) {
                (1, [only]) => Ok(Upstream {
                    container: Some(0),
                    port: only.container_port,
                    name: only.name.clone(),
                }),
                _ => Err("cannot tell which port is the MCP server's: set the \
                     mcpwarden.dev/upstream-port annotation (a port number or name)"
                    .into()),
            }
        }
    }
}

/// Longest port name the API server accepts (an IANA service name).
pub const PORT_NAME_MAX: usize = 15;
/// Longest container or volume name (an RFC 1123 label).
pub const LABEL_MAX: usize = 63;

/// `base` if nothing in `taken` has it, else `base-1`, `base-2`, … (the base cut so the
/// result stays within `max` characters, never ending in `-`).
pub fn unique_name(base: &str, taken: &BTreeSet<String>, max: usize) -> String {
    let base: String = base.chars().take(max).collect();
    let base = base.trim_end_matches('-');
    if !taken.contains(base) {
        return base.to_owned();
    }
    (1..)
        .map(|i| {
            let suffix = format!("-{i}");
            let head: String = base.chars().take(max - suffix.len()).collect();
            format!("{}{suffix}", head.trim_end_matches('-'))
        })
        .find(|n| !taken.contains(n))
        .expect("some suffix is free")
}

/// The new name of an app port whose name the sidecar takes over: `app-<name>`, cut to the
/// 15-character limit of port names, made unique among `taken`.
pub fn renamed(name: &str, taken: &BTreeSet<String>) -> String {
    unique_name(&format!("app-{name}"), taken, PORT_NAME_MAX)
}

/// Points probes and lifecycle hooks that used the port name `from` at `to`, so they keep
/// hitting the app.
pub fn rename_port_references(container: &mut Container, from: &str, to: &str) {
    let probes = [
        container.liveness_probe.as_mut(),
        container.readiness_probe.as_mut(),
        container.startup_probe.as_mut(),
    ];
    for probe in probes.into_iter().flatten() {
        rename_probe(probe, from, to);
    }
    let hooks = container
        .lifecycle
        .as_mut()
        .map(|l| [l.post_start.as_mut(), l.pre_stop.as_mut()]);
    for hook in hooks.into_iter().flatten().flatten() {
        let ports = [
            hook.http_get.as_mut().map(|h| &mut h.port),
            hook.tcp_socket.as_mut().map(|t| &mut t.port),
        ];
        rename_ports(ports, from, to);
    }
}

fn rename_probe(probe: &mut Probe, from: &str, to: &str) {
    let ports = [
        probe.http_get.as_mut().map(|h| &mut h.port),
        probe.tcp_socket.as_mut().map(|t| &mut t.port),
    ];
    rename_ports(ports, from, to);
}

fn rename_ports(ports: [Option<&mut IntOrString>; 2], from: &str, to: &str) {
    for port in ports.into_iter().flatten() {
        if matches!(port, IntOrString::String(s) if s == from) {
            *port = IntOrString::String(to.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_free_port() {
        let used = BTreeSet::from([8000, 8001, 9090]);
        assert_eq!(pick_port(8000, &used), 8002);
        assert_eq!(pick_port(7000, &used), 7000);
    }

    #[test]
    fn renames_within_the_port_name_limit() {
        let taken = BTreeSet::from(["app-http".to_owned()]);
        assert_eq!(renamed("web", &taken), "app-web");
        assert_eq!(renamed("http", &taken), "app-http-1");
        assert_eq!(
            renamed("very-long-name1", &BTreeSet::new()),
            "app-very-long-n"
        );
        assert!(renamed("very-long-name1", &BTreeSet::new()).len() <= 15);
        let taken = BTreeSet::from(["app-very-long-n".to_owned()]);
        assert_eq!(renamed("very-long-name1", &taken), "app-very-long-1");
    }

    #[test]
    fn unique_names_stay_within_the_limit() {
        let taken = BTreeSet::from(["warden-admin".to_owned(), "warden-admin-1".to_owned()]);
        assert_eq!(unique_name("warden-admin", &taken, 15), "warden-admin-2");
        assert_eq!(unique_name("mcp-warden", &taken, 15), "mcp-warden");
        let long = "v".repeat(63);
        let taken = BTreeSet::from([long.clone()]);
        let next = unique_name(&long, &taken, 63);
        assert_eq!((next.len(), next.ends_with("-1")), (63, true));
        // A cut that would end in '-' drops it.
        let taken = BTreeSet::from(["abcdefghijkl-n".to_owned()]);
        assert_eq!(unique_name("abcdefghijkl-n", &taken, 15), "abcdefghijkl-1");
    }

    #[test]
    fn probes_and_lifecycle_hooks_follow_a_renamed_port() {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "readinessProbe": {"httpGet": {"port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": "other"}},
            "lifecycle": {
                "preStop": {"httpGet": {"path": "/drain", "port": "http"}},
                "postStart": {"tcpSocket": {"port": "http"}}
            }
        }))
        .unwrap();
        rename_port_references(&mut c, "http", "app-http");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["readinessProbe"]["httpGet"]["port"], "app-http");
        assert_eq!(v["livenessProbe"]["tcpSocket"]["port"], "other");
        assert_eq!(v["lifecycle"]["preStop"]["httpGet"]["port"], "app-http");
        assert_eq!(v["lifecycle"]["postStart"]["tcpSocket"]["port"], "app-http");
    }

    #[test]
    fn upstream_port_must_be_resolvable() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "ports": [{"containerPort": 8080, "name": "http"}]},
                {"name": "b", "ports": [{"containerPort": 9000}]}
            ]
        }))
        .unwrap();
        assert!(
            resolve_upstream(&spec, None)
                .unwrap_err()
                .contains("upstream-port")
        );
        let by_name = resolve_upstream(&spec, Some("http")).unwrap();
        assert_eq!((by_name.container, by_name.port), (Some(0), 8080));
        let by_number = resolve_upstream(&spec, Some("9000")).unwrap();
        assert_eq!((by_number.container, by_number.name), (Some(1), None));
        assert!(resolve_upstream(&spec, Some("70000")).is_err());
        assert!(
            resolve_upstream(&spec, Some("grpc"))
                .unwrap_err()
                .contains("grpc")
        );
    }
}
