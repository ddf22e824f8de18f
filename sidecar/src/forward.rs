//! What the app receives: the request minus hop-by-hop headers and the caller's credentials,
//! plus the caller's identity as explicit headers (no token passthrough).

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::Value;

use crate::verify::Principal;

/// Claim → header mapping of a policy.
#[derive(Clone, Debug, Default)]
pub struct Forwarding {
    claims: Vec<(String, HeaderName)>,
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Pre-parsed, so the request path does not parse the name on every request.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
}

fn claim_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    // Refuses control characters, so a claim cannot inject extra headers.
    HeaderValue::from_str(&text).ok()
}

impl Forwarding {
    /// From the policy's `forward.claimsToHeaders` (names were validated with the policy).
    pub fn new(claims_to_headers: &std::collections::BTreeMap<String, String>) -> Self {
        let claims = claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                Some((claim.clone(), HeaderName::from_bytes(name.as_bytes()).ok()?))
            })
            .collect();
        Forwarding { claims }
    }

    /// Prepares request headers for the app: drops hop-by-hop headers, `Authorization` and any
    /// client-sent copy of an identity header, then sets the identity headers from the claims.
    pub fn apply(&self, headers: &mut HeaderMap, principal: &Principal) {
        strip_hop_by_hop(headers);
        headers.remove(header::AUTHORIZATION);
        for (claim, name) in &self.claims {
            headers.remove(name);
            if let Some(value) = principal.claims.get(claim).and_then(claim_value) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scopes::Granted;

    #[test]
    fn drops_credentials_and_spoofed_identity_and_sets_claims() {
        let fwd = Forwarding::new(
            &[
                ("sub".into(), "X-Auth-Subject".into()),
                ("groups".into(), "X-Auth-Groups".into()),
                ("email".into(), "X-Auth-Email".into()),
            ]
            .into(),
        );
        let claims = serde_json::json!({"sub": "alice", "groups": ["a", "b"], "exp": 1})
            .as_object()
            .unwrap()
            .clone();
        let principal = Principal {
            claims,
            scopes: Granted::default(),
            expires_at: 1,
        };
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        h.insert("x-auth-subject", "mallory".parse().unwrap());
        h.insert("x-auth-email", "mallory@example.com".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("mcp-session-id", "s1".parse().unwrap());
        fwd.apply(&mut h, &principal);
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h["x-auth-subject"], "alice");
        assert_eq!(h["x-auth-groups"], "a,b");
        assert!(
            h.get("x-auth-email").is_none(),
            "absent claim: the spoofed header must go, not stay"
        );
        assert!(h.get("x-hop").is_none() && h.get(header::CONNECTION).is_none());
        assert_eq!(h["mcp-session-id"], "s1");
    }

    #[test]
    fn claim_values_cannot_inject_headers() {
        assert!(claim_value(&Value::String("a\r\nX-Evil: 1".into())).is_none());
        assert!(claim_value(&serde_json::json!({"nested": 1})).is_none());
    }
}
