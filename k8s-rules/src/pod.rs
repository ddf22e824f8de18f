//! Pod specs and the workloads that carry pod templates.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::field::{Errors, Path, entries, items};
use crate::meta;
use crate::quantity::Quantity;
use crate::syntax;

/// `spec` of a Deployment, StatefulSet, DaemonSet, ReplicaSet or Job.
pub fn workload(spec: &Value, path: &Path, errs: &mut Errors) {
    let template = &spec["template"];
    template_at(template, &path.child("template"), errs);
    let selector = &spec["selector"];
    if selector.is_null() {
        return;
    }
    meta::label_selector(selector, &path.child("selector"), errs);
    let labels = template["metadata"]["labels"].as_object();
    let matches =
        entries(&selector["matchLabels"]).all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    if !matches {
        errs.invalid(
            &path.child("template").child("metadata").child("labels"),
            &template["metadata"]["labels"],
            "`selector` does not match template `labels`",
        );
    }
}

/// A `PodTemplateSpec`.
pub fn template(template: &Value, path: &Path, errs: &mut Errors) {
    template_at(template, path, errs);
}

fn template_at(template: &Value, path: &Path, errs: &mut Errors) {
    meta::labels_and_annotations(&template["metadata"], &path.child("metadata"), errs);
    pod_spec(&template["spec"], &path.child("spec"), errs);
}

/// A `PodSpec`.
pub fn pod_spec(spec: &Value, path: &Path, errs: &mut Errors) {
    let volumes = volumes(&spec["volumes"], &path.child("volumes"), errs);
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errs.required(&path.child("containers"), "");
    }
    errs.one_of(
        &path.child("restartPolicy"),
        &spec["restartPolicy"],
        &["Always", "OnFailure", "Never"],
    );
    let mut names = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    let lists = [
        ("initContainers", Kind::Init),
        ("containers", Kind::Regular),
        ("ephemeralContainers", Kind::Ephemeral),
    ];
    for (field, kind) in lists {
        for (i, c) in items(&spec[field]) {
            let at = path.child(field).index(i);
            let ctx = Ctx {
                volumes: &volumes,
                kind,
            };
            container(c, &at, &ctx, &mut names, &mut port_names, errs);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Regular,
    Ephemeral,
}

struct Ctx<'a> {
    volumes: &'a BTreeSet<String>,
    kind: Kind,
}

/// Checks `volumes` and returns their names.
fn volumes(list: &Value, path: &Path, errs: &mut Errors) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in items(list) {
        let at = path.index(i);
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.required(&at.child("name"), "");
        } else {
            errs.each(&at.child("name"), name, syntax::dns_label(name));
            if !names.insert(name.to_owned()) {
                errs.duplicate(&at.child("name"), name);
            }
        }
        let sources: Vec<&String> = entries(v)
            .map(|(k, _)| k)
            .filter(|k| *k != "name")
            .collect();
        match sources.len() {
            0 => errs.required(&at, "must specify a volume type"),
            1 => {}
            _ => errs.forbidden(
                &at.child(sources[1]),
                "may not specify more than 1 volume type",
            ),
        }
        if let Some(cm) = v.get("configMap") {
            let at = at.child("configMap");
            if cm["name"].as_str().is_none_or(str::is_empty) {
                errs.required(&at.child("name"), "");
            }
            key_to_paths(cm, &at, errs);
        }
        if let Some(secret) = v.get("secret") {
            let at = at.child("secret");
            if secret["secretName"].as_str().is_none_or(str::is_empty) {
                errs.required(&at.child("secretName"), "");
            }
            key_to_paths(secret, &at, errs);
        }
    }
    names
}

/// `items` and `defaultMode` of a ConfigMap or Secret volume.
fn key_to_paths(source: &Value, path: &Path, errs: &mut Errors) {
    file_mode(&source["defaultMode"], &path.child("defaultMode"), errs);
    for (i, item) in items(&source["items"]) {
        let at = path.child("items").index(i);
        let key = item["key"].as_str().unwrap_or_default();
        if key.is_empty() {
            errs.required(&at.child("key"), "");
        } else {
            errs.each(&at.child("key"), key, syntax::config_key(key));
        }
        let file = item["path"].as_str().unwrap_or_default();
        if file.is_empty() {
            errs.required(&at.child("path"), "");
        } else {
            errs.each(&at.child("path"), file, syntax::local_path(file));
            if file.split('/').next().is_some_and(|p| p.starts_with("..")) {
                errs.invalid_str(&at.child("path"), file, "must not start with '..'");
            }
        }
        file_mode(&item["mode"], &at.child("mode"), errs);
    }
}

fn file_mode(mode: &Value, path: &Path, errs: &mut Errors) {
    if let Some(m) = mode.as_i64()
        && !(0..=0o777).contains(&m)
    {
        errs.invalid(
            path,
            mode,
            "must be a number between 0 and 0777 (octal), both inclusive",
        );
    }
}

fn container(
    c: &Value,
    path: &Path,
    ctx: &Ctx,
    names: &mut BTreeSet<String>,
    port_names: &mut BTreeSet<String>,
    errs: &mut Errors,
) {
    let name = c["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        errs.required(&path.child("name"), "");
    } else {
        errs.each(&path.child("name"), name, syntax::dns_label(name));
        if !names.insert(name.to_owned()) {
            errs.duplicate(&path.child("name"), name);
        }
    }
    if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
        errs.required(&path.child("image"), "");
    }
    let own_ports = ports(&c["ports"], &path.child("ports"), port_names, errs);
    restart_policy(c, path, ctx.kind, errs);
    let sidecar = ctx.kind == Kind::Init && c["restartPolicy"] == "Always";
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.get(probe).filter(|p| !p.is_null()) else {
            continue;
        };
        let at = path.child(probe);
        if ctx.kind == Kind::Init && !sidecar {
            errs.forbidden(
                &at,
                "may not be set for init containers without restartPolicy=Always",
            );
            continue;
        }
        handler(p, &at, &own_ports, true, errs);
        if probe != "readinessProbe"
            && let Some(n) = p["successThreshold"].as_i64()
            && n != 1
        {
            errs.invalid(
                &at.child("successThreshold"),
                &p["successThreshold"],
                "must be 1",
            );
        }
    }
    for hook in ["postStart", "preStop"] {
        let Some(h) = c["lifecycle"].get(hook).filter(|h| !h.is_null()) else {
            continue;
        };
        let at = path.child("lifecycle").child(hook);
        if ctx.kind == Kind::Init && !sidecar {
            errs.forbidden(
                &path.child("lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            );
            continue;
        }
        handler(h, &at, &own_ports, false, errs);
    }
    volume_mounts(c, path, ctx.volumes, errs);
    env(&c["env"], &path.child("env"), errs);
    resources(&c["resources"], &path.child("resources"), errs);
    security_context(&c["securityContext"], &path.child("securityContext"), errs);
}

/// Checks `ports`; returns this container's port names. Names must be unique across the whole
/// pod: stricter than the API server (which checks each container's list), because a Service's
/// named `targetPort` and a NetworkPolicy's named port resolve against every container of the
/// pod, and a name used twice makes them ambiguous.
fn ports(
    list: &Value,
    path: &Path,
    pod_names: &mut BTreeSet<String>,
    errs: &mut Errors,
) -> BTreeSet<String> {
    let mut own = BTreeSet::new();
    for (i, p) in items(list) {
        let at = path.index(i);
        match p["containerPort"].as_i64() {
            None | Some(0) => errs.required(&at.child("containerPort"), ""),
            Some(n) => {
                for m in syntax::port_number(n) {
                    errs.invalid(&at.child("containerPort"), &p["containerPort"], m);
                }
            }
        }
        if let Some(n) = p["hostPort"].as_i64()
            && n != 0
        {
            for m in syntax::port_number(n) {
                errs.invalid(&at.child("hostPort"), &p["hostPort"], m);
            }
        }
        errs.one_of(
            &at.child("protocol"),
            &p["protocol"],
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
            let msgs = syntax::port_name(name);
            if !msgs.is_empty() {
                errs.each(&at.child("name"), name, msgs);
            } else if !pod_names.insert(name.to_owned()) {
                errs.duplicate(&at.child("name"), name);
            }
            own.insert(name.to_owned());
        }
    }
    own
}

fn restart_policy(c: &Value, path: &Path, kind: Kind, errs: &mut Errors) {
    let policy = &c["restartPolicy"];
    if policy.is_null() {
        return;
    }
    let at = path.child("restartPolicy");
    match kind {
        Kind::Init => errs.one_of(&at, policy, &["Always"]),
        Kind::Regular | Kind::Ephemeral => {
            errs.forbidden(&at, "may not be set for non-init containers")
        }
    }
}

/// A probe or lifecycle handler: exactly one action; ports must be valid and, when named,
/// one of the container's own ports.
fn handler(h: &Value, path: &Path, own_ports: &BTreeSet<String>, probe: bool, errs: &mut Errors) {
    let actions: &[&str] = if probe {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    } else {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    };
    let set: Vec<&str> = actions
        .iter()
        .copied()
        .filter(|a| h.get(a).is_some_and(|v| !v.is_null()))
        .collect();
    match set.len() {
        0 => errs.required(path, "must specify a handler type"),
        1 => {}
        _ => errs.forbidden(
            &path.child(set[1]),
            "may not specify more than 1 handler type",
        ),
    }
    for action in ["httpGet", "tcpSocket"] {
        if let Some(a) = h.get(action).filter(|a| !a.is_null()) {
            port_ref(
                &a["port"],
                &path.child(action).child("port"),
                own_ports,
                errs,
            );
        }
        if action == "httpGet"
            && let Some(a) = h.get(action)
        {
            errs.one_of(
                &path.child(action).child("scheme"),
                &a["scheme"],
                &["HTTP", "HTTPS"],
            );
        }
    }
    if let Some(g) = h.get("grpc").filter(|g| !g.is_null()) {
        let port = g["port"].as_i64().unwrap_or(0);
        for m in syntax::port_number(port) {
            errs.invalid(&path.child("grpc").child("port"), &g["port"], m);
        }
    }
}

/// A port given by number or by name; names must be one of the container's ports (the
/// kubelet resolves them against the same container only).
fn port_ref(port: &Value, path: &Path, own_ports: &BTreeSet<String>, errs: &mut Errors) {
    match port {
        Value::Number(n) => {
            for m in syntax::port_number(n.as_i64().unwrap_or(0)) {
                errs.invalid(path, port, m);
            }
        }
        Value::String(name) => {
            let msgs = syntax::port_name(name);
            if !msgs.is_empty() {
                errs.each(path, name, msgs);
            } else if !own_ports.contains(name) {
                errs.invalid_str(path, name, "must be the name of a port of this container");
            }
        }
        Value::Null => errs.required(path, ""),
        other => errs.invalid(path, other, "must be a port number or name"),
    }
}

fn volume_mounts(c: &Value, path: &Path, volumes: &BTreeSet<String>, errs: &mut Errors) {
    let mut paths = BTreeSet::new();
    for (i, m) in items(&c["volumeMounts"]) {
        let at = path.child("volumeMounts").index(i);
        let name = m["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.required(&at.child("name"), "");
        } else if !volumes.contains(name) {
            errs.not_found(&at.child("name"), name);
        }
        let mount_path = m["mountPath"].as_str().unwrap_or_default();
        if mount_path.is_empty() {
            errs.required(&at.child("mountPath"), "");
        } else if !paths.insert(mount_path.trim_end_matches('/').to_owned()) {
            errs.invalid_str(&at.child("mountPath"), mount_path, "must be unique");
        }
        let sub_path = m["subPath"].as_str().unwrap_or_default();
        if !sub_path.is_empty() {
            errs.each(&at.child("subPath"), sub_path, syntax::local_path(sub_path));
            if m["subPathExpr"].as_str().is_some_and(|s| !s.is_empty()) {
                errs.invalid_str(
                    &at.child("subPathExpr"),
                    m["subPathExpr"].as_str().unwrap_or_default(),
                    "subPathExpr and subPath are mutually exclusive",
                );
            }
        }
    }
}

fn env(list: &Value, path: &Path, errs: &mut Errors) {
    for (i, e) in items(list) {
        let at = path.index(i);
        let name = e["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.required(&at.child("name"), "");
        } else {
            errs.each(&at.child("name"), name, syntax::env_var_name(name));
        }
        let from = &e["valueFrom"];
        if from.is_null() {
            continue;
        }
        if e["value"].as_str().is_some_and(|v| !v.is_empty()) {
            errs.invalid(
                &at.child("valueFrom"),
                &Value::String(String::new()),
                "may not be specified when `value` is not empty",
            );
        }
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
            "fileKeyRef",
        ]
        .iter()
        .filter(|s| from.get(**s).is_some_and(|v| !v.is_null()))
        .count();
        if sources != 1 {
            errs.invalid(
                &at.child("valueFrom"),
                &Value::String(String::new()),
                "may not have more than one field specified at a time",
            );
        }
        for key_ref in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = from.get(key_ref).filter(|r| !r.is_null()) {
                let key = r["key"].as_str().unwrap_or_default();
                let key_at = at.child("valueFrom").child(key_ref).child("key");
                if key.is_empty() {
                    errs.required(&key_at, "");
                } else {
                    errs.each(&key_at, key, syntax::config_key(key));
                }
            }
        }
    }
}

const STANDARD_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

fn resources(res: &Value, path: &Path, errs: &mut Errors) {
    let mut parsed: [BTreeMap<String, (Quantity, String)>; 2] = Default::default();
    for (slot, field) in ["limits", "requests"].iter().enumerate() {
        let at = path.child(field);
        for (name, value) in entries(&res[*field]) {
            let key_at = at.key(name);
            let standard = STANDARD_RESOURCES.contains(&name.as_str())
                || name.starts_with("hugepages-")
                || name.contains('/');
            if !standard {
                errs.invalid_str(
                    &key_at,
                    name,
                    "must be a standard resource type or fully qualified",
                );
            } else {
                errs.each(&key_at, name, syntax::qualified_name(name));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    errs.invalid(&key_at, other, "must be a quantity");
                    continue;
                }
            };
            match Quantity::parse(&text) {
                Err(e) => errs.invalid_str(&key_at, &text, e),
                Ok(q) if q.is_negative() => {
                    errs.invalid_str(&key_at, &text, "must be greater than or equal to 0")
                }
                Ok(q) => {
                    parsed[slot].insert(name.clone(), (q, text));
                }
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, (request, text)) in requests {
        if let Some((limit, limit_text)) = limits.get(name)
            && request > limit
        {
            errs.invalid_str(
                &path.child("requests"),
                text,
                format!("must be less than or equal to {name} limit of {limit_text}"),
            );
        }
    }
}

/// The kubelet refuses to start a container that must run as non-root with user 0.
fn security_context(sc: &Value, path: &Path, errs: &mut Errors) {
    if sc["runAsNonRoot"] == true && sc["runAsUser"] == 0 {
        errs.invalid(
            &path.child("runAsUser"),
            &sc["runAsUser"],
            "runAsNonRoot is true: the kubelet refuses to start the container as user 0",
        );
    }
}
