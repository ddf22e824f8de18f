//! RFC 8414 authorization-server metadata (also served as the OpenID configuration alias).

use serde::Serialize;

/// The metadata document.
#[derive(Debug, Serialize)]
pub struct ServerMetadata<'a> {
    /// Exactly the issuer clients derive: the MCP origin, no trailing slash.
    pub issuer: &'a str,
    /// Browser leg entry point.
    pub authorization_endpoint: String,
    /// Code and refresh grants.
    pub token_endpoint: String,
    /// Dynamic client registration (RFC 7591).
    pub registration_endpoint: String,
    /// Token revocation (RFC 7009).
    pub revocation_endpoint: String,
    /// The proxy's signing keys.
    pub jwks_uri: String,
    /// Scopes clients may request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<&'a str>,
    /// Only the code flow.
    pub response_types_supported: [&'static str; 1],
    /// Only `query` responses.
    pub response_modes_supported: [&'static str; 1],
    /// Code and refresh.
    pub grant_types_supported: [&'static str; 2],
    /// Public clients (`none`) and confidential ones registered with a secret.
    pub token_endpoint_auth_methods_supported: [&'static str; 3],
    /// Same as the token endpoint.
    pub revocation_endpoint_auth_methods_supported: [&'static str; 3],
    /// PKCE with S256 only; `plain` is not offered.
    pub code_challenge_methods_supported: [&'static str; 1],
    /// URL-shaped client ids are fetched as metadata documents.
    pub client_id_metadata_document_supported: bool,
    /// Every authorization response carries `iss` (RFC 9207).
    pub authorization_response_iss_parameter_supported: bool,
}

/// Renders the document for `issuer` (origin without trailing slash).
pub fn render(issuer: &str, scopes: &[String]) -> serde_json::Value {
    let auth = ["none", "client_secret_basic", "client_secret_post"];
    let doc = ServerMetadata {
        issuer,
        authorization_endpoint: format!("{issuer}/authorize"),
        token_endpoint: format!("{issuer}/token"),
        registration_endpoint: format!("{issuer}/register"),
        revocation_endpoint: format!("{issuer}/revoke"),
        jwks_uri: format!("{issuer}/jwks"),
        scopes_supported: scopes.iter().map(String::as_str).collect(),
        response_types_supported: ["code"],
        response_modes_supported: ["query"],
        grant_types_supported: ["authorization_code", "refresh_token"],
        token_endpoint_auth_methods_supported: auth,
        revocation_endpoint_auth_methods_supported: auth,
        code_challenge_methods_supported: ["S256"],
        client_id_metadata_document_supported: true,
        authorization_response_iss_parameter_supported: true,
    };
    serde_json::to_value(doc).expect("metadata serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_document() {
        let doc = render("https://mcp.example.com", &["mcp:tools".into()]);
        let expected = serde_json::json!({
            "issuer": "https://mcp.example.com",
            "authorization_endpoint": "https://mcp.example.com/authorize",
            "token_endpoint": "https://mcp.example.com/token",
            "registration_endpoint": "https://mcp.example.com/register",
            "revocation_endpoint": "https://mcp.example.com/revoke",
            "jwks_uri": "https://mcp.example.com/jwks",
            "scopes_supported": ["mcp:tools"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true
        });
        assert_eq!(doc, expected);
    }
}
