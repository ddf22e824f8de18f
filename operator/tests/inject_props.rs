//! Property tests of the injection: any valid user pod — many containers, named and unnamed
//! ports, probes and lifecycle hooks on named ports, existing volumes, the sidecar's preferred
//! ports and names already taken, names at their length limits — comes out as a pod the API
//! server accepts (checked by `k8s-rules`), with the app's probes and hooks still reaching the
//! app's ports, the app's port still served by the app and fronted by the sidecar.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use mcp_warden_operator::inject::{InjectSettings, Outcome, review};
use mcp_warden_operator::netpol;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

mod fixtures;

use fixtures::policies;

/// Port names: the sidecar's own and its renames, ordinary ones, and 15-character ones.
fn port_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "http",
            "web",
            "metrics",
            "grpc",
            "admin",
            "mcp-warden",
            "warden-admin",
            "app-http",
            "app-web",
            "app-http-1",
            "mcp-warden-1",
            "warden-admin-1",
            "http-alt-port-1",
            "app-http-alt-po",
        ])
        .prop_map(str::to_owned),
        "[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6})?",
        "[a-z]{7}-[a-z0-9]{7}",
    ]
}

/// Container names, up to the 63-character limit.
fn container_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["app", "server", "cache", "worker", "mcp-warden-x"])
            .prop_map(str::to_owned),
        "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        "[a-z][a-z0-9]{62}",
    ]
    .prop_filter("the sidecar's own name means already injected", |n| {
        n != "mcp-warden"
    })
}

/// Port numbers: the sidecar's preferred ports and their neighbours taken often.
fn port_number() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![8000i64, 8001, 8002, 9090, 9091, 8080, 3000]),
        1i64..=65535,
    ]
}

fn volume_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "data",
            "cache",
            "mcp-warden-config",
            "mcp-warden-secret-0",
            "mcp-warden-secret-1",
            "mcp-warden-config-1",
        ])
        .prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,61}[a-z0-9]",
    ]
}

/// One raw container: name, ports (name, number), and which probes/hooks to add.
type RawContainer = (String, Vec<(Option<String>, i64)>, [bool; 4]);

fn raw_container() -> impl Strategy<Value = RawContainer> {
    (
        container_name(),
        prop::collection::vec((prop::option::of(port_name()), port_number()), 0..4),
        any::<[bool; 4]>(),
    )
}

/// A valid pod: names and port numbers made unique, probes only on the container's own
/// ports, mounts only of declared volumes; the upstream port chosen among the app ports.
fn user_pod() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(raw_container(), 1..5),
        prop::collection::vec(raw_container(), 0..3),
        prop::collection::vec(volume_name(), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(apps, inits, volumes, pick, by_number, proxy)| {
            let mut names = BTreeSet::new();
            let mut port_names = BTreeSet::new();
            let mut numbers = BTreeSet::new();
            let volumes: Vec<String> = volumes
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut build = |i: usize, (name, ports, flags): RawContainer, init: bool| {
                let name = if names.insert(name.clone()) {
                    name
                } else {
                    let fresh = format!("c{i}{}", if init { "-init" } else { "" });
                    names.insert(fresh.clone());
                    fresh
                };
                let mut out = Vec::new();
                for (port_name, number) in ports {
                    if !numbers.insert(number) {
                        continue;
                    }
                    let mut p = json!({"containerPort": number, "protocol": "TCP"});
                    if let Some(n) = port_name.filter(|n| port_names.insert(n.clone())) {
                        p["name"] = json!(n);
                    }
                    out.push(p);
                }
                let mut c = json!({"name": name, "image": "app:1", "ports": out});
                let named: Vec<&str> = out.iter().filter_map(|p| p["name"].as_str()).collect();
                if !init {
                    if let (true, Some(first)) = (flags[0], named.first()) {
                        c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": first}});
                    }
                    if let (true, Some(last)) = (flags[1], out.last()) {
                        let port = last.get("name").cloned().unwrap_or(last["containerPort"].clone());
                        c["livenessProbe"] = json!({"tcpSocket": {"port": port}});
                    }
                    if let (true, Some(last)) = (flags[2], named.last()) {
                        c["lifecycle"] = json!({"preStop": {"httpGet": {"path": "/drain", "port": last}},
                                                "postStart": {"tcpSocket": {"port": last}}});
                    }
                    if flags[3] {
                        c["startupProbe"] = json!({"exec": {"command": ["true"]}});
                    }
                }
                c
            };
            let mut containers: Vec<Value> = apps
                .into_iter()
                .enumerate()
                .map(|(i, raw)| build(i, raw, false))
                .collect();
            let init: Vec<Value> = inits
                .into_iter()
                .enumerate()
                .map(|(i, raw)| build(i, raw, true))
                .collect();
            // The MCP server needs a port: give the first container one if it has none.
            if containers[0]["ports"].as_array().unwrap().is_empty() {
                let free = (20000..).find(|n| !numbers.contains(n)).unwrap();
                containers[0]["ports"] = json!([{"containerPort": free}]);
            }
            let mounts: Vec<Value> = volumes
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"name": v, "mountPath": format!("/mnt/{i}")}))
                .collect();
            containers[0]["volumeMounts"] = json!(mounts);
            let app_ports: Vec<(usize, Value)> = containers
                .iter()
                .enumerate()
                .flat_map(|(i, c)| c["ports"].as_array().unwrap().iter().map(move |p| (i, p.clone())))
                .collect();
            let (_, up) = &app_ports[pick.index(app_ports.len())];
            let upstream = match (&up["name"], by_number) {
                (Value::String(n), false) => n.clone(),
                _ => up["containerPort"].to_string(),
            };
            let mut spec = json!({"containers": containers,
                "volumes": volumes.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect::<Vec<_>>()});
            if !init.is_empty() {
                spec["initContainers"] = json!(init);
            }
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "mcp", "namespace": "tools",
                    "labels": {"mcpwarden.dev/inject": "true"},
                    "annotations": {"mcpwarden.dev/policy": if proxy { "github" } else { "corp-sso" },
                                    "mcpwarden.dev/upstream-port": upstream}},
                "spec": spec
            })
        })
}

/// Every probe and hook port of the app containers, resolved to a number: (container,
/// field) → port.
fn app_probe_targets(pod: &Value) -> BTreeMap<(String, &'static str), i64> {
    let mut out = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().unwrap() {
        if c["name"] == "mcp-warden" {
            continue;
        }
        let name = c["name"].as_str().unwrap().to_owned();
        let ports = c["ports"].as_array().cloned().unwrap_or_default();
        let resolve = |port: &Value| match port {
            Value::String(n) => ports
                .iter()
                .find(|p| p["name"] == *n)
                .and_then(|p| p["containerPort"].as_i64())
                .unwrap_or(-1),
            other => other.as_i64().unwrap(),
        };
        let fields: [(&'static str, &str); 4] = [
            ("readiness", "/readinessProbe/httpGet/port"),
            ("liveness", "/livenessProbe/tcpSocket/port"),
            ("preStop", "/lifecycle/preStop/httpGet/port"),
            ("postStart", "/lifecycle/postStart/tcpSocket/port"),
        ];
        for (label, pointer) in fields {
            if let Some(port) = c.pointer(pointer) {
                out.insert((name.clone(), label), resolve(port));
            }
        }
    }
    out
}

fn arg_after(args: &[Value], flag: &str) -> String {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1].as_str().unwrap().to_owned()
}

proptest! {
    #![proptest_config(Config { cases: 96, failure_persistence: None, ..Config::default() })]

    #[test]
    fn injected_pods_pass_the_api_server_rules_and_keep_the_app_working(
        input in user_pod(),
        native in any::<bool>(),
    ) {
        k8s_rules::assert_valid(&input);
        let pod: Pod = serde_json::from_value(input.clone()).unwrap();
        let settings = InjectSettings { native_sidecar: native, ..Default::default() };
        let out = review(&pod, false, &policies(), &settings);
        let Outcome::Injected { pod: injected, patch, .. } = out else {
            panic!("a valid pod was not injected: {out:?}");
        };
        let mut patched = input.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let after = serde_json::to_value(injected.as_ref()).unwrap();
        prop_assert_eq!(&patched, &after);
        k8s_rules::assert_valid(&after);

        // The app's probes and hooks reach the same port numbers as before.
        prop_assert_eq!(app_probe_targets(&input), app_probe_targets(&after));

        // The sidecar forwards to the app's port, which the app still declares; the sidecar
        // listens elsewhere, under the upstream port's name when it had one.
        let list = if native { "initContainers" } else { "containers" };
        let sidecar = after["spec"][list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "mcp-warden")
            .unwrap();
        let args = sidecar["args"].as_array().unwrap();
        let upstream: i64 = arg_after(args, "--upstream")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let app_ports: Vec<&Value> = after["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] != "mcp-warden")
            .flat_map(|c| c["ports"].as_array().unwrap())
            .collect();
        prop_assert!(app_ports.iter().any(|p| p["containerPort"] == upstream));
        let listen: i64 = arg_after(args, "--listen").rsplit(':').next().unwrap().parse().unwrap();
        prop_assert_ne!(listen, upstream);
        let annotation = &input["metadata"]["annotations"]["mcpwarden.dev/upstream-port"];
        let named_upstream = input["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().unwrap())
            .find(|p| p["containerPort"] == upstream)
            .and_then(|p| p["name"].as_str());
        if let Some(name) = named_upstream {
            // A Service targeting the name now reaches the sidecar's public port.
            let public = sidecar["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name);
            prop_assert!(public.is_some_and(|p| p["containerPort"] == listen), "{annotation}");
        }

        // The NetworkPolicy built from the pod is valid, opens the sidecar's ports and never an
        // app port.
        let allowed = netpol::allowed_ports(std::slice::from_ref(injected.as_ref()));
        let policy_name = input["metadata"]["annotations"]["mcpwarden.dev/policy"].as_str().unwrap();
        let owner = OwnerReference {
            api_version: "mcpwarden.dev/v1alpha1".into(),
            kind: "McpAuthPolicy".into(),
            name: policy_name.into(),
            uid: "1234".into(),
            ..Default::default()
        };
        let np = netpol::network_policy(policy_name, "tools", owner, &allowed.names);
        k8s_rules::assert_valid(&serde_json::to_value(np).unwrap());
        for p in sidecar["ports"].as_array().unwrap() {
            prop_assert!(allowed.names.contains(p["name"].as_str().unwrap()), "{p}");
        }
        for p in app_ports.iter().filter_map(|p| p["name"].as_str()) {
            prop_assert!(!allowed.names.contains(p), "app port {p} is open");
        }
    }
}
