//! `--native-sidecar auto`: native sidecars only when every kubelet supports them. Kubelets may
//! lag the API server by up to three minor versions, and a 1.28 kubelet runs an init container
//! with `restartPolicy: Always` as a plain init container that never finishes (the pod hangs in
//! `Init:0/1`). So `auto` follows the lowest `status.nodeInfo.kubeletVersion` among the Nodes,
//! watched: native once every node runs 1.29 or newer, a regular container otherwise, and
//! also while the node list is not yet known or is empty.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// The first Kubernetes minor version whose kubelets run native sidecars by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// `(major, minor)` of a kubelet version such as `v1.29.3`, `v1.28.5-eks-5e0fdde` or
/// `v1.30.1+k3s1`.
pub fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Whether a kubelet of this version runs native sidecars (on by default from 1.29).
pub fn supports_native_sidecars((major, minor): (u32, u32)) -> bool {
    major > 1 || (major == 1 && minor >= NATIVE_SIDECAR_MINOR)
}

#[derive(Default)]
struct State {
    /// Node name → kubelet version (unparsable versions count as too old).
    nodes: HashMap<String, (u32, u32)>,
    listing: HashMap<String, (u32, u32)>,
    synced: bool,
}

/// The kubelet versions of the cluster's Nodes (only the versions are kept, not the Nodes).
#[derive(Clone, Default)]
pub struct Kubelets(Arc<Mutex<State>>);

impl Kubelets {
    /// Kubelets fed by a watch on Nodes, and the future that drives it (spawn it).
    pub fn watch(client: Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let kubelets = Self::default();
        let me = kubelets.clone();
        let drive = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(event) => me.apply(&event),
                    Err(e) => {
                        tracing::warn!(error = %e, "watching Nodes for --native-sidecar auto")
                    }
                }
                std::future::ready(())
            });
        (kubelets, drive)
    }

    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<Node>) {
        let version = |node: &Node| {
            node.status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .and_then(|i| parse_version(&i.kubelet_version))
                .unwrap_or((0, 0))
        };
        let mut state = self.0.lock().expect("not poisoned");
        let before = state.synced.then(|| lowest(&state.nodes));
        match event {
            watcher::Event::Init => state.listing.clear(),
            watcher::Event::InitApply(node) => {
                state.listing.insert(node.name_any(), version(node));
            }
            watcher::Event::InitDone => {
                state.nodes = std::mem::take(&mut state.listing);
                state.synced = true;
            }
            watcher::Event::Apply(node) => {
                state.nodes.insert(node.name_any(), version(node));
            }
            watcher::Event::Delete(node) => {
                state.nodes.remove(&node.name_any());
            }
        }
        let after = state.synced.then(|| lowest(&state.nodes));
        if after != before {
            let native = after.flatten().is_some_and(supports_native_sidecars);
            tracing::info!(
                lowest_kubelet = ?after.flatten().map(|(a, b)| format!("{a}.{b}")),
                native_sidecar = native,
                "kubelet versions changed"
            );
        }
    }

    /// The lowest kubelet version among the Nodes, once listed (`None` before, or without
    /// Nodes).
    pub fn lowest(&self) -> Option<(u32, u32)> {
        let state = self.0.lock().expect("not poisoned");
        if state.synced {
            lowest(&state.nodes)
        } else {
            None
        }
    }

    /// Whether every Node's kubelet runs native sidecars (`false` until the Nodes are listed).
    pub fn all_support_native_sidecars(&self) -> bool {
        self.lowest().is_some_and(supports_native_sidecars)
    }
}

fn lowest(nodes: &HashMap<String, (u32, u32)>) -> Option<(u32, u32)> {
    nodes.values().min().copied()
}

/// Where the webhook's default for native sidecars comes from.
#[derive(Clone)]
pub enum NativeDefault {
    /// `--native-sidecar always` / `never`.
    Fixed(bool),
    /// `--native-sidecar auto`: the lowest kubelet version.
    Kubelets(Kubelets),
}

impl NativeDefault {
    /// Whether to inject a native sidecar into a pod that does not say.
    pub fn native(&self) -> bool {
        match self {
            NativeDefault::Fixed(native) => *native,
            NativeDefault::Kubelets(kubelets) => kubelets.all_support_native_sidecars(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, version: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"nodeInfo": {"kubeletVersion": version, "architecture": "amd64",
                "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""}}
        }))
        .unwrap()
    }

    #[test]
    fn versions_parse_with_vendor_suffixes() {
        assert_eq!(parse_version("v1.29.3"), Some((1, 29)));
        assert_eq!(parse_version("v1.28.5-eks-5e0fdde"), Some((1, 28)));
        assert_eq!(parse_version("v1.30.1+k3s1"), Some((1, 30)));
        assert_eq!(parse_version("v1.31"), Some((1, 31)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn one_old_kubelet_turns_native_sidecars_off() {
        let k = Kubelets::default();
        let auto = NativeDefault::Kubelets(k.clone());
        assert!(!auto.native(), "not listed yet: container mode");
        k.apply(&watcher::Event::Init);
        k.apply(&watcher::Event::InitApply(node("a", "v1.30.2")));
        k.apply(&watcher::Event::InitApply(node("b", "v1.29.0+k3s1")));
        k.apply(&watcher::Event::InitDone);
        assert!(auto.native());
        // A 1.28 node joins (control plane 1.29+, kubelet three minors behind is allowed).
        k.apply(&watcher::Event::Apply(node("c", "v1.28.9-eks-1")));
        assert_eq!(k.lowest(), Some((1, 28)));
        assert!(!auto.native());
        k.apply(&watcher::Event::Delete(node("c", "v1.28.9-eks-1")));
        assert!(auto.native());
        // A node whose version cannot be read counts as too old.
        k.apply(&watcher::Event::Apply(node("d", "unknown")));
        assert!(!auto.native());
        assert!(NativeDefault::Fixed(true).native());
    }
}
