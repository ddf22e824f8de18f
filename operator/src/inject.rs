//! The injection: a pure function from a pod (and its policy) to the mutated pod and the JSON
//! patch the webhook returns. The webhook and `mcp-warden inject` both call [`review`] or
//! [`inject`]; nothing here talks to Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, Pod,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use mcp_warden_policy::{McpAuthPolicy, ValidatedResource};
use serde::Serialize;

use crate::names::*;
use crate::ports::{self, LABEL_MAX, PORT_NAME_MAX, Upstream};
use crate::render::secret_names;

/// Cluster-wide injection settings (from the operator's flags).
#[derive(Clone, Debug, PartialEq)]
pub struct InjectSettings {
    /// The sidecar image.
    pub sidecar_image: String,
    /// Inject a native sidecar (init container with `restartPolicy: Always`) unless the pod
    /// says otherwise; resolved from the API server version when the flag is `auto`.
    pub native_sidecar: bool,
    /// Preferred public port (moved up when a container already uses it).
    pub public_port: i32,
    /// Preferred admin port.
    pub admin_port: i32,
    /// Resources of the sidecar container.
    pub resources: ResourceRequirements,
    /// Set `runAsUser`/`runAsGroup` 65532 on the sidecar; off where the platform assigns the
    /// IDs (OpenShift's `restricted` SCC refuses a fixed one outside the namespace's range).
    pub fixed_uid: bool,
    /// Extra environment of the sidecar container: the OpenTelemetry export settings.
    pub env: Vec<EnvVar>,
}

impl Default for InjectSettings {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_owned());
        Self {
            sidecar_image: format!(
                "ghcr.io/mcp-warden/mcp-warden-sidecar:{}",
                env!("CARGO_PKG_VERSION")
            ),
            native_sidecar: true,
            public_port: DEFAULT_PUBLIC_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            fixed_uid: true,
            env: Vec::new(),
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), q("50m")),
                    ("memory".to_owned(), q("32Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".to_owned(), q("128Mi"))])),
                ..Default::default()
            },
        }
    }
}

/// Why a pod is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Neither the pod nor its namespace opted in.
    NotOptedIn,
    /// The namespace opted in, the pod opted out (`mcpwarden.dev/inject: "false"`).
    OptedOut,
    /// The pod already has the sidecar.
    AlreadyInjected,
    /// The namespace opted in, but neither the pod (`mcpwarden.dev/policy`) nor the namespace
    /// (`mcpwarden.dev/default-policy`) names a policy: admitted unchanged, with a warning.
    NoPolicy,
}

/// What the webhook does with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Allowed unchanged.
    Skipped(Skip),
    /// Allowed with the sidecar added.
    Injected {
        /// The pod as it will be created.
        pod: Box<Pod>,
        /// RFC 6902 patch from the submitted pod to `pod`.
        patch: json_patch::Patch,
        /// Things the user should know (shown by kubectl as admission warnings).
        warnings: Vec<String>,
    },
    /// Refused: the pod asked for injection, but it cannot be done.
    Denied(String),
}

impl Outcome {
    /// Bounded label for the injections metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Outcome::Skipped(Skip::NotOptedIn | Skip::OptedOut | Skip::NoPolicy) => "skipped",
            Outcome::Skipped(Skip::AlreadyInjected) => "already_injected",
            Outcome::Injected { .. } => "injected",
            Outcome::Denied(_) => "denied",
        }
    }
}

/// Whether a pod wants the sidecar: `Ok(policy name)` or why not. The policy is the pod's
/// annotation, else the namespace's `default_policy`; without either, a pod opted in by its own
/// label gets `Ok(None)` (and is denied), one opted in only by its namespace is skipped.
pub fn wants_injection(
    pod: &Pod,
    namespace_opted_in: bool,
    default_policy: Option<&str>,
) -> Result<Option<String>, Skip> {
    let label = pod.labels().get(INJECT_LABEL).map(String::as_str);
    match (label, namespace_opted_in) {
        (Some("true"), _) => {}
        (Some("false"), true) => return Err(Skip::OptedOut),
        (_, true) => {}
        (_, false) => return Err(Skip::NotOptedIn),
    }
    if already_injected(pod) {
        return Err(Skip::AlreadyInjected);
    }
    let policy = pod
        .annotations()
        .get(POLICY_ANNOTATION)
        .cloned()
        .or_else(|| default_policy.map(str::to_owned));
    if policy.is_none() && label != Some("true") {
        return Err(Skip::NoPolicy);
    }
    Ok(policy)
}

fn already_injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let has_container = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == SIDECAR_NAME)
    });
    has_container || pod.annotations().contains_key(STATUS_ANNOTATION)
}

/// The whole decision: opt-in, policy lookup among `policies` (same namespace as the pod is
/// assumed), and injection.
pub fn review(
    pod: &Pod,
    namespace_opted_in: bool,
    policies: &[McpAuthPolicy],
    settings: &InjectSettings,
) -> Outcome {
    match wants_injection(pod, namespace_opted_in, None) {
        Err(skip) => Outcome::Skipped(skip),
        Ok(name) => {
            let policy = name
                .as_deref()
                .and_then(|n| policies.iter().find(|p| p.name_any() == n));
            inject(pod, name.as_deref(), policy, settings)
        }
    }
}

/// Injects the sidecar into a pod that opted in. `policy_name` is the pod's annotation,
/// `policy` what it names (if found).
pub fn inject(
    pod: &Pod,
    policy_name: Option<&str>,
    policy: Option<&McpAuthPolicy>,
    settings: &InjectSettings,
) -> Outcome {
    match build(pod, policy_name, policy, settings) {
        Ok((mutated, warnings)) => {
            let before = serde_json::to_value(pod).expect("pods serialise");
            let after = serde_json::to_value(&mutated).expect("pods serialise");
            Outcome::Injected {
                patch: json_patch::diff(&before, &after),
                pod: Box::new(mutated),
                warnings,
            }
        }
        Err(why) => Outcome::Denied(format!("mcp-warden: {why}")),
    }
}

/// What the injector records in `mcpwarden.dev/status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    version: &'a str,
    policy: &'a str,
    mode: &'a str,
    port: i32,
    admin_port: i32,
    upstream_port: i32,
    port_name: &'a str,
}

fn build(
    pod: &Pod,
    policy_name: Option<&str>,
    policy: Option<&McpAuthPolicy>,
    settings: &InjectSettings,
) -> Result<(Pod, Vec<String>), String> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let name = policy_name.ok_or_else(|| {
        format!(
            "the pod opted in to injection but has no {POLICY_ANNOTATION} annotation naming an \
             McpAuthPolicy, and its namespace no {DEFAULT_POLICY_ANNOTATION} (or set the label \
             {INJECT_LABEL}: \"false\" to opt out)"
        )
    })?;
    if !is_label_value(name) {
        return Err(format!(
            "{POLICY_ANNOTATION} {name:?} is not a valid policy name (at most 63 characters)"
        ));
    }
    let policy = policy.ok_or_else(|| {
        format!("McpAuthPolicy {ns}/{name} (from the {POLICY_ANNOTATION} annotation) not found")
    })?;
    policy
        .spec
        .validate()
        .map_err(|e| format!("McpAuthPolicy {ns}/{name} cannot be used: {e}"))?;
    let annotations = pod.annotations();
    let resource_url = annotations.get(RESOURCE_URL_ANNOTATION);
    if let Some(url) = resource_url {
        ValidatedResource::parse(url)
            .map_err(|e| format!("{RESOURCE_URL_ANNOTATION} {url:?}: {e}"))?;
    }
    let resources = crate::resources::for_pod(&settings.resources, annotations)?;
    let native = match annotations
        .get(NATIVE_SIDECAR_ANNOTATION)
        .map(String::as_str)
    {
        None => settings.native_sidecar,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(format!(
                "{NATIVE_SIDECAR_ANNOTATION} must be \"true\" or \"false\", not {other:?}"
            ));
        }
    };
    let mut pod = pod.clone();
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| "the pod has no spec".to_owned())?;
    if spec.host_network == Some(true) {
        return Err(format!(
            "the pod uses hostNetwork: its ports are the node's, which no NetworkPolicy \
             protects, so the app's port would stay reachable without a token; run it without \
             hostNetwork, or opt it out with the label {INJECT_LABEL}: \"false\""
        ));
    }
    let upstream = ports::resolve_upstream(
        spec,
        annotations
            .get(UPSTREAM_PORT_ANNOTATION)
            .map(String::as_str),
    )
    .map_err(|e| format!("{UPSTREAM_PORT_ANNOTATION}: {e}"))?;

    let mut used = ports::used_ports(spec);
    used.insert(upstream.port);
    let public_port = ports::pick_port(settings.public_port, &used);
    used.insert(public_port);
    let admin_port = ports::pick_port(settings.admin_port, &used);
    let public_name = take_over_port_name(spec, &upstream);
    let mut taken_ports = ports::used_port_names(spec);
    let public_name = public_name
        .unwrap_or_else(|| ports::unique_name(PUBLIC_PORT_NAME, &taken_ports, PORT_NAME_MAX));
    taken_ports.insert(public_name.clone());
    let admin_name = ports::unique_name(ADMIN_PORT_NAME, &taken_ports, PORT_NAME_MAX);

    let secrets = secret_names(name, &policy.spec);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    let mut taken_volumes: BTreeSet<String> = volumes.iter().map(|v| v.name.clone()).collect();
    let mut volume_name = |base: &str| {
        let name = ports::unique_name(base, &taken_volumes, LABEL_MAX);
        taken_volumes.insert(name.clone());
        name
    };
    let config_volume = volume_name("mcp-warden-config");
    let mut mounts = vec![VolumeMount {
        name: config_volume.clone(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    volumes.push(Volume {
        name: config_volume,
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(name),
            ..Default::default()
        }),
        ..Default::default()
    });
    for (i, secret) in secrets.iter().enumerate() {
        let volume = volume_name(&format!("mcp-warden-secret-{i}"));
        mounts.push(VolumeMount {
            name: volume.clone(),
            mount_path: format!("{SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: volume,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let mut args = vec![
        "--policy".to_owned(),
        format!("{CONFIG_DIR}/{POLICY_KEY}"),
        "--upstream".into(),
        format!("http://127.0.0.1:{}", upstream.port),
        "--listen".into(),
        format!("0.0.0.0:{public_port}"),
        "--admin".into(),
        format!("0.0.0.0:{admin_port}"),
        "--secrets-dir".into(),
        SECRETS_DIR.into(),
    ];
    if let Some(url) = resource_url {
        args.extend(["--resource-url".to_owned(), url.clone()]);
    }
    let names = SidecarPorts {
        public: (&public_name, public_port),
        admin: (&admin_name, admin_port),
    };
    let mut sidecar = sidecar_container(settings, args, &names);
    sidecar.resources = Some(resources);
    sidecar.volume_mounts = Some(mounts);

    let app_name = upstream
        .container
        .map(|i| spec.containers[i].name.clone())
        .unwrap_or_else(|| {
            spec.containers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        });
    if native {
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(sidecar);
    } else {
        spec.containers.push(sidecar);
    }

    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        policy: name,
        mode: if native { "native" } else { "container" },
        port: public_port,
        admin_port,
        upstream_port: upstream.port,
        port_name: &public_name,
    };
    let status = serde_json::to_string(&status).expect("status serialises");
    let annotations = pod.annotations_mut();
    annotations.insert(STATUS_ANNOTATION.into(), status);
    annotations
        .entry("kubectl.kubernetes.io/default-container".into())
        .or_insert(app_name);
    pod.labels_mut().insert(POLICY_LABEL.into(), name.into());
    let mut warnings = Vec::new();
    if upstream.name.is_none() {
        warnings.push(format!(
            "mcp-warden: the app's port {} has no name, so no Service port moves to the \
             sidecar; point Services at targetPort {public_name} (port {public_port})",
            upstream.port
        ));
    }
    if !native && owned_by_job(&pod) {
        warnings.push(format!(
            "mcp-warden: the sidecar runs as a regular container (no native sidecars on every \
             node, or {NATIVE_SIDECAR_ANNOTATION}: \"false\"), so this Job's pod never \
             completes: the sidecar keeps running after the app exits"
        ));
    }
    Ok((pod, warnings))
}

/// Whether a Job (directly, or a CronJob's Job) owns the pod.
fn owned_by_job(pod: &Pod) -> bool {
    pod.owner_references().iter().any(|o| o.kind == "Job")
}

/// The sidecar takes the name of the app's port so a Service targeting that name reaches it;
/// the app's port gets a new name and its probes and lifecycle hooks follow it. `None` when the
/// upstream port has no name.
fn take_over_port_name(spec: &mut PodSpec, up: &Upstream) -> Option<String> {
    let (Some(index), Some(name)) = (up.container, up.name.as_ref()) else {
        return None;
    };
    let new_name = ports::renamed(name, &ports::used_port_names(spec));
    let app = &mut spec.containers[index];
    for port in app.ports.iter_mut().flatten() {
        if port.name.as_deref() == Some(name) {
            port.name = Some(new_name.clone());
        }
    }
    ports::rename_port_references(app, name, &new_name);
    Some(name.clone())
}

/// The sidecar's two ports: (name, number).
struct SidecarPorts<'a> {
    public: (&'a str, i32),
    admin: (&'a str, i32),
}

fn sidecar_container(
    settings: &InjectSettings,
    args: Vec<String>,
    ports: &SidecarPorts,
) -> Container {
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ports.admin.0.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Container {
        name: SIDECAR_NAME.into(),
        image: Some(settings.sidecar_image.clone()),
        args: Some(args),
        env: (!settings.env.is_empty()).then(|| settings.env.clone()),
        ports: Some(vec![
            port(ports.public.0, ports.public.1),
            port(ports.admin.0, ports.admin.1),
        ]),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        startup_probe: Some(http_probe("/healthz", 1, 30)),
        resources: Some(settings.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: settings.fixed_uid.then_some(65532),
            run_as_group: settings.fixed_uid.then_some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Pod metadata as the injector sees it (for callers holding a pod template).
pub fn pod_from_template(
    meta: Option<ObjectMeta>,
    spec: Option<k8s_openapi::api::core::v1::PodSpec>,
    namespace: Option<String>,
) -> Pod {
    let mut metadata = meta.unwrap_or_default();
    if metadata.namespace.is_none() {
        metadata.namespace = namespace;
    }
    Pod {
        metadata,
        spec,
        status: None,
    }
}
