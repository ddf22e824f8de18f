//! Client ID metadata documents: a `client_id` that is an https URL names a JSON document the
//! client hosts. Fetching it is an SSRF risk, so the host is resolved here and every address
//! must be public (unless `allowPrivateClientMetadata`), the connection is pinned to the checked
//! address, redirects are not followed, the body is capped and the result cached.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::crypto::sha256_b64;
use super::metrics::OpResult;
use super::records::ClientRecord;
use super::{OAuthProxy, Reject, provider, redirect};

/// Largest metadata document read.
const MAX_DOCUMENT: usize = 16 * 1024;
/// Cache lifetime bounds (seconds), applied to the document's `Cache-Control: max-age`.
const MIN_CACHE: u64 = 60;
const MAX_CACHE: u64 = 24 * 3600;
const DEFAULT_CACHE: u64 = 300;

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// multicast, documentation, unspecified, or an IPv4-mapped form of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
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

impl OAuthProxy {
    /// Resolves a URL-shaped client id through the cache or a fetch.
    pub(super) async fn metadata_client(&self, client_id: &str) -> Result<ClientRecord, Reject> {
        let cache_id = sha256_b64(client_id.as_bytes());
        if let Some(record) = self.get_json::<ClientRecord>("cimd", &cache_id).await? {
            return Ok(record);
        }
        let result = self.fetch_metadata(client_id).await;
        self.metrics.registration(match &result {
            Ok(_) => OpResult::Success,
            Err(_) => OpResult::InvalidClientMetadata,
        });
        let (record, ttl) = result?;
        if ttl > 0 {
            self.put_json("cimd", &cache_id, &record, Duration::from_secs(ttl))
                .await?;
        }
        Ok(record)
    }

    async fn fetch_metadata(&self, client_id: &str) -> Result<(ClientRecord, u64), Reject> {
        let allow_private = self.spec.allow_private_client_metadata;
        let url = Url::parse(client_id).map_err(|_| refuse("not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_private && mcp_warden_policy::is_loopback_host(&url) => {}
            _ => return Err(refuse("client_id URL must use https")),
        }
        if url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.path() == "/"
        {
            return Err(refuse(
                "client_id URL must have a path and no fragment or user info",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| refuse("no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| refuse("DNS lookup timed out"))?
        .map_err(|_| refuse("host does not resolve"))?
        .collect();
        if addrs.is_empty() {
            return Err(refuse("host does not resolve"));
        }
        if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(refuse("host resolves to a private or loopback address"));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, addrs[0])
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|_| refuse("cannot build client"))?;
        let resp = client
            .get(url.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| refuse("fetch failed"))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(refuse(format!("fetch answered {}", resp.status().as_u16())));
        }
        let ttl = cache_seconds(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let body = provider::read_capped(resp, MAX_DOCUMENT)
            .await
            .map_err(|_| refuse("document too large"))?;
        let doc: Document = serde_json::from_slice(&body)
            .map_err(|_| refuse("not a client metadata JSON document"))?;
        if doc.client_id != client_id {
            return Err(refuse("client_id in the document differs from its URL"));
        }
        let method = doc
            .token_endpoint_auth_method
            .unwrap_or_else(|| "none".into());
        if method != "none" {
            return Err(refuse(format!(
                "token_endpoint_auth_method {method:?} is not supported for metadata documents"
            )));
        }
        for uri in &doc.redirect_uris {
            let parsed = redirect::check_shape(uri).map_err(refuse)?;
            // The policy's redirect list applies exactly as for registration.
            if !redirect::allowed_by_policy(&self.spec.allowed_redirect_uris, &parsed) {
                return Err(refuse(format!(
                    "redirect URI {uri:?} is not allowed by this server"
                )));
            }
        }
        if doc.redirect_uris.is_empty() {
            return Err(refuse("no redirect_uris"));
        }
        let record = ClientRecord {
            client_id: client_id.to_owned(),
            client_name: doc.client_name.filter(|n| n.len() <= 200),
            redirect_uris: doc.redirect_uris,
            token_endpoint_auth_method: method,
            secret_hash: None,
            metadata_document: true,
        };
        Ok((record, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "140.82.112.3", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
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
