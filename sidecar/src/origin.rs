//! `Origin` checks (the DNS-rebinding defence the MCP transport spec asks for) and CORS for
//! browser-based clients.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The origins allowed to call the endpoint from a browser.
#[derive(Clone, Debug)]
pub struct Origins {
    allowed: Vec<String>,
}

/// What the `Origin` header says about a request.
#[derive(Debug)]
pub enum OriginCheck {
    /// No `Origin`: not a browser cross-origin call (CLI and desktop clients).
    Absent,
    /// An allowed origin; responses get CORS headers for it.
    Allowed(HeaderValue),
    /// Any other origin, including `null`.
    Forbidden,
}

const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID";
const EXPOSE_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version";

impl Origins {
    /// The resource's own origin plus the configured ones.
    pub fn new(resource_origin: &str, configured: &[String]) -> Self {
        let mut allowed = vec![resource_origin.to_owned()];
        allowed.extend(
            configured
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned()),
        );
        Origins { allowed }
    }

    /// Classifies a request by its `Origin` header.
    pub fn check(&self, headers: &HeaderMap) -> OriginCheck {
        // Looked for in one pass over the few fields of a request, without hashing the name.
        let mut values = headers
            .iter()
            .filter(|(name, _)| *name == header::ORIGIN)
            .map(|(_, value)| value);
        let Some(origin) = values.next() else {
            return OriginCheck::Absent;
        };
        if values.next().is_some() {
            return OriginCheck::Forbidden;
        }
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if allowed {
            OriginCheck::Allowed(origin.clone())
        } else {
            OriginCheck::Forbidden
        }
    }

    /// The fields [`Origins::decorate`] replaces (a response's own are removed first).
    pub const REPLACED: [header::HeaderName; 2] = [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ];

    /// Adds CORS headers for an allowed origin to any response.
    pub fn decorate(origin: &HeaderValue, h: &mut HeaderMap) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }

    /// The answer to a CORS preflight from an allowed origin. Preflights carry no credentials,
    /// so the sidecar answers them itself instead of forwarding them to the app.
    pub fn preflight(origin: &HeaderValue) -> Response {
        let mut response = (
            StatusCode::NO_CONTENT,
            [
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, POST, DELETE, OPTIONS",
                ),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
                (header::ACCESS_CONTROL_MAX_AGE, "600"),
            ],
        )
            .into_response();
        Self::decorate(origin, response.headers_mut());
        response
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origins: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn classifies_origins() {
        let o = Origins::new(
            "https://mcp.example.com",
            &["http://localhost:6274/".into()],
        );
        assert!(matches!(o.check(&headers(&[])), OriginCheck::Absent));
        assert!(matches!(
            o.check(&headers(&["https://mcp.example.com"])),
            OriginCheck::Allowed(_)
        ));
        assert!(matches!(
            o.check(&headers(&["http://localhost:6274"])),
            OriginCheck::Allowed(_)
        ));
        assert!(matches!(
            o.check(&headers(&["https://evil.example"])),
            OriginCheck::Forbidden
        ));
        assert!(matches!(
            o.check(&headers(&["null"])),
            OriginCheck::Forbidden
        ));
        assert!(matches!(
            o.check(&headers(&[
                "https://mcp.example.com",
                "https://evil.example"
            ])),
            OriginCheck::Forbidden
        ));
    }
}
