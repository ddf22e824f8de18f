//! The checks behind each fuzz target: feed the sidecar's input handling arbitrary bytes, and
//! assert the properties that must hold whatever arrives (no panic, refusals stay refusals,
//! builders round-trip through a parser).

use std::sync::{Arc, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use mcp_warden_policy::{PolicyDocument, ScopeRule};
use mcp_warden_sidecar::app::{Credentials, credentials};
use mcp_warden_sidecar::challenge::Challenge;
use mcp_warden_sidecar::keys::KeySet;
use mcp_warden_sidecar::oauth::redirect;
use mcp_warden_sidecar::rules::Rules;
use mcp_warden_sidecar::verify::{Claim, Expectations, Keys, Verifier};
use serde_json::Value;

const ISSUER: &str = "https://login.example.com";
const AUDIENCE: &str = "https://mcp.example.com/mcp";

struct Jwt {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    key: EcdsaKeyPair,
}

fn jwt() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(|| {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let point = key.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let (keys, skipped) = KeySet::from_json(jwks.to_string().as_bytes()).expect("jwks");
        assert_eq!(skipped, 0);
        let expect = Expectations {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            leeway: 60,
            token_types: vec!["at+jwt".into()],
        };
        Jwt {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            verifier: Verifier::new(expect, Keys::Local(Arc::new(keys))),
            key,
        }
    })
}

/// Bearer-token extraction and verification up to and including the signature check.
///
/// First byte even: the rest is an `Authorization` header value, extracted and verified as
/// is. Odd: the rest is `<header JSON>\n<claims JSON>`, signed with the trusted key, so the
/// header and claims handling behind a valid signature is reached too.
pub fn bearer_jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let jwt = jwt();
    let token = if mode % 2 == 0 {
        let Ok(value) = http::HeaderValue::from_bytes(rest) else {
            return;
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        match credentials(&headers) {
            Credentials::Bearer(token) => token.to_owned(),
            Credentials::None | Credentials::Ambiguous => return,
        }
    } else {
        let Some(split) = rest.iter().position(|&b| b == b'\n') else {
            return;
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&rest[..split]),
            URL_SAFE_NO_PAD.encode(&rest[split + 1..])
        );
        let signature = jwt
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    let Ok((principal, _)) = jwt.runtime.block_on(jwt.verifier.verify(&token)) else {
        return;
    };
    // Whatever was accepted satisfies the policy.
    let claims = &principal.claims;
    assert_eq!(claims.get("iss").and_then(Claim::as_str), Some(ISSUER));
    let audience_ok = |a: &str| a == AUDIENCE || a == format!("{AUDIENCE}/");
    match claims.get("aud") {
        Some(Claim::Json(Value::Array(list))) => assert!(
            list.iter().filter_map(Value::as_str).any(audience_ok),
            "{claims:?}"
        ),
        Some(aud) => assert!(aud.as_str().is_some_and(audience_ok), "{claims:?}"),
        None => panic!("accepted without aud: {claims:?}"),
    }
    let now = jsonwebtoken::get_current_timestamp();
    assert!(
        principal.expires_at + 60 >= now,
        "accepted expired: {claims:?}"
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("header base64"),
    )
    .expect("header JSON");
    assert_eq!(header.get("alg").and_then(Value::as_str), Some("ES256"));
    for member in ["crit", "b64", "zip", "enc"] {
        assert!(
            header.get(member).is_none(),
            "accepted a header with {member}"
        );
    }
}

/// The JSON-RPC body scan behind per-tool scope rules.
pub fn rpc_rules(data: &[u8]) {
    let rule = |method: &str, tools: &[&str], scope: &str| ScopeRule {
        method: method.into(),
        tools: tools.iter().map(|t| (*t).into()).collect(),
        scopes: vec![scope.into()],
    };
    let rules = Rules::new(&[
        rule("tools/call", &["delete_*"], "mcp:admin"),
        rule("tools/call", &["*secret*", "exact"], "mcp:secret"),
        rule("resources/read", &[], "mcp:read"),
        rule("*", &[], "mcp:any"),
    ]);
    let _ = mcp_warden_sidecar::rpc::id_of(data);
    if let Ok(scopes) = rules.required_for(data) {
        // Accepted bodies are JSON (numbers beyond f64 are valid JSON that serde_json's `Value`
        // cannot hold), and the catch-all rule applies to every request.
        if let Err(e) = serde_json::from_slice::<Value>(data) {
            assert!(e.to_string().starts_with("number out of range"), "{e}");
        }
        let messages = mcp_warden_sidecar::rpc::scan(data).expect("accepted bodies scan");
        if messages.iter().any(|m| m.method.is_some()) {
            assert!(scopes.iter().any(|s| s == "mcp:any"), "{scopes:?}");
        }
        let text = String::from_utf8_lossy(data);
        if text.contains("delete_") && !scopes.iter().any(|s| s == "mcp:admin") {
            // A `delete_*` tool name anywhere is fine (arguments), but not as the called tool.
            for message in mcp_warden_sidecar::rpc::scan(data).expect("scanned before") {
                assert!(
                    !(message.method.as_deref() == Some("tools/call")
                        && message
                            .tool
                            .as_deref()
                            .is_some_and(|t| t.starts_with("delete_"))),
                    "{message:?}"
                );
            }
        }
    }
}

/// The JSON-RPC scan's fast path answers as the full scan does, or leaves the answer to it.
pub fn rpc_fast(data: &[u8]) {
    if let Some(fast) = mcp_warden_sidecar::rpc::fast_scan(data) {
        assert_eq!(Ok(fast), mcp_warden_sidecar::rpc::full_scan(data));
    }
}

/// Redirect URI validation: lines are `allowed` entries up to an empty line, then URIs.
pub fn redirect_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (allowed, uris) = text.split_once("\n\n").unwrap_or(("", text));
    let allowed: Vec<String> = allowed.lines().map(str::to_owned).collect();
    let uris: Vec<String> = uris.lines().map(str::to_owned).collect();
    if redirect::validate_registration(&allowed, &uris).is_ok() {
        for uri in &uris {
            let url = redirect::check_shape(uri).expect("validated URIs have a valid shape");
            assert!(!uri.contains('#') && url.username().is_empty() && url.password().is_none());
            assert!(!matches!(
                url.scheme(),
                "javascript" | "data" | "file" | "vbscript"
            ));
            if url.scheme() == "http" {
                assert!(mcp_warden_policy::is_loopback_host(&url), "{uri}");
            }
            // A registered URI is always usable as itself.
            assert!(redirect::matches_registered(&uris, uri));
        }
    }
    if let Some((requested, registered)) = uris.split_last()
        && redirect::matches_registered(registered, requested)
        && !registered.contains(requested)
    {
        // Matched by the loopback any-port rule only: still a loopback http URI.
        let url = redirect::check_shape(requested).expect("shape");
        assert_eq!(url.scheme(), "http");
        assert!(mcp_warden_policy::is_loopback_host(&url), "{requested}");
    }
}

/// The dynamic client registration body.
pub fn dcr_body(data: &[u8]) {
    let allowed = ["https://app.example.com/callback".to_owned()];
    if let Ok(reg) = mcp_warden_sidecar::oauth::check_registration(&allowed, data) {
        assert!(
            ["none", "client_secret_basic", "client_secret_post"].contains(&reg.method.as_str())
        );
        assert!(reg.response_types.iter().all(|r| r == "code"));
        assert!(
            reg.grant_types
                .iter()
                .all(|g| g == "authorization_code" || g == "refresh_token")
        );
    }
}

/// The client ID metadata document and its URL. First line: the client ID URL; the rest: the
/// document.
pub fn cimd_document(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(client_id) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    if let Ok(url) = mcp_warden_sidecar::oauth::check_client_metadata_url(client_id, false) {
        assert_eq!(url.scheme(), "https");
        if let Some(url::Host::Ipv4(ip)) = url.host() {
            assert!(
                mcp_warden_sidecar::oauth::is_public_address(ip.into()),
                "{client_id}"
            );
        }
        if let Some(url::Host::Ipv6(ip)) = url.host() {
            assert!(
                mcp_warden_sidecar::oauth::is_public_address(ip.into()),
                "{client_id}"
            );
        }
    }
    let allowed = ["https://app.example.com/callback".to_owned()];
    if let Ok(record) = mcp_warden_sidecar::oauth::check_client_metadata_document(
        client_id,
        &data[split + 1..],
        &allowed,
    ) {
        assert_eq!(record.client_id, client_id);
        assert!(!record.redirect_uris.is_empty());
        assert!(record.secret_hash.is_none());
        for uri in &record.redirect_uris {
            assert!(redirect::check_shape(uri).is_ok());
        }
    }
}

/// The policy document: YAML to a validated policy, and a valid policy survives a round trip.
pub fn policy_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = PolicyDocument::from_yaml(text) else {
        return;
    };
    let again = PolicyDocument::from_yaml(&doc.to_yaml()).expect("a valid policy re-reads");
    assert_eq!(again, doc);
}

/// `WWW-Authenticate` challenges and both metadata documents, read back by a parser.
pub fn challenge_metadata(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(url), Some(scope)) = (parts.next(), parts.next()) else {
        return;
    };
    let name = parts.next();
    let challenge = Challenge {
        resource_metadata: url.to_owned(),
        scope: scope.to_owned(),
    };
    for response in [
        challenge.unauthorized(None),
        challenge.unauthorized(Some(mcp_warden_sidecar::verify::TokenError::Expired)),
        challenge.forbidden(scope),
    ] {
        let value = response.headers()[http::header::WWW_AUTHENTICATE].as_bytes();
        if value == b"Bearer" {
            // The fallback when a value cannot be a header (control characters).
            assert!(url.chars().chain(scope.chars()).any(|c| c.is_control()));
            continue;
        }
        let params = parse_challenge(value).expect("the challenge parses");
        assert_eq!(
            params.first().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("resource_metadata", url))
        );
        if !scope.is_empty() {
            assert!(
                params.iter().any(|(k, v)| k == "scope" && v == scope),
                "{params:?}"
            );
        }
    }
    let scopes: Vec<String> = scope.split(' ').map(str::to_owned).collect();
    let doc: Value = serde_json::from_slice(&mcp_warden_sidecar::metadata::render(
        url, scope, &scopes, name,
    ))
    .expect("metadata is JSON");
    assert_eq!(doc["resource"], url);
    assert_eq!(doc["authorization_servers"][0], scope);
    assert_eq!(doc["resource_name"].as_str(), name);
    let server = mcp_warden_sidecar::oauth::metadata::render(url, &scopes);
    let server: Value = serde_json::from_str(&server.to_string()).expect("server metadata");
    assert_eq!(server["issuer"], url);
    assert_eq!(server["token_endpoint"], format!("{url}/token"));
}

/// Parses `Bearer k="v", k2="v2"` (RFC 7235 auth-params with quoted strings only).
fn parse_challenge(value: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(value).ok()?;
    let mut rest = text.strip_prefix("Bearer ")?;
    let mut params = Vec::new();
    loop {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut out = String::new();
        let end = loop {
            match chars.next()? {
                (_, '\\') => out.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => out.push(c),
            }
        };
        params.push((key.to_owned(), out));
        rest = &after[1 + end + 1..];
        if rest.is_empty() {
            return Some(params);
        }
        rest = rest.strip_prefix(", ")?;
    }
}

/// An app's response as the proxy reads it: the head, then a chunked body, which must decode the
/// same whether it arrives whole or a byte at a time.
pub fn app_response(data: &[u8]) {
    use mcp_warden_sidecar::chunked;
    use mcp_warden_sidecar::pool::head;
    let mut buf = bytes::BytesMut::from(data);
    let Ok(Some(head)) = head::read_response(&mut buf, &http::Method::GET) else {
        return;
    };
    if head.framing != head::Framing::Chunked {
        return;
    }
    let decode = |step: usize| {
        let mut decoder = chunked::Decoder::default();
        let mut body = Vec::new();
        for piece in buf.chunks(step) {
            let mut input = bytes::Bytes::copy_from_slice(piece);
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(data)) => body.extend_from_slice(&data),
                    Ok(None) => break,
                    Err(_) => return None,
                }
            }
            if decoder.is_done() {
                return Some((body, input.len()));
            }
        }
        Some((body, usize::MAX))
    };
    let whole = decode(buf.len().max(1));
    let bytewise = decode(1);
    match (whole, bytewise) {
        // Decoded alike; what followed the end (if it came) is left over, not read.
        (Some((a, rest)), Some((b, _))) => {
            assert_eq!(a, b);
            assert!(rest == usize::MAX || rest <= buf.len());
        }
        (None, None) => {}
        (whole, bytewise) => panic!("whole {whole:?} vs byte by byte {bytewise:?}"),
    }
}

/// A client's request head as the sidecar's HTTP/1.1 server reads it: never a panic, and the same
/// request (or the same refusal) whether the bytes arrive whole or in two reads split anywhere.
pub fn client_request(data: &[u8]) {
    use mcp_warden_sidecar::http1::head::read_request;
    const LIMIT: usize = 4096;
    let describe = |buf: &mut bytes::BytesMut| match read_request(buf, LIMIT) {
        Ok(Some(head)) => Some(Ok(format!(
            "{:?} {:?} {:?} {:?} {} {} rest={}",
            head.parts.method,
            head.parts.uri,
            head.parts.headers,
            head.framing,
            head.keep_alive,
            head.expects_continue,
            buf.len()
        ))),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    };
    let whole = describe(&mut bytes::BytesMut::from(data));
    for split in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        let mut buf = bytes::BytesMut::from(&data[..split]);
        let early = describe(&mut buf);
        let late = match early {
            // A refusal from the first part stands; a complete head cannot change.
            Some(Err(_)) => continue,
            Some(Ok(_)) => early,
            None => {
                buf.extend_from_slice(&data[split..]);
                describe(&mut buf)
            }
        };
        if let (Some(Ok(a)), Some(Ok(b))) = (&whole, &late) {
            // A head complete in the first part leaves the rest unread.
            let strip = |s: &str| s.rsplit_once(" rest=").map(|(a, _)| a.to_owned());
            assert_eq!(strip(a), strip(b));
        } else if matches!(whole, Some(Err(_))) {
            assert!(matches!(late, Some(Err(_))), "{whole:?} vs {late:?}");
        } else {
            assert_eq!(whole.is_none(), late.is_none(), "{whole:?} vs {late:?}");
        }
    }
}
