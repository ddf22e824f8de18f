//! The name syntaxes of "Object Names and IDs" and the API server's `IsValid…` helpers. Each
//! returns the API server's messages (empty when the value is valid).

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const PORT_NAME_MAX: usize = 15;

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn dns_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
}

/// An RFC 1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters): container,
/// volume, Service and Namespace names.
pub fn dns_label(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > LABEL_MAX {
        msgs.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !dns_label_shape(s) {
        msgs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        );
    }
    msgs
}

/// An RFC 1123 subdomain (labels joined by `.`, at most 253 characters): most object names.
pub fn dns_subdomain(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        msgs.push(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(dns_label_shape) {
        msgs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    msgs
}

/// A path segment name (RBAC objects): not `.` or `..`, no `/` or `%`.
pub fn path_segment(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// An IANA service name: `ports[].name`, and the named ports probes and Services refer to.
pub fn port_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > PORT_NAME_MAX {
        msgs.push(format!("must be no more than {PORT_NAME_MAX} characters"));
    }
    if !s.bytes().all(|b| is_alnum_lower(b) || b == b'-') {
        msgs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        msgs.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        msgs.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        msgs.push("must not begin or end with a hyphen".into());
    }
    msgs
}

/// A port number, 1 to 65535.
pub fn port_number(n: i64) -> Vec<String> {
    if (1..=65535).contains(&n) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".into()]
    }
}

fn qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
        && alnum(b[0])
        && alnum(b[b.len() - 1])
}

/// A qualified name (`[prefix/]name`): label keys, annotation keys, resource names.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            return vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and \
                 must start and end with an alphanumeric character, with an optional DNS \
                 subdomain prefix and '/'"
                    .into(),
            ];
        }
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            msgs.push("prefix part must be non-empty".into());
        } else {
            msgs.extend(
                dns_subdomain(prefix)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        msgs.push("name part must be non-empty".into());
    } else {
        if name.len() > LABEL_MAX {
            msgs.push(format!(
                "name part must be no more than {LABEL_MAX} characters"
            ));
        }
        if !qualified_name_part(name) {
            msgs.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character (regex used for validation is \
                 '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                    .into(),
            );
        }
    }
    msgs
}

/// A label value: empty, or a qualified name part of at most 63 characters.
pub fn label_value(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > LABEL_MAX {
        msgs.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !s.is_empty() && !qualified_name_part(s) {
        msgs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    msgs
}

/// An environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn env_var_name(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_alphabetic() || c == b'-' || c == b'.' || c == b'_';
    if !b.is_empty() && ok(b[0]) && b.iter().all(|&c| ok(c) || c.is_ascii_digit()) {
        Vec::new()
    } else {
        vec![
            "a valid environment variable name must consist of alphabetic characters, digits, \
             '_', '-', or '.', and must not start with a digit"
                .into(),
        ]
    }
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn config_key(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        msgs.push(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        msgs.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into(),
        );
    }
    if s == "." || s == ".." {
        msgs.push(format!("must not be '{s}'"));
    } else if s.starts_with("..") {
        msgs.push("must not start with '..'".into());
    }
    msgs
}

/// A relative path without `..` elements: `subPath`, ConfigMap/Secret item paths.
pub fn local_path(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.starts_with('/') {
        msgs.push("must be a relative path".into());
    }
    if s.split('/').any(|part| part == "..") {
        msgs.push("must not contain '..'".into());
    }
    msgs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_iana() {
        assert!(port_name("http").is_empty());
        assert!(port_name("warden-admin").is_empty());
        assert!(port_name("a1-b2").is_empty());
        assert_eq!(
            port_name("mcp-warden-admin"),
            ["must be no more than 15 characters"]
        );
        assert_eq!(
            port_name("8080"),
            ["must contain at least one letter (a-z)"]
        );
        assert_eq!(port_name("a--b"), ["must not contain consecutive hyphens"]);
        assert_eq!(port_name("-a"), ["must not begin or end with a hyphen"]);
        assert_eq!(
            port_name("Http"),
            ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
        );
        assert!(!port_name("").is_empty());
    }

    #[test]
    fn dns_names() {
        assert!(dns_label("mcp-warden").is_empty());
        assert!(dns_label(&"a".repeat(63)).is_empty());
        assert_eq!(dns_label(&"a".repeat(64)).len(), 1);
        assert_eq!(dns_label("App").len(), 1);
        assert_eq!(dns_label("a.b").len(), 1);
        assert!(dns_subdomain("pods.inject.mcpwarden.dev").is_empty());
        assert!(!dns_subdomain("a..b").is_empty());
        assert!(!dns_subdomain("-a.b").is_empty());
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(qualified_name("mcpwarden.dev/policy").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("Some_Key.x").is_empty());
        assert!(!qualified_name("Bad.Prefix/x").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name(&"k".repeat(64)).is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3-x").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(!label_value(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn env_config_keys_paths() {
        assert!(env_var_name("RUST_LOG").is_empty());
        assert!(env_var_name("my.var-1").is_empty());
        assert!(!env_var_name("1ABC").is_empty());
        assert!(!env_var_name("A B").is_empty());
        assert!(!env_var_name("").is_empty());
        assert!(config_key("policy.yaml").is_empty());
        assert!(!config_key("..").is_empty());
        assert!(!config_key("a/b").is_empty());
        assert!(local_path("a/b").is_empty());
        assert!(!local_path("/a").is_empty());
        assert!(!local_path("a/../b").is_empty());
    }
}
