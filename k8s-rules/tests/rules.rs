//! The checker against valid and invalid objects, one rule at a time.

use k8s_rules::{assert_valid, check};
use serde_json::{Value, json};

/// The violations of `object`, as the API server prints them.
fn errors(object: &Value) -> Vec<String> {
    check(object).iter().map(ToString::to_string).collect()
}

/// Asserts exactly one violation containing `want`.
#[track_caller]
fn refused(object: &Value, want: &str) {
    let errs = errors(object);
    assert!(
        errs.len() == 1 && errs[0].contains(want),
        "expected one violation containing {want:?}, got {errs:#?}"
    );
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
}

fn app() -> Value {
    json!({"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}})
}

#[test]
fn a_realistic_pod_passes() {
    assert_valid(&pod(json!({
        "containers": [app(), {"name": "cache", "image": "redis:7",
            "ports": [{"containerPort": 6379, "name": "redis", "protocol": "TCP"}],
            "env": [{"name": "REDIS_ARGS", "value": "--save"}, {"name": "my.var-x", "value": ""},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                             {"name": "cfg", "mountPath": "/etc/cfg/a.conf", "subPath": "a.conf"}],
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": 1, "memory": "128Mi"}},
            "lifecycle": {"preStop": {"tcpSocket": {"port": "redis"}}}}],
        "initContainers": [{"name": "proxy", "image": "p:1", "restartPolicy": "Always",
            "ports": [{"containerPort": 9090, "name": "warden-admin"}],
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "warden-admin"}}}],
        "volumes": [{"name": "data", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "a.conf", "path": "a.conf"}]}},
                    {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o440}}]
    })));
}

#[test]
fn the_sixteen_character_port_name_is_refused_as_the_server_words_it() {
    let p = pod(
        json!({"containers": [app(), {"name": "mcp-warden", "image": "s:1", "ports": [
        {"name": "mcp-warden", "containerPort": 8000},
        {"name": "mcp-warden-admin", "containerPort": 9090}]}]}),
    );
    assert_eq!(
        errors(&p),
        [
            r#"spec.containers[1].ports[1].name: Invalid value: "mcp-warden-admin": must be no more than 15 characters"#
        ]
    );
}

#[test]
fn port_names_follow_iana_and_are_unique_in_the_pod() {
    for (name, msg) in [
        ("8080", "at least one letter"),
        ("a--b", "consecutive hyphens"),
        ("-web", "begin or end with a hyphen"),
        ("Web", "alpha-numeric"),
    ] {
        refused(
            &pod(
                json!({"containers": [{"name": "a", "image": "i", "ports": [{"name": name, "containerPort": 1}]}]}),
            ),
            msg,
        );
    }
    refused(
        &pod(
            json!({"containers": [app(), {"name": "b", "image": "i", "ports": [{"name": "http", "containerPort": 81}]}]}),
        ),
        r#"spec.containers[1].ports[0].name: Duplicate value: "http""#,
    );
    refused(
        &pod(
            json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 70000}]}]}),
        ),
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    refused(
        &pod(
            json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]}),
        ),
        "Unsupported value: \"HTTP\"",
    );
}

#[test]
fn container_names_are_labels_unique_across_init_and_app_containers() {
    refused(
        &pod(json!({"containers": [app()], "initContainers": [{"name": "app", "image": "i"}]})),
        r#"spec.containers[0].name: Duplicate value: "app""#,
    );
    refused(
        &pod(json!({"containers": [{"name": "App_1", "image": "i"}]})),
        "RFC 1123 label",
    );
    refused(
        &pod(json!({"containers": [{"name": "a".repeat(64), "image": "i"}]})),
        "must be no more than 63 characters",
    );
    refused(
        &pod(json!({"containers": []})),
        "spec.containers: Required value",
    );
    refused(
        &pod(json!({"containers": [{"name": "a"}]})),
        "spec.containers[0].image: Required value",
    );
}

#[test]
fn named_probe_and_hook_ports_must_be_the_containers_own() {
    let mut other = app();
    other["name"] = json!("other");
    other["ports"] = json!([{"name": "web", "containerPort": 81}]);
    other["readinessProbe"] = json!({"httpGet": {"port": "http"}});
    refused(
        &pod(json!({"containers": [app(), other]})),
        r#"spec.containers[1].readinessProbe.httpGet.port: Invalid value: "http": must be the name of a port of this container"#,
    );
    let mut hook = app();
    hook["lifecycle"] = json!({"preStop": {"httpGet": {"path": "/drain", "port": "admin"}}});
    refused(
        &pod(json!({"containers": [hook]})),
        "spec.containers[0].lifecycle.preStop.httpGet.port",
    );
    let mut long = app();
    long["livenessProbe"] = json!({"tcpSocket": {"port": "mcp-warden-admin"}});
    refused(
        &pod(json!({"containers": [long]})),
        r#"spec.containers[0].livenessProbe.tcpSocket.port: Invalid value: "mcp-warden-admin": must be no more than 15 characters"#,
    );
    let mut two = app();
    two["livenessProbe"] = json!({"tcpSocket": {"port": 8080}, "exec": {"command": ["true"]}});
    refused(
        &pod(json!({"containers": [two]})),
        "may not specify more than 1 handler type",
    );
    let mut threshold = app();
    threshold["livenessProbe"] = json!({"tcpSocket": {"port": 8080}, "successThreshold": 2});
    refused(
        &pod(json!({"containers": [threshold]})),
        "successThreshold: Invalid value: 2: must be 1",
    );
}

#[test]
fn restart_policy_only_always_and_only_on_init_containers() {
    refused(
        &pod(json!({"containers": [{"name": "a", "image": "i", "restartPolicy": "Always"}]})),
        "spec.containers[0].restartPolicy: Forbidden",
    );
    refused(
        &pod(
            json!({"containers": [app()], "initContainers": [{"name": "i", "image": "i", "restartPolicy": "OnFailure"}]}),
        ),
        r#"spec.initContainers[0].restartPolicy: Unsupported value: "OnFailure": supported values: "Always""#,
    );
    // Plain init containers run to completion: no probes.
    refused(
        &pod(
            json!({"containers": [app()], "initContainers": [{"name": "i", "image": "i",
            "readinessProbe": {"exec": {"command": ["true"]}}}]}),
        ),
        "spec.initContainers[0].readinessProbe: Forbidden",
    );
}

#[test]
fn volumes_and_mounts() {
    let with = |volumes: Value, mounts: Value| {
        pod(
            json!({"containers": [{"name": "a", "image": "i", "volumeMounts": mounts}], "volumes": volumes}),
        )
    };
    refused(
        &with(
            json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]),
            json!([]),
        ),
        r#"spec.volumes[1].name: Duplicate value: "v""#,
    );
    refused(
        &with(json!([{"name": "V", "emptyDir": {}}]), json!([])),
        "RFC 1123 label",
    );
    refused(
        &with(json!([{"name": "v"}]), json!([])),
        "must specify a volume type",
    );
    refused(
        &with(json!([]), json!([{"name": "missing", "mountPath": "/m"}])),
        r#"spec.containers[0].volumeMounts[0].name: Not found: "missing""#,
    );
    refused(
        &with(
            json!([{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]),
            json!([{"name": "v", "mountPath": "/m"}, {"name": "w", "mountPath": "/m"}]),
        ),
        "volumeMounts[1].mountPath: Invalid value: \"/m\": must be unique",
    );
    refused(
        &with(
            json!([{"name": "v", "emptyDir": {}}]),
            json!([{"name": "v", "mountPath": "/m", "subPath": "../etc"}]),
        ),
        "subPath: Invalid value: \"../etc\": must not contain '..'",
    );
    refused(
        &with(
            json!([{"name": "v", "emptyDir": {}}]),
            json!([{"name": "v", "mountPath": "/m", "subPath": "/abs"}]),
        ),
        "must be a relative path",
    );
    refused(
        &with(
            json!([{"name": "v", "configMap": {"name": "c", "items": [{"key": "a/b", "path": "x"}]}}]),
            json!([]),
        ),
        "spec.volumes[0].configMap.items[0].key",
    );
    refused(
        &with(
            json!([{"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "a/../x"}]}}]),
            json!([]),
        ),
        "spec.volumes[0].secret.items[0].path",
    );
    refused(
        &with(json!([{"name": "v", "secret": {}}]), json!([])),
        "secretName: Required value",
    );
}

#[test]
fn env_var_names() {
    let env = |e: Value| pod(json!({"containers": [{"name": "a", "image": "i", "env": e}]}));
    refused(
        &env(json!([{"name": "1X", "value": "v"}])),
        "spec.containers[0].env[0].name: Invalid value: \"1X\"",
    );
    refused(
        &env(json!([{"name": "A B"}])),
        "valid environment variable name",
    );
    refused(&env(json!([{"value": "v"}])), "env[0].name: Required value");
    refused(
        &env(
            json!([{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        ),
        "may not be specified when `value` is not empty",
    );
}

#[test]
fn resources_parse_and_requests_stay_within_limits() {
    let res = |r: Value| pod(json!({"containers": [{"name": "a", "image": "i", "resources": r}]}));
    refused(
        &res(json!({"requests": {"memory": "32MB"}})),
        "resources.requests[memory]: Invalid value: \"32MB\": quantities must match",
    );
    refused(
        &res(json!({"limits": {"cpu": "-1"}})),
        "must be greater than or equal to 0",
    );
    refused(
        &res(json!({"requests": {"gpu": "1"}})),
        "standard resource type",
    );
    refused(
        &res(json!({"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}})),
        "spec.containers[0].resources.requests: Invalid value: \"256Mi\": must be less than or equal to memory limit of 128Mi",
    );
    refused(
        &res(json!({"requests": {"cpu": "1.5"}, "limits": {"cpu": "1"}})),
        "must be less than or equal to cpu limit of 1",
    );
    assert_valid(&res(
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "0.5", "memory": "1024Mi", "example.com/dev": "1"}}),
    ));
}

#[test]
fn non_root_with_user_zero_is_refused() {
    refused(
        &pod(
            json!({"containers": [{"name": "a", "image": "i", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}),
        ),
        "securityContext.runAsUser",
    );
}

#[test]
fn labels_annotations_and_names() {
    let meta = |m: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": m});
    assert_valid(&meta(
        json!({"name": "mcp-warden-corp-sso", "labels": {"mcpwarden.dev/policy": "corp-sso", "app.kubernetes.io/name": ""},
        "annotations": {"mcpwarden.dev/status": "{\"any\": \"text\"}", "Example.com/UPPER": "x"}}),
    ));
    refused(
        &meta(json!({"name": "Bad_Name"})),
        "metadata.name: Invalid value: \"Bad_Name\"",
    );
    refused(&meta(json!({})), "metadata.name: Required value");
    refused(
        &meta(json!({"name": "a", "labels": {"x": "-bad"}})),
        "metadata.labels[x]: Invalid value: \"-bad\"",
    );
    refused(
        &meta(json!({"name": "a", "labels": {"x": "v".repeat(64)}})),
        "must be no more than 63 characters",
    );
    refused(
        &meta(json!({"name": "a", "labels": {"a/b/c": "v"}})),
        "metadata.labels: Invalid value: \"a/b/c\"",
    );
    refused(
        &meta(json!({"name": "a", "annotations": {"bad key": "v"}})),
        "metadata.annotations: Invalid value: \"bad key\"",
    );
    refused(
        &meta(json!({"name": "a", "annotations": {"big": "x".repeat(256 * 1024)}})),
        "metadata.annotations: Too long: must have at most 262144 bytes",
    );
    refused(
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}}),
        "RFC 1123 label",
    );
}

#[test]
fn config_map_and_secret_data() {
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
    assert_valid(&cm(json!({"policy.yaml": "a: b", "A_b-1": ""})));
    refused(
        &cm(json!({"a/b": "x"})),
        "data[a/b]: Invalid value: \"a/b\"",
    );
    refused(&cm(json!({"..": "x"})), "must not be '..'");
    refused(
        &cm(json!({"big": "x".repeat(1024 * 1024)})),
        "Too long: must have at most 1048576 bytes",
    );
    let both = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"k": "x"}, "binaryData": {"k": "eA=="}});
    refused(&both, "binaryData[k]: Duplicate value: \"k\"");
    let secret = |data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "data": data});
    assert_valid(&secret(json!({"keys.json": "e30="})));
    refused(&secret(json!({"k": "not base64!"})), "must be base64");
    refused(&secret(json!({"k y": "e30="})), "data[k y]");
}

#[test]
fn network_policies() {
    let np = |spec: Value| json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"}, "spec": spec});
    assert_valid(&np(
        json!({"podSelector": {"matchLabels": {"mcpwarden.dev/policy": "p"}}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "mcp-warden", "protocol": "TCP"}, {"port": 8000, "endPort": 8010}],
                     "from": [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}),
    ));
    refused(
        &np(json!({"podSelector": {}, "ingress": [{"ports": [{"port": "mcp-warden-admin"}]}]})),
        "spec.ingress[0].ports[0].port: Invalid value: \"mcp-warden-admin\": must be no more than 15 characters",
    );
    refused(
        &np(json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]})),
        "must be between 1 and 65535",
    );
    refused(
        &np(json!({"podSelector": {"matchLabels": {"k": "bad value"}}})),
        "spec.podSelector.matchLabels[k]",
    );
    refused(
        &np(json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}})),
        "values: Required value",
    );
    refused(&np(json!({})), "spec.podSelector: Required value");
    refused(
        &np(json!({"podSelector": {}, "policyTypes": ["Both"]})),
        "Unsupported value: \"Both\"",
    );
    refused(
        &np(json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]})),
        "valid CIDR",
    );
}

fn webhook(hook: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "mcp-warden"}, "webhooks": [hook]})
}

fn good_hook() -> Value {
    json!({"name": "pods.inject.mcpwarden.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
           "timeoutSeconds": 5, "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded",
           "clientConfig": {"service": {"namespace": "mcp-warden", "name": "mcp-warden-webhook", "path": "/mutate", "port": 443}},
           "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
           "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}})
}

#[test]
fn webhook_configurations() {
    assert_valid(&webhook(good_hook()));
    let with = |field: &str, value: Value| {
        let mut h = good_hook();
        h[field] = value;
        webhook(h)
    };
    refused(
        &with("name", json!("inject.mcpwarden")),
        "webhooks[0].name: Invalid value: \"inject.mcpwarden\": should be a domain with at least three segments",
    );
    refused(
        &with("timeoutSeconds", json!(31)),
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
    );
    refused(&with("timeoutSeconds", json!(0)), "between 1 and 30");
    refused(
        &with("sideEffects", json!("Some")),
        "webhooks[0].sideEffects: Unsupported value: \"Some\"",
    );
    refused(
        &with("sideEffects", Value::Null),
        "webhooks[0].sideEffects: Required value",
    );
    refused(
        &with("admissionReviewVersions", json!(["v1beta1"])),
        "must include v1",
    );
    refused(
        &with("admissionReviewVersions", json!([])),
        "admissionReviewVersions: Required value",
    );
    refused(
        &with("clientConfig", json!({})),
        "exactly one of url or service is required",
    );
    refused(
        &with(
            "clientConfig",
            json!({"url": "https://x.example", "service": {"namespace": "a", "name": "b"}}),
        ),
        "exactly one of url or service is required",
    );
    assert_valid(&with(
        "clientConfig",
        json!({"url": "https://hooks.example.com:8443/mutate"}),
    ));
    refused(
        &with("clientConfig", json!({"url": "http://hooks.example.com/"})),
        "'https' is the only allowed URL scheme",
    );
    refused(
        &with(
            "clientConfig",
            json!({"url": "https://u:p@hooks.example.com/"}),
        ),
        "user information",
    );
    refused(
        &with(
            "clientConfig",
            json!({"url": "https://hooks.example.com/?a=b"}),
        ),
        "query parameters",
    );
    refused(
        &with(
            "clientConfig",
            json!({"url": "https://hooks.example.com/#f"}),
        ),
        "fragments",
    );
    let twice = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "w"}, "webhooks": [good_hook(), good_hook()]});
    refused(
        &twice,
        "webhooks[1].name: Duplicate value: \"pods.inject.mcpwarden.dev\"",
    );
}

#[test]
fn workloads_check_their_pod_template() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "tools"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
            "spec": {"initContainers": [{"name": "s", "image": "i", "restartPolicy": "Always", "ports": [{"name": "mcp-warden-admin", "containerPort": 9090}]}],
                     "containers": [app()]}}}});
    refused(
        &deployment,
        r#"spec.template.spec.initContainers[0].ports[0].name: Invalid value: "mcp-warden-admin": must be no more than 15 characters"#,
    );
    let mut mismatch = deployment.clone();
    mismatch["spec"]["template"]["spec"]["initContainers"] = json!([]);
    mismatch["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    refused(&mismatch, "`selector` does not match template `labels`");
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "J", "image": "i"}]}}}}}});
    refused(
        &cron,
        "spec.jobTemplate.spec.template.spec.containers[0].name",
    );
}
