//! Client ID metadata documents: a `client_id` that is an https URL names a JSON document the
//! client hosts. Fetching it is an SSRF risk, so (unless `allowPrivateClientMetadata`) the
//! connection may only go to a global unicast address: an IP-literal host is checked before
//! anything is sent, and host names go through a resolver that refuses names with any other
//! address, so the address checked is the address connected to. No proxy from the environment is
//! used, redirects are not followed, the body is capped and the result cached.

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;
use url::{Host, Url};

use super::crypto::sha256_b64;
use super::metrics::OpResult;
use super::records::ClientRecord;
use super::{FAILED_METADATA_TTL, OAuthProxy, Reject, provider, redirect};

/// Largest metadata document read.
const MAX_DOCUMENT: usize = 16 * 1024;
/// Cache lifetime bounds (seconds), applied to the document's `Cache-Control: max-age`.
const MIN_CACHE: u64 = 60;
const MAX_CACHE: u64 = 24 * 3600;
const DEFAULT_CACHE: u64 = 300;
/// Longest DNS lookup for a metadata host.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether an IPv4 address is global unicast: not "this network" (0/8), private, shared
/// (CGNAT 100.64/10), loopback, link-local, IETF protocol assignments (192.0.0/24),
/// documentation, the 6to4 relay anycast (192.88.99/24), benchmarking (198.18/15), multicast,
/// reserved (240/4) or broadcast.
fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || a >= 224
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 169 && b == 254)
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113))
}

/// Whether an IPv6 address is global unicast: inside 2000::/3, and not IETF protocol
/// assignments (2001::/23: Teredo, benchmarking, ORCHID…), documentation (2001:db8::/32,
/// 3fff::/20) or 6to4 (2002::/16, which embeds any IPv4 address). Everything outside 2000::/3 is
/// refused (loopback, unspecified, IPv4-compatible `::a.b.c.d`, ULA, link- and site-local,
/// multicast, local-use NAT64 64:ff9b:1::/48), except IPv4-mapped `::ffff:a.b.c.d` and
/// well-known-prefix NAT64 `64:ff9b::a.b.c.d`, which stand for their IPv4 address and are judged
/// by it (DNS64 gives the latter for every IPv4-only host).
fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return is_global_v4(Ipv4Addr::new(a, b, c, d));
    }
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] < 0x0200)
        && !(s[0] == 0x2001 && s[1] == 0x0db8)
        && s[0] != 0x2002
        && !(s[0] == 0x3fff && s[1] < 0x1000)
}

/// Whether a metadata document may be fetched from `ip`: global unicast only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// A host name resolved to an address that is not global unicast.
#[derive(Debug, thiserror::Error)]
#[error("host resolves to an address that is not public")]
struct NotPublic;

/// Resolves metadata hosts for the HTTP client, refusing a name when any of its addresses is not
/// global unicast. The client connects only to what this returns, so the check cannot be raced
/// by a second DNS answer (rebinding).
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                    .await
                    .map_err(Box::new)??
                    .collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(Box::new(NotPublic) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

fn refuse(why: impl Into<String>) -> Reject {
    Reject::invalid_client(format!("client metadata document refused: {}", why.into()))
}

fn why(text: impl Into<String>) -> String {
    text.into()
}

/// `max-age` from a `Cache-Control` header, clamped; 0 for `no-store`.
pub fn cache_seconds(cache_control: Option<&str>) -> u64 {
    let Some(cc) = cache_control else {
        return DEFAULT_CACHE;
    };
    let mut max_age = None;
    for part in cc.split(',').map(str::trim) {
        if part.eq_ignore_ascii_case("no-store") || part.eq_ignore_ascii_case("no-cache") {
            return 0;
        }
        if let Some(v) = part.strip_prefix("max-age=") {
            max_age = v.parse::<u64>().ok();
        }
    }
    max_age.map_or(DEFAULT_CACHE, |s| s.clamp(MIN_CACHE, MAX_CACHE))
}

/// Checks a client ID URL before anything is fetched: https (loopback http only with
/// `allowPrivateClientMetadata`), a path, no fragment or user info, and, unless private
/// addresses are allowed, no literal private or loopback address (names are checked when they
/// resolve).
pub fn check_url(client_id: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(client_id).map_err(|_| why("not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private && mcp_warden_policy::is_loopback_host(&url) => {}
        _ => return Err(why("client_id URL must use https")),
    }
    if url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() == "/"
    {
        return Err(why(
            "client_id URL must have a path and no fragment or user info",
        ));
    }
    if !allow_private {
        match url.host() {
            Some(Host::Ipv4(ip)) if !is_public(ip.into()) => {
                return Err(why("the host is not a public address"));
            }
            Some(Host::Ipv6(ip)) if !is_public(ip.into()) => {
                return Err(why("the host is not a public address"));
            }
            Some(_) => {}
            None => return Err(why("no host")),
        }
    }
    Ok(url)
}

/// Checks a fetched client ID metadata document (RFC draft `client_id` URL documents) for
/// `client_id`: the same `client_id`, public-client auth only, and redirect URIs that pass the
/// registration rules and the policy's list.
pub fn check_document(
    client_id: &str,
    body: &[u8],
    allowed_redirect_uris: &[String],
) -> Result<ClientRecord, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|_| why("not a client metadata JSON document"))?;
    if doc.client_id != client_id {
        return Err(why("client_id in the document differs from its URL"));
    }
    let method = doc
        .token_endpoint_auth_method
        .unwrap_or_else(|| "none".into());
    if method != "none" {
        return Err(why(format!(
            "token_endpoint_auth_method {method:?} is not supported for metadata documents"
        )));
    }
    if doc.redirect_uris.len() > redirect::MAX_REDIRECT_URIS {
        return Err(why("too many redirect_uris"));
    }
    for uri in &doc.redirect_uris {
        let parsed = redirect::check_shape(uri)?;
        // The policy's redirect list applies exactly as for registration.
        if !redirect::allowed_by_policy(allowed_redirect_uris, &parsed) {
            return Err(why(format!(
                "redirect URI {uri:?} is not allowed by this server"
            )));
        }
    }
    if doc.redirect_uris.is_empty() {
        return Err(why("no redirect_uris"));
    }
    let record = ClientRecord {
        client_id: client_id.to_owned(),
        client_name: doc.client_name.filter(|n| n.len() <= 200),
        redirect_uris: doc.redirect_uris,
        token_endpoint_auth_method: method,
        secret_hash: None,
        metadata_document: true,
    };
    Ok(record)
}

impl OAuthProxy {
    /// Resolves a URL-shaped client id through the cache or a fetch.
    pub(super) async fn metadata_client(&self, client_id: &str) -> Result<ClientRecord, Reject> {
        let cache_id = sha256_b64(client_id.as_bytes());
        if let Some(record) = self.get_json::<ClientRecord>("cimd", &cache_id).await? {
            return Ok(record);
        }
        // A failure is remembered for a while, so a bad or hostile URL costs one fetch, not one
        // per request.
        if let Some(why) = self.get_json::<String>("cimd-failed", &cache_id).await? {
            return Err(refuse(why));
        }
        let result = self.fetch_metadata(client_id).await;
        self.metrics.registration(match &result {
            Ok(_) => OpResult::Success,
            Err(_) => OpResult::InvalidClientMetadata,
        });
        let (record, ttl) = match result {
            Ok(found) => found,
            Err(why) => {
                self.put_new_json("cimd-failed", &cache_id, &why, FAILED_METADATA_TTL)
                    .await?;
                return Err(refuse(why));
            }
        };
        if ttl > 0 {
            self.put_new_json("cimd", &cache_id, &record, Duration::from_secs(ttl))
                .await?;
        }
        Ok(record)
    }

    /// Fetches and checks a document; the error is why it cannot be used (safe to show: it never
    /// carries the target's answer).
    async fn fetch_metadata(&self, client_id: &str) -> Result<(ClientRecord, u64), String> {
        let allow_private = self.spec.allow_private_client_metadata;
        let url = check_url(client_id, allow_private)?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder.build().map_err(|_| why("cannot build client"))?;
        let resp = client
            .get(url.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                let mut cause = e.source();
                while let Some(c) = cause {
                    if c.is::<NotPublic>() {
                        return why("host resolves to a private or loopback address");
                    }
                    cause = c.source();
                }
                why("fetch failed")
            })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(why("the document could not be fetched"));
        }
        let ttl = cache_seconds(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let body = provider::read_capped(resp, MAX_DOCUMENT)
            .await
            .map_err(|_| why("document too large"))?;
        let record = check_document(client_id, &body, &self.spec.allowed_redirect_uris)?;
        Ok((record, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_unicast_addresses_are_public() {
        for ip in [
            // IPv4 special-purpose ranges
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 outside 2000::/3
            "::",
            "::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff0e::1",
            "64:ff9b:1::a00:1",
            "100::1",
            // IPv6 standing for a non-public IPv4
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            // special ranges inside 2000::/3
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "3fff::1",
            "3fff:fff::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "140.82.112.3",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:200::1",
            "2001:4860:4860::8888",
            "3fff:1000::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_with_private_addresses() {
        // `localhost` resolves locally (no query leaves the machine) to loopback addresses.
        let err = match PublicOnly.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.is::<NotPublic>(), "{err}");
    }

    #[test]
    fn cache_headers_are_honoured_within_bounds() {
        assert_eq!(cache_seconds(None), DEFAULT_CACHE);
        assert_eq!(cache_seconds(Some("public, max-age=3600")), 3600);
        assert_eq!(cache_seconds(Some("max-age=5")), MIN_CACHE);
        assert_eq!(cache_seconds(Some("max-age=99999999")), MAX_CACHE);
        assert_eq!(cache_seconds(Some("no-store")), 0);
    }
}
