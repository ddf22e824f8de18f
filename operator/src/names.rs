//! The public names the operator reads and writes on Kubernetes objects.

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "mcp-warden-operator";
/// Pod label that opts a pod into injection (`"true"`), or out of namespace-wide injection
/// (`"false"`).
pub const INJECT_LABEL: &str = "mcpwarden.dev/inject";
/// Namespace label that opts every pod of the namespace into injection (`enabled`).
pub const NAMESPACE_LABEL: &str = "mcpwarden.dev/injection";
/// Pod annotation naming the `McpAuthPolicy` (same namespace).
pub const POLICY_ANNOTATION: &str = "mcpwarden.dev/policy";
/// Namespace annotation naming the `McpAuthPolicy` for pods without [`POLICY_ANNOTATION`].
pub const DEFAULT_POLICY_ANNOTATION: &str = "mcpwarden.dev/default-policy";
/// Pod annotation with the app's port (number or container port name) the sidecar forwards to.
pub const UPSTREAM_PORT_ANNOTATION: &str = "mcpwarden.dev/upstream-port";
/// Pod annotation overriding `spec.resource.url` for this workload.
pub const RESOURCE_URL_ANNOTATION: &str = "mcpwarden.dev/resource-url";
/// Pod annotation forcing (`"true"`) or refusing (`"false"`) a native sidecar.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "mcpwarden.dev/native-sidecar";
/// Pod annotation the injector writes: what it did, as JSON.
pub const STATUS_ANNOTATION: &str = "mcpwarden.dev/status";
/// Pod label the injector adds, naming the bound policy (NetworkPolicy selector, workload count).
pub const POLICY_LABEL: &str = "mcpwarden.dev/policy";
/// Name of the injected container.
pub const SIDECAR_NAME: &str = "mcp-warden";
/// Name of the sidecar's public port (unless it takes over the app's port name).
pub const PUBLIC_PORT_NAME: &str = "mcp-warden";
/// Name of the sidecar's admin port.
pub const ADMIN_PORT_NAME: &str = "warden-admin";
/// Default public port of the sidecar.
pub const DEFAULT_PUBLIC_PORT: i32 = 8000;
/// Default admin port of the sidecar.
pub const DEFAULT_ADMIN_PORT: i32 = 9090;
/// Where the rendered policy ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/mcp-warden/config";
/// Where Secrets named by the policy are mounted, one directory per Secret.
pub const SECRETS_DIR: &str = "/etc/mcp-warden/secrets";
/// Key of the rendered policy in its ConfigMap.
pub const POLICY_KEY: &str = "policy.yaml";

/// ConfigMap holding the rendered policy of `policy`.
pub fn config_map_name(policy: &str) -> String {
    format!("mcp-warden-{policy}")
}

/// Secret holding the operator-managed signing and encryption keys of `policy`.
pub fn keys_secret_name(policy: &str) -> String {
    format!("mcp-warden-{policy}-keys")
}

/// NetworkPolicy protecting the pods bound to `policy`.
pub fn network_policy_name(policy: &str) -> String {
    format!("mcp-warden-{policy}")
}
