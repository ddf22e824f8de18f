//! RFC 9728 protected-resource metadata.

use serde::Serialize;

/// The metadata document.
#[derive(Debug, Serialize)]
pub struct ProtectedResource<'a> {
    /// Exactly the URL clients use; VS Code and others compare it byte for byte.
    pub resource: &'a str,
    /// The first entry is the exact `issuer` of the authorization server's metadata.
    pub authorization_servers: Vec<&'a str>,
    /// Scopes a client may request (never `offline_access`, which is not ours to grant).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<&'a str>,
    /// Tokens are only accepted in the `Authorization` header.
    pub bearer_methods_supported: [&'a str; 1],
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<&'a str>,
}

/// The well-known prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL for a resource: the path-suffixed form when the resource has a path.
pub fn metadata_url(origin: &str, resource_path: &str) -> String {
    let path = resource_path.trim_end_matches('/');
    format!("{origin}{WELL_KNOWN}{path}")
}

/// Renders the document.
pub fn render(resource: &str, issuer: &str, scopes: &[String], name: Option<&str>) -> Vec<u8> {
    let doc = ProtectedResource {
        resource,
        authorization_servers: vec![issuer],
        scopes_supported: scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "offline_access")
            .collect(),
        bearer_methods_supported: ["header"],
        resource_name: name,
    };
    serde_json::to_vec_pretty(&doc).expect("metadata serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_document() {
        let scopes = vec!["mcp:tools".to_string(), "offline_access".to_string()];
        let doc = render(
            "https://mcp.example.com/mcp",
            "https://login.example.com",
            &scopes,
            Some("Tools"),
        );
        let expected = r#"{
  "resource": "https://mcp.example.com/mcp",
  "authorization_servers": [
    "https://login.example.com"
  ],
  "scopes_supported": [
    "mcp:tools"
  ],
  "bearer_methods_supported": [
    "header"
  ],
  "resource_name": "Tools"
}"#;
        assert_eq!(String::from_utf8(doc).unwrap(), expected);
    }

    #[test]
    fn metadata_url_forms() {
        assert_eq!(
            metadata_url("https://a.example", "/mcp"),
            "https://a.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://a.example", "/"),
            "https://a.example/.well-known/oauth-protected-resource"
        );
    }
}
