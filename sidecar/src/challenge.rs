//! 401 and 403 answers with the `WWW-Authenticate` challenge MCP clients use to find the
//! authorization server (RFC 6750 §3, RFC 9728 §5.1).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::verify::TokenError;

/// The parts of every challenge for one policy.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// Absolute URL of the protected-resource metadata.
    pub resource_metadata: String,
    /// Scopes a client should ask for (space-separated; may be empty).
    pub scope: String,
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A JSON error body in the RFC 6749 shape.
pub fn error_body(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({"error": error, "error_description": description});
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

impl Challenge {
    fn header(&self, error: Option<(&str, &str)>, scope: &str) -> HeaderValue {
        let mut parts = vec![format!(
            "resource_metadata={}",
            quoted(&self.resource_metadata)
        )];
        if !scope.is_empty() {
            parts.push(format!("scope={}", quoted(scope)));
        }
        if let Some((code, description)) = error {
            parts.push(format!("error={}", quoted(code)));
            parts.push(format!("error_description={}", quoted(description)));
        }
        let value = format!("Bearer {}", parts.join(", "));
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// 401 for a missing token (no `error`, per RFC 6750 §3.1) or a refused one
    /// (`error="invalid_token"`).
    pub fn unauthorized(&self, refused: Option<TokenError>) -> Response {
        let (error, description) = match refused {
            Some(e) => (Some(("invalid_token", e.to_string())), e.to_string()),
            None => (None, "a bearer token is required".to_owned()),
        };
        let value = self.header(error.as_ref().map(|(c, d)| (*c, d.as_str())), &self.scope);
        let mut response = error_body(
            StatusCode::UNAUTHORIZED,
            error.map_or("unauthorized", |(c, _)| c),
            &description,
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
        response
    }

    /// 403 `insufficient_scope`, naming every scope the operation needs so a client can step
    /// up in one go.
    pub fn forbidden(&self, needed: &str) -> Response {
        let description = "the token lacks scopes this operation needs";
        let value = self.header(Some(("insufficient_scope", description)), needed);
        let mut response = error_body(StatusCode::FORBIDDEN, "insufficient_scope", description);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> Challenge {
        Challenge {
            resource_metadata: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
                .into(),
            scope: "mcp:tools".into(),
        }
    }

    fn www(r: &Response) -> &str {
        r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap()
    }

    #[test]
    fn missing_token_has_no_error_attribute() {
        let r = challenge().unauthorized(None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            www(&r),
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp:tools""#
        );
    }

    #[test]
    fn refused_token_says_invalid_token() {
        let r = challenge().unauthorized(Some(TokenError::Expired));
        assert!(www(&r).ends_with(r#"scope="mcp:tools", error="invalid_token", error_description="the token has expired""#), "{}", www(&r));
    }

    #[test]
    fn forbidden_names_the_needed_scopes() {
        let r = challenge().forbidden("mcp:tools mcp:admin");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(
            www(&r).contains(r#"scope="mcp:tools mcp:admin", error="insufficient_scope""#),
            "{}",
            www(&r)
        );
        assert!(www(&r).starts_with(r#"Bearer resource_metadata=""#));
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
