//! Golden tests of the injection patch. Files under `tests/golden/`;
//! `UPDATE_GOLDEN=1 cargo test -p mcp-warden-operator --test inject_golden` rewrites them.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use mcp_warden_operator::inject::{InjectSettings, Outcome, Skip, review};
use serde_json::{Value, json};

mod fixtures;

use fixtures::policies;

fn settings(native: bool) -> InjectSettings {
    InjectSettings {
        sidecar_image: "ghcr.io/mcp-warden/mcp-warden-sidecar:test".into(),
        native_sidecar: native,
        ..Default::default()
    }
}

fn pod(labels: Value, annotations: Value, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mcp", "namespace": "tools", "labels": labels, "annotations": annotations},
        "spec": {"containers": containers}
    }))
    .unwrap()
}

fn plain() -> Pod {
    pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
        json!([{"name": "app", "image": "mcp:1", "ports": [{"containerPort": 8080}]}]),
    )
}

fn named_ports() -> Pod {
    pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso", "mcpwarden.dev/upstream-port": "http"}),
        json!([{
            "name": "app",
            "image": "mcp:1",
            "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "metrics", "containerPort": 9090},
                {"name": "other", "containerPort": 8000}
            ],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": "http"}}
        }]),
    )
}

/// Renders an outcome as the golden JSON and checks it against (or writes) the file.
fn golden(name: &str, outcome: &Outcome, input: &Pod) {
    let value = match outcome {
        Outcome::Skipped(skip) => json!({"outcome": "skipped", "why": format!("{skip:?}")}),
        Outcome::Denied(why) => json!({"outcome": "denied", "message": why}),
        Outcome::Injected {
            pod,
            patch,
            warnings,
        } => {
            // The patch turns the submitted pod into the returned one.
            let mut patched = serde_json::to_value(input).unwrap();
            json_patch::patch(&mut patched, patch).unwrap();
            assert_eq!(patched, serde_json::to_value(pod.as_ref()).unwrap());
            // The API server would accept the result.
            k8s_rules::assert_valid(&patched);
            let mut v = json!({"outcome": "injected", "patch": patch});
            if !warnings.is_empty() {
                v["warnings"] = json!(warnings);
            }
            v
        }
    };
    let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(text, want, "{name} differs from {}", path.display());
}

fn injected(outcome: &Outcome) -> Pod {
    match outcome {
        Outcome::Injected { pod, .. } => (**pod).clone(),
        other => panic!("expected injection, got {other:?}"),
    }
}

fn sidecar_args(pod: &Pod, native: bool) -> Vec<String> {
    let spec = pod.spec.as_ref().unwrap();
    let list = if native {
        spec.init_containers.as_ref().unwrap()
    } else {
        &spec.containers
    };
    let c = list.iter().find(|c| c.name == "mcp-warden").unwrap();
    c.args.clone().unwrap()
}

#[test]
fn plain_pod_native() {
    let input = plain();
    let out = review(&input, false, &policies(), &settings(true));
    golden("plain-native", &out, &input);
    let pod = injected(&out);
    assert_eq!(
        sidecar_args(&pod, true),
        [
            "--policy",
            "/etc/mcp-warden/config/policy.yaml",
            "--upstream",
            "http://127.0.0.1:8080",
            "--listen",
            "0.0.0.0:8000",
            "--admin",
            "0.0.0.0:9090",
            "--secrets-dir",
            "/etc/mcp-warden/secrets"
        ]
    );
    let init = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(init.restart_policy.as_deref(), Some("Always"));
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["mcpwarden.dev/policy"],
        "corp-sso"
    );
}

#[test]
fn plain_pod_fallback_container() {
    let input = plain();
    let out = review(&input, false, &policies(), &settings(false));
    golden("plain-fallback", &out, &input);
    let pod = injected(&out);
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers[1].name, "mcp-warden");
    assert!(spec.containers[1].restart_policy.is_none());
}

#[test]
fn per_pod_annotation_overrides_native_mode() {
    let mut input = plain();
    input
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mcpwarden.dev/native-sidecar".into(), "false".into());
    let pod = injected(&review(&input, false, &policies(), &settings(true)));
    assert!(pod.spec.unwrap().init_containers.is_none());
    input
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mcpwarden.dev/native-sidecar".into(), "maybe".into());
    assert!(matches!(
        review(&input, false, &policies(), &settings(true)),
        Outcome::Denied(m) if m.contains("native-sidecar")
    ));
}

#[test]
fn named_port_takeover_and_port_collisions() {
    let input = named_ports();
    let out = review(&input, false, &policies(), &settings(true));
    golden("named-ports", &out, &input);
    let pod = injected(&out);
    let spec = pod.spec.as_ref().unwrap();
    let app = &spec.containers[0];
    let app_ports = app.ports.as_ref().unwrap();
    assert_eq!(app_ports[0].name.as_deref(), Some("app-http"));
    // Probes follow the renamed port and keep hitting the app directly.
    let probe = app
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("app-http".into())
    );
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    let ports = sidecar.ports.as_ref().unwrap();
    // 8000 and 9090 are taken by the app: the sidecar moves up.
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("http"), 8001)
    );
    assert_eq!(
        (ports[1].name.as_deref(), ports[1].container_port),
        (Some("warden-admin"), 9091)
    );
}

#[test]
fn multiple_containers() {
    let containers = json!([
        {"name": "app", "image": "mcp:1", "ports": [{"containerPort": 3000, "name": "web"}]},
        {"name": "cache", "image": "redis:7", "ports": [{"containerPort": 6379}]}
    ]);
    let without = pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "github"}),
        containers.clone(),
    );
    let out = review(&without, false, &policies(), &settings(true));
    golden("multi-container-no-port", &out, &without);
    let with = pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({
            "mcpwarden.dev/policy": "github",
            "mcpwarden.dev/upstream-port": "3000",
            "mcpwarden.dev/resource-url": "https://tools.example.com/mcp"
        }),
        containers,
    );
    let out = review(&with, false, &policies(), &settings(true));
    golden("multi-container-proxy", &out, &with);
    let pod = injected(&out);
    let args = sidecar_args(&pod, true);
    assert!(args.ends_with(&[
        "--resource-url".into(),
        "https://tools.example.com/mcp".into()
    ]));
    let mounts: Vec<String> = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.clone())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/mcp-warden/config",
            "/etc/mcp-warden/secrets/github-oauth",
            "/etc/mcp-warden/secrets/mcp-warden-github-keys",
            "/etc/mcp-warden/secrets/redis-auth"
        ]
    );
}

#[test]
fn already_injected_pod_is_left_alone() {
    let first = injected(&review(&plain(), false, &policies(), &settings(true)));
    let out = review(&first, false, &policies(), &settings(true));
    golden("already-injected", &out, &first);
}

#[test]
fn pods_that_did_not_opt_in_are_never_touched() {
    let mut input = plain();
    input.metadata.labels = None;
    let out = review(&input, false, &[], &settings(true));
    golden("not-opted-in", &out, &input);
    // Opted-in namespace, pod opts out: also untouched, even without any policy.
    let mut opted_out = plain();
    opted_out
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("mcpwarden.dev/inject".into(), "false".into());
    let out = review(&opted_out, true, &[], &settings(true));
    golden("opted-out", &out, &opted_out);
}

#[test]
fn namespace_opt_in_without_a_policy_admits_the_pod_unchanged() {
    let mut no_annotation = plain();
    no_annotation.metadata.annotations = None;
    no_annotation.metadata.labels = None;
    let out = review(&no_annotation, true, &policies(), &settings(true));
    assert_eq!(out, Outcome::Skipped(Skip::NoPolicy));
    golden("namespace-opt-in-without-policy", &out, &no_annotation);
}

#[test]
fn missing_or_broken_policy_is_denied_for_opted_in_pods() {
    let input = plain();
    let out = review(&input, false, &[], &settings(true));
    golden("missing-policy", &out, &input);
    // Opted in by its own label but naming no policy: denied, saying what to add.
    let mut labelled = plain();
    labelled.metadata.annotations = None;
    let out = review(&labelled, false, &policies(), &settings(true));
    assert!(
        matches!(&out, Outcome::Denied(m) if m.contains("mcpwarden.dev/default-policy")),
        "{out:?}"
    );
    let mut broken = policies();
    broken[0].spec.jwt = None;
    let out = review(&plain(), false, &broken, &settings(true));
    assert!(
        matches!(&out, Outcome::Denied(m) if m.contains("spec.jwt: required")),
        "{out:?}"
    );
}

#[test]
fn existing_init_containers_and_volumes_are_appended_to() {
    let input = pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "corp-sso"}),
        json!([{"name": "app", "image": "mcp:1", "ports": [{"containerPort": 8080}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]),
    );
    let mut input = input;
    let spec = input.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![
        serde_json::from_value(json!({"name": "migrate", "image": "mcp:1", "args": ["migrate"]}))
            .unwrap(),
    ]);
    spec.volumes = Some(vec![
        serde_json::from_value(json!({"name": "data", "emptyDir": {}})).unwrap(),
    ]);
    let out = review(&input, false, &policies(), &settings(true));
    golden("existing-init-and-volumes", &out, &input);
    let Outcome::Injected { patch, .. } = &out else {
        panic!("{out:?}")
    };
    // Only additions: nothing the user wrote is replaced or removed.
    let ops = serde_json::to_value(patch).unwrap();
    for op in ops.as_array().unwrap() {
        assert_eq!(op["op"], "add", "{op}");
    }
}

/// Every container port of `pod` that `np` admits ingress to, as (container, port number).
fn opened_ports(
    np: &k8s_openapi::api::networking::v1::NetworkPolicy,
    pod: &Pod,
) -> Vec<(String, i32)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let spec = pod.spec.as_ref().unwrap();
    let rules = np
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .clone()
        .unwrap_or_default();
    let mut opened = Vec::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            let admitted = rules.iter().any(|r| match &r.ports {
                None => true,
                Some(ports) => {
                    ports.is_empty()
                        || ports.iter().any(|np| match &np.port {
                            Some(IntOrString::Int(n)) => *n == p.container_port,
                            Some(IntOrString::String(name)) => p.name.as_deref() == Some(name),
                            None => true,
                        })
                }
            });
            if admitted {
                opened.push((c.name.clone(), p.container_port));
            }
        }
    }
    opened
}

#[test]
fn network_policy_opens_only_the_sidecar_ports() {
    use mcp_warden_operator::netpol;
    // The app listens on 8000 (the Python SDK's default) next to its upstream port: the sidecar
    // moves to 8001, and 8000 must stay closed.
    let pod = injected(&review(&named_ports(), false, &policies(), &settings(true)));
    let allowed = netpol::allowed_ports(std::slice::from_ref(&pod));
    let np = netpol::network_policy("corp-sso", "tools", Default::default(), &allowed.names);
    assert_eq!(
        opened_ports(&np, &pod),
        [
            ("mcp-warden".to_owned(), 8001),
            ("mcp-warden".to_owned(), 9091)
        ]
    );
}

#[test]
fn host_network_pods_are_denied() {
    let mut input = plain();
    input.spec.as_mut().unwrap().host_network = Some(true);
    match review(&input, false, &policies(), &settings(true)) {
        Outcome::Denied(why) => assert!(why.contains("hostNetwork"), "{why}"),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn sidecar_names_never_collide_with_the_pods_own() {
    // The pod already uses the sidecar's port names (on another container), its volume names,
    // and a preStop hook on the port the sidecar takes over.
    let mut input = pod(
        json!({"mcpwarden.dev/inject": "true"}),
        json!({"mcpwarden.dev/policy": "github", "mcpwarden.dev/upstream-port": "http"}),
        json!([
            {"name": "app", "image": "mcp:1",
             "ports": [{"name": "http", "containerPort": 8080}, {"name": "app-http", "containerPort": 8081}],
             "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": "http"}}},
             "volumeMounts": [{"name": "mcp-warden-config", "mountPath": "/config"}]},
            {"name": "helper", "image": "helper:1",
             "ports": [{"name": "mcp-warden", "containerPort": 7000},
                       {"name": "warden-admin", "containerPort": 7001}]}
        ]),
    );
    input.spec.as_mut().unwrap().volumes = Some(
        serde_json::from_value(json!([
            {"name": "mcp-warden-config", "emptyDir": {}},
            {"name": "mcp-warden-secret-0", "emptyDir": {}}
        ]))
        .unwrap(),
    );
    let out = review(&input, false, &policies(), &settings(true));
    golden("name-collisions", &out, &input);
    let pod = serde_json::to_value(injected(&out)).unwrap();
    let spec = &pod["spec"];
    let sidecar = &spec["initContainers"][0];
    assert_eq!(sidecar["ports"][0]["name"], "http");
    assert_eq!(sidecar["ports"][1]["name"], "warden-admin-1");
    assert_eq!(spec["containers"][0]["ports"][0]["name"], "app-http-1");
    assert_eq!(
        spec["containers"][0]["lifecycle"]["preStop"]["httpGet"]["port"],
        "app-http-1"
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "mcp-warden-config",
            "mcp-warden-secret-0",
            "mcp-warden-config-1",
            "mcp-warden-secret-0-1",
            "mcp-warden-secret-1",
            "mcp-warden-secret-2"
        ]
    );

    // Without a named upstream the public port avoids the taken `mcp-warden` too.
    let mut unnamed = input.clone();
    unnamed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mcpwarden.dev/upstream-port".into(), "7002".into());
    let out = review(&unnamed, false, &policies(), &settings(false));
    let pod = serde_json::to_value(injected(&out)).unwrap();
    k8s_rules::assert_valid(&pod);
    assert_eq!(
        pod["spec"]["containers"][2]["ports"][0]["name"],
        "mcp-warden-1"
    );
    let Outcome::Injected { warnings, .. } = &out else {
        unreachable!()
    };
    assert!(
        warnings[0].contains("targetPort mcp-warden-1"),
        "{warnings:?}"
    );
}

#[test]
fn resource_annotations_set_the_sidecar_resources() {
    // A namespace whose ResourceQuota covers limits.cpu refuses a pod without a CPU limit on
    // every container: the pod sets the sidecar's.
    let mut input = plain();
    let annotations = input.metadata.annotations.as_mut().unwrap();
    annotations.insert("mcpwarden.dev/sidecar-cpu-limit".into(), "250m".into());
    annotations.insert(
        "mcpwarden.dev/sidecar-ephemeral-storage-limit".into(),
        "64Mi".into(),
    );
    let pod = injected(&review(&input, false, &policies(), &settings(true)));
    let sidecar = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let limits = sidecar.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "250m");
    assert_eq!(limits["ephemeral-storage"].0, "64Mi");
    assert_eq!(limits["memory"].0, "128Mi", "defaults stay");
    k8s_rules::assert_valid(&serde_json::to_value(&pod).unwrap());

    let annotations = input.metadata.annotations.as_mut().unwrap();
    annotations.insert("mcpwarden.dev/sidecar-memory-request".into(), "1Gi".into());
    match review(&input, false, &policies(), &settings(true)) {
        Outcome::Denied(why) => assert!(
            why.contains("memory request 1Gi is above its limit 128Mi"),
            "{why}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    input
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mcpwarden.dev/sidecar-memory-request".into(), "1 GB".into());
    match review(&input, false, &policies(), &settings(true)) {
        Outcome::Denied(why) => assert!(why.contains("sidecar-memory-request"), "{why}"),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn the_fixed_uid_can_be_left_to_the_platform() {
    // OpenShift's restricted SCC assigns the UID and refuses one outside the namespace's range.
    let settings = InjectSettings {
        fixed_uid: false,
        ..settings(true)
    };
    let pod = injected(&review(&plain(), false, &policies(), &settings));
    let sidecar = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (None, None));
    assert_eq!(sc.run_as_non_root, Some(true));
    k8s_rules::assert_valid(&serde_json::to_value(&pod).unwrap());
}

#[test]
fn tracing_settings_reach_the_sidecar_environment() {
    use clap::Parser;
    let args = mcp_warden_operator::operator_cli::Args::parse_from([
        "mcp-warden-operator",
        "--sidecar-otlp-endpoint",
        "http://otel-collector.observability:4318",
        "--sidecar-traces-sampler",
        "parentbased_traceidratio",
    ]);
    let traced = InjectSettings {
        env: mcp_warden_operator::operator_cli::inject_settings(&args, true).env,
        ..settings(true)
    };
    let pod = injected(&review(&plain(), false, &policies(), &traced));
    let sidecar = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let env = sidecar.env.as_ref().expect("tracing environment");
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4318")
    );
    assert_eq!(
        value("OTEL_TRACES_SAMPLER").as_deref(),
        Some("parentbased_traceidratio")
    );
    assert!(
        value("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap()
            .contains("k8s.pod.name=$(MCP_WARDEN_POD_NAME)")
    );
    k8s_rules::assert_valid(&serde_json::to_value(&pod).unwrap());
    // Off by default: no environment at all.
    let pod = injected(&review(&plain(), false, &policies(), &settings(true)));
    let sidecar = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert!(sidecar.env.is_none());
}
