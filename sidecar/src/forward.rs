//! What the app receives: the request minus hop-by-hop headers and the caller's credentials,
//! plus the caller's identity as explicit headers (no token passthrough).
//!
//! Identity headers must not be spoofable. Servers disagree on header names: WSGI and CGI turn
//! `X-Auth_Subject` and `X-Auth-Subject` into the same variable, so every client header whose
//! name equals a mapped one up to ASCII case and `-`/`_` is dropped, not only the exact name.
//! The client's `Forwarded`, `X-Forwarded-*` and `X-Real-IP` are dropped as well and the
//! `X-Forwarded-*` headers set from what the sidecar knows itself.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::Value;
use smallvec::SmallVec;

use crate::verify::{Claim, Principal};

/// Claim → header mapping of a policy, and what the forwarded headers say.
#[derive(Clone, Debug)]
pub struct Forwarding {
    claims: Vec<(String, HeaderName)>,
    /// Headers only the sidecar sets besides the claim headers (`upstreamTokenHeader`).
    private: Vec<HeaderName>,
    /// `X-Forwarded-Proto`: the scheme of the resource URL (TLS ends before the sidecar).
    proto: HeaderValue,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            claims: Vec::new(),
            private: Vec::new(),
            proto: HeaderValue::from_static("https"),
        }
    }
}

/// A mapped claim that cannot travel as a header value (control characters such as CR, LF or
/// NUL, or a JSON object). The request is refused rather than forwarded without the header.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the caller's {claim:?} claim cannot be sent to the MCP server as a header value")]
pub struct Unforwardable {
    /// The claim.
    pub claim: String,
}

/// Pre-parsed, so the request path does not parse the name on every request.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether a header is hop-by-hop by its name alone (RFC 9110 §7.6.1; `Connection` may name
/// more).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Compared one by one: standard names as numbers (no array of names made per call).
    *name == header::CONNECTION
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == KEEP_ALIVE
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Found in one pass over the names: removing a name that is not there still hashes it.
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if present.is_empty() {
        // No `Connection` header either, so it names nothing.
        return;
    }
    present.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"keep-alive"))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual token; a `Keep-Alive` header, if any, was found above.
            .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
    );
    for name in present {
        headers.remove(name);
    }
}

/// A header name as the most lenient servers see it: ASCII lower case, `_` as `-`.
fn normalised(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().map(|b| match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    })
}

fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len() && normalised(a).eq(normalised(b))
}

/// Whether a client header carries proxy information only the sidecar may set.
fn is_forwarding_info(name: &str) -> bool {
    const PREFIX: &str = "x-forwarded-";
    (name.len() > PREFIX.len() && same_header(&name[..PREFIX.len()], PREFIX))
        || same_header(name, "forwarded")
        || same_header(name, "x-real-ip")
}

/// The header value of a claim: `Ok(None)` when absent or null, an error when it cannot be
/// encoded. Text goes as UTF-8 bytes; arrays are joined with `,`.
fn claim_value(value: Option<Claim<'_>>) -> Result<Option<HeaderValue>, ()> {
    let text = match value {
        None | Some(Claim::Json(Value::Null)) => return Ok(None),
        Some(Claim::Str(s)) => s.to_owned(),
        Some(Claim::Json(Value::String(s))) => s.clone(),
        Some(Claim::Json(Value::Number(n))) => n.to_string(),
        Some(Claim::Json(Value::Bool(b))) => b.to_string(),
        Some(Claim::Json(Value::Array(items))) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Claim::Json(Value::Object(_))) => return Err(()),
    };
    // Control characters (CR, LF, NUL…) could end the header or be read differently downstream.
    if text.chars().any(char::is_control) {
        return Err(());
    }
    HeaderValue::from_bytes(text.as_bytes())
        .map(Some)
        .map_err(|_| ())
}

impl Forwarding {
    /// From the policy's `forward.claimsToHeaders` (names were validated with the policy) and the
    /// resource URL's scheme.
    pub fn new(
        claims_to_headers: &std::collections::BTreeMap<String, String>,
        scheme: &str,
    ) -> Self {
        let claims = claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                Some((claim.clone(), HeaderName::from_bytes(name.as_bytes()).ok()?))
            })
            .collect();
        Forwarding {
            claims,
            private: Vec::new(),
            proto: HeaderValue::from_str(scheme).unwrap_or(HeaderValue::from_static("https")),
        }
    }

    /// Also removes client copies of `name` (a header the sidecar sets itself), compared as
    /// claim headers are.
    pub fn with_private_header(mut self, name: HeaderName) -> Self {
        self.private.push(name);
        self
    }

    /// Whether `name` is, up to ASCII case and `-`/`_`, one of the private headers.
    pub fn is_private(&self, name: &str) -> bool {
        self.private.iter().any(|p| same_header(name, p.as_str()))
    }

    /// What changes in a request's header fields on the way to the app: hop-by-hop fields,
    /// `Authorization` and client copies of identity and forwarding fields are left out; the
    /// identity fields are set from the claims (`email` only when `email_verified` is true), and
    /// `X-Forwarded-For`/`-Proto` (the proxy sets `X-Forwarded-Host`). `client` is the client's
    /// address as `X-Forwarded-For` gives it.
    pub fn rewrite(
        &self,
        headers: &HeaderMap,
        principal: &Principal,
        client: Option<HeaderValue>,
    ) -> Result<Rewrite<'_>, Unforwardable> {
        let mut rewrite = Rewrite::new(headers);
        rewrite.forwarding = Some(self);
        for (claim, name) in &self.claims {
            if let Some(value) = self.header_value_of(principal, claim)? {
                rewrite.set(name, value);
            }
        }
        if let Some(client) = client {
            rewrite.set(&X_FORWARDED_FOR, client);
        }
        rewrite.set(&X_FORWARDED_PROTO, self.proto.clone());
        Ok(rewrite)
    }

    /// Whether every mapped claim of `principal` can be sent as a header value.
    pub fn check(&self, principal: &Principal) -> Result<(), Unforwardable> {
        for (claim, _) in &self.claims {
            self.header_value_of(principal, claim)?;
        }
        Ok(())
    }

    /// The header value of a mapped claim of `principal`.
    fn header_value_of(
        &self,
        principal: &Principal,
        claim: &str,
    ) -> Result<Option<HeaderValue>, Unforwardable> {
        let mut value = principal.claims.get(claim);
        // An unverified address proves nothing (anyone can put any address on an account).
        if claim == "email"
            && principal.claims.get("email_verified") != Some(Claim::Json(&Value::Bool(true)))
        {
            value = None;
        }
        claim_value(value).map_err(|()| Unforwardable {
            claim: claim.to_owned(),
        })
    }

    /// Whether a client field is one only the sidecar may set (or, `Authorization`, one the app
    /// must not see).
    fn withholds(&self, name: &HeaderName) -> bool {
        if *name == header::AUTHORIZATION {
            return true;
        }
        let name = name.as_str();
        is_forwarding_info(name)
            || self.is_private(name)
            || self
                .claims
                .iter()
                .any(|(_, mapped)| same_header(name, mapped.as_str()))
    }
}

/// How a request's header fields change on the way to the app: the client's fields, less those
/// the sidecar leaves out, then the sidecar's own. The request head is written from it
/// ([`Rewrite::for_each_field`]) rather than by editing the client's header map.
#[derive(Default)]
pub struct Rewrite<'a> {
    /// Leaves out the client's credentials, identity and forwarding fields (without it, only
    /// hop-by-hop fields are left out).
    forwarding: Option<&'a Forwarding>,
    /// Field names the client's `Connection` header lists: hop-by-hop too.
    listed: Vec<HeaderName>,
    /// `Host`, first, instead of the client's.
    host: Option<&'a HeaderValue>,
    /// The client's `Host`.
    client_host: Option<HeaderValue>,
    /// Fields the sidecar sets, after the client's; a client field of the same name is left out.
    /// (Small, and without an allocation for the usual few: it is part of a request's future.)
    added: SmallVec<[(&'a HeaderName, HeaderValue); 4]>,
}

impl<'a> Rewrite<'a> {
    /// Leaves out the hop-by-hop fields of `headers` (those named in `Connection` included).
    pub fn new(headers: &HeaderMap) -> Self {
        let mut rewrite = Rewrite::default();
        // One pass over the few fields of a request: looking for `Connection` (most requests
        // have none) and `Host` by name would hash each.
        let mut connection = false;
        for (name, value) in headers {
            if *name == header::CONNECTION {
                connection = true;
            } else if *name == header::HOST && rewrite.client_host.is_none() {
                rewrite.client_host = Some(value.clone());
            }
        }
        if connection {
            rewrite.listed = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect();
        }
        rewrite
    }

    /// The client's `Host` (the first, if several), taken.
    pub fn take_client_host(&mut self) -> Option<HeaderValue> {
        self.client_host.take()
    }

    /// Sets `name` (after the client's fields, in the order set), leaving out the client's.
    pub fn set(&mut self, name: &'a HeaderName, value: HeaderValue) {
        match self.added.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.added.push((name, value)),
        }
    }

    /// Sets `Host`: the first field, instead of the client's.
    pub fn set_host(&mut self, value: &'a HeaderValue) {
        self.host = Some(value);
    }

    /// Whether a client field goes to the app.
    fn keeps(&self, name: &HeaderName) -> bool {
        !(is_hop_by_hop(name)
            || (self.host.is_some() && name == header::HOST)
            || self.listed.contains(name)
            || self.added.iter().any(|(n, _)| *n == name)
            || self.forwarding.is_some_and(|f| f.withholds(name)))
    }

    /// Calls `f` with each field the app receives, in order: `Host`, the client's fields that
    /// go on, then the sidecar's.
    pub fn for_each_field(
        &self,
        headers: &HeaderMap,
        mut f: impl FnMut(&HeaderName, &HeaderValue),
    ) {
        if let Some(host) = self.host {
            f(&header::HOST, host);
        }
        for (name, value) in headers {
            if self.keeps(name) {
                f(name, value);
            }
        }
        for (name, value) in &self.added {
            f(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scopes::Granted;

    fn forwarding() -> Forwarding {
        Forwarding::new(
            &[
                ("sub".into(), "X-Auth-Subject".into()),
                ("groups".into(), "X-Auth-Groups".into()),
                ("email".into(), "X-Auth-Email".into()),
                ("name".into(), "X-Auth-Name".into()),
            ]
            .into(),
            "https",
        )
    }

    /// `headers` as the app receives them.
    fn apply(
        forwarding: &Forwarding,
        headers: &mut HeaderMap,
        principal: &Principal,
        client: Option<HeaderValue>,
    ) -> Result<(), Unforwardable> {
        let rewrite = forwarding.rewrite(headers, principal, client)?;
        let mut received = HeaderMap::new();
        rewrite.for_each_field(headers, |name, value| {
            received.append(name, value.clone());
        });
        *headers = received;
        Ok(())
    }

    fn principal(claims: serde_json::Value) -> Principal {
        Principal {
            claims: claims.as_object().unwrap().clone().into(),
            scopes: Granted::default(),
            expires_at: 1,
        }
    }

    #[test]
    fn drops_credentials_and_spoofed_identity_and_sets_claims() {
        let principal = principal(serde_json::json!({"sub": "alice", "groups": ["a", "b"]}));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        h.insert("x-auth-subject", "mallory".parse().unwrap());
        h.insert("x-auth-email", "mallory@example.com".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("mcp-session-id", "s1".parse().unwrap());
        apply(&forwarding(), &mut h, &principal, None).unwrap();
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
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Keep-Alive, X-Hop".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        // Nothing hop-by-hop: nothing changes.
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn drops_headers_that_normalise_to_a_mapped_one() {
        let principal = principal(serde_json::json!({"sub": "alice"}));
        let mut h = HeaderMap::new();
        for name in [
            "x-auth_subject",
            "x_auth_subject",
            "x-auth-subject",
            "x_auth-groups",
        ] {
            h.append(name, "mallory".parse().unwrap());
        }
        h.insert("x-auth-subjects", "kept".parse().unwrap());
        apply(&forwarding(), &mut h, &principal, None).unwrap();
        assert_eq!(h.get_all("x-auth-subject").iter().count(), 1);
        assert_eq!(h["x-auth-subject"], "alice");
        for gone in ["x-auth_subject", "x_auth_subject", "x_auth-groups"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["x-auth-subjects"], "kept");
    }

    #[test]
    fn forwarding_headers_come_from_the_sidecar() {
        let principal = principal(serde_json::json!({"sub": "alice"}));
        let mut h = HeaderMap::new();
        for name in [
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded-proto",
            "x-forwarded-prefix",
            "x-real-ip",
            "x_real_ip",
            "forwarded",
        ] {
            h.insert(name, "10.0.0.1".parse().unwrap());
        }
        let peer = crate::peer::Peer::new("[::ffff:192.0.2.7]:1234".parse().unwrap());
        let client = Some(peer.forwarded_for().clone());
        apply(&forwarding(), &mut h, &principal, client).unwrap();
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        for gone in [
            "x_forwarded_for",
            "x-forwarded-prefix",
            "x-real-ip",
            "x_real_ip",
            "forwarded",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn email_needs_email_verified() {
        for (claims, forwarded) in [
            (
                serde_json::json!({"email": "a@x.test", "email_verified": true}),
                true,
            ),
            (
                serde_json::json!({"email": "a@x.test", "email_verified": false}),
                false,
            ),
            (
                serde_json::json!({"email": "a@x.test", "email_verified": "true"}),
                false,
            ),
            (serde_json::json!({"email": "a@x.test"}), false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-auth-email", "mallory@x.test".parse().unwrap());
            apply(&forwarding(), &mut h, &principal(claims.clone()), None).unwrap();
            assert_eq!(h.get("x-auth-email").is_some(), forwarded, "{claims}");
        }
    }

    #[test]
    fn claims_that_cannot_be_headers_refuse_the_request() {
        for bad in [
            serde_json::json!("alice\r\nX-Evil: 1"),
            serde_json::json!("alice\u{0}"),
            serde_json::json!(["a", "b\nc"]),
            serde_json::json!({"nested": 1}),
        ] {
            let mut h = HeaderMap::new();
            let result = apply(
                &forwarding(),
                &mut h,
                &principal(serde_json::json!({"sub": bad})),
                None,
            );
            assert_eq!(
                result,
                Err(Unforwardable {
                    claim: "sub".into()
                })
            );
        }
        // Non-ASCII text travels as UTF-8.
        let mut h = HeaderMap::new();
        apply(
            &forwarding(),
            &mut h,
            &principal(serde_json::json!({"sub": "s", "name": "José"})),
            None,
        )
        .unwrap();
        assert_eq!(h["x-auth-name"].as_bytes(), "José".as_bytes());
    }
}
