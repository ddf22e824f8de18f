//! Redirect URI rules (RFC 7591, RFC 8252, OAuth 2.1): which URIs a client may register, and
//! whether an authorization request's `redirect_uri` is one of them.
//!
//! Registration accepts https URIs and loopback `http` URIs (`127.0.0.1`, `[::1]`, `localhost`);
//! custom schemes (`cursor://…`) only when `allowedRedirectUris` lists them. When the policy
//! lists URIs, a registered URI must also match one: exactly, or for a loopback entry written
//! without a port, on any port (with the entry's path, or any path when the entry has none).
//! An empty list allows only loopback URIs — other hosts are an explicit opt-in.

use mcp_warden_policy::is_loopback_host;
use url::Url;

/// Why a redirect URI is refused (the text goes to the client).
pub type Refusal = String;

/// Most redirect URIs one client may register (real clients register one to three).
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI (or other URI in client metadata) accepted, in bytes.
pub const MAX_URI_LENGTH: usize = 2000;

fn has_dot_segments(raw: &str) -> bool {
    let path_start = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[path_start..];
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|seg| {
        seg == "."
            || seg == ".."
            || seg.eq_ignore_ascii_case("%2e")
            || seg.eq_ignore_ascii_case("%2e%2e")
    })
}

/// Checks the shape of one redirect URI: absolute, no fragment, no userinfo, no dot segments,
/// and https, loopback http, or a non-web scheme.
pub fn check_shape(raw: &str) -> Result<Url, Refusal> {
    if raw.len() > MAX_URI_LENGTH {
        return Err(format!(
            "a redirect URI is longer than {MAX_URI_LENGTH} bytes"
        ));
    }
    let url = Url::parse(raw).map_err(|_| format!("{raw:?} is not an absolute URI"))?;
    if raw.contains('#') {
        return Err(format!("{raw:?} must not contain a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} must not contain user info"));
    }
    if has_dot_segments(raw) {
        return Err(format!("{raw:?} must not contain dot segments"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(format!(
            "{raw:?}: plain http is only allowed for loopback addresses"
        )),
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err(format!("{raw:?}: scheme {} is not allowed", url.scheme()))
        }
        _ => Ok(url),
    }
}

/// A policy entry: loopback entries without a port match any port (RFC 8252 §7.3).
fn entry_matches(entry: &str, url: &Url) -> bool {
    let Ok(allowed) = Url::parse(entry) else {
        return false;
    };
    if allowed.scheme() == "http" && is_loopback_host(&allowed) && allowed.port().is_none() {
        let entry_has_path = entry.trim_start_matches("http://").contains('/');
        return url.scheme() == "http"
            && url.host() == allowed.host()
            && url.query().is_none()
            && (!entry_has_path || url.path() == allowed.path());
    }
    allowed.as_str() == url.as_str()
}

/// Whether the policy lets a client register `raw` (after [`check_shape`]).
pub fn allowed_by_policy(allowed: &[String], url: &Url) -> bool {
    if allowed.is_empty() {
        return url.scheme() == "http" && is_loopback_host(url);
    }
    allowed.iter().any(|entry| entry_matches(entry, url))
}

/// Validates a registration's redirect URIs; returns them unchanged.
pub fn validate_registration(allowed: &[String], uris: &[String]) -> Result<(), Refusal> {
    if uris.is_empty() {
        return Err("redirect_uris must list at least one URI".into());
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(format!(
            "redirect_uris lists more than {MAX_REDIRECT_URIS} URIs"
        ));
    }
    for raw in uris {
        let url = check_shape(raw)?;
        if !allowed_by_policy(allowed, &url) {
            return Err(format!(
                "{raw:?} is not allowed by this server's redirect URI policy"
            ));
        }
    }
    Ok(())
}

/// Whether an authorization request's `redirect_uri` matches a registered one: exactly, or for
/// loopback http URIs with any port (native apps pick a free port at run time).
pub fn matches_registered(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    // The same shape rules as at registration: no user info (`http://evil@127.0.0.1:…`), no
    // fragment, no dot segments.
    let Ok(req) = check_shape(requested) else {
        return false;
    };
    if req.scheme() != "http" || !is_loopback_host(&req) {
        return false;
    }
    registered
        .iter()
        .filter_map(|r| Url::parse(r).ok())
        .any(|reg| {
            reg.scheme() == "http"
                && reg.host() == req.host()
                && reg.path() == req.path()
                && reg.query() == req.query()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Vec<String> {
        [
            "http://localhost",
            "http://127.0.0.1",
            "https://claude.ai/api/mcp/auth_callback",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn accepts_what_real_clients_register() {
        for uri in [
            "http://localhost:49152/oauth/callback",
            "http://127.0.0.1:33418/",
            "http://127.0.0.1:8080/callback",
            "https://claude.ai/api/mcp/auth_callback",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ] {
            assert_eq!(
                validate_registration(&policy(), &[uri.to_owned()]),
                Ok(()),
                "{uri}"
            );
        }
    }

    #[test]
    fn refuses_hostile_uris() {
        for uri in [
            "https://evil.example/cb",
            "https://claude.ai/api/mcp/auth_callback/../../evil",
            "https://claude.ai/api/mcp/auth_callback#frag",
            "http://user:pw@localhost:1234/cb",
            "http://evil.example/cb",
            "javascript:alert(1)",
            "cursor://other/callback",
            "http://localhost.evil.example/cb",
            "http://127.0.0.1:9/a/%2e%2e/b",
            "not a uri",
        ] {
            assert!(
                validate_registration(&policy(), &[uri.to_owned()]).is_err(),
                "{uri}"
            );
        }
        assert!(validate_registration(&policy(), &[]).is_err());
    }

    #[test]
    fn bounds_count_and_length() {
        let long = format!("http://127.0.0.1:5/{}", "a".repeat(MAX_URI_LENGTH));
        assert!(validate_registration(&policy(), std::slice::from_ref(&long)).is_err());
        assert!(!matches_registered(&["http://127.0.0.1:5/".into()], &long));
        let many: Vec<String> = (0..=MAX_REDIRECT_URIS)
            .map(|i| format!("http://127.0.0.1:5/cb{i}"))
            .collect();
        assert!(validate_registration(&policy(), &many).is_err());
        assert!(validate_registration(&policy(), &many[..MAX_REDIRECT_URIS]).is_ok());
    }

    #[test]
    fn empty_policy_allows_loopback_only() {
        assert!(validate_registration(&[], &["http://127.0.0.1:5000/cb".into()]).is_ok());
        assert!(
            validate_registration(&[], &["https://claude.ai/api/mcp/auth_callback".into()])
                .is_err()
        );
    }

    #[test]
    fn loopback_entry_with_path_pins_the_path() {
        let p = vec!["http://localhost/oauth/callback".to_owned()];
        assert!(
            validate_registration(&p, &["http://localhost:1234/oauth/callback".into()]).is_ok()
        );
        assert!(validate_registration(&p, &["http://localhost:1234/other".into()]).is_err());
    }

    #[test]
    fn authorization_request_matching() {
        let reg = vec![
            "http://127.0.0.1:33418/".to_owned(),
            "https://app.example/cb".to_owned(),
        ];
        assert!(matches_registered(&reg, "https://app.example/cb"));
        assert!(
            matches_registered(&reg, "http://127.0.0.1:50000/"),
            "loopback port may vary"
        );
        assert!(!matches_registered(&reg, "https://app.example/cb2"));
        assert!(!matches_registered(&reg, "https://app.example/cb?x=1"));
        assert!(!matches_registered(&reg, "http://127.0.0.1:50000/other"));
        assert!(
            !matches_registered(&reg, "http://localhost:33418/"),
            "host must match"
        );
        for hostile in [
            "http://evil.example@127.0.0.1:50000/",
            "http://evil.example:pw@127.0.0.1:33418/",
            "http://127.0.0.1:50000/#x",
            "http://127.0.0.1:50000/a/../",
        ] {
            assert!(!matches_registered(&reg, hostile), "{hostile}");
        }
    }
}
