//! The presets' exact requests and the parsing of real-shaped provider answers.

use super::*;
use mcp_warden_policy::{OAuthProxySpec, PolicyDocument};

fn spec(provider: &str, extra: &str) -> OAuthProxySpec {
    let access = "    access: {anyAuthenticatedUser: true}\n";
    let extra = if extra.contains("access:") {
        extra.to_owned()
    } else {
        format!("{extra}{access}")
    };
    let yaml = format!(
        "apiVersion: mcpwarden.dev/v1alpha1\nkind: McpAuthPolicy\nmetadata: {{name: p}}\nspec:\n  resource: {{url: 'https://mcp.example.com/mcp'}}\n  mode: oauthProxy\n  oauthProxy:\n    provider: {provider}\n    clientId: cid\n{extra}"
    );
    PolicyDocument::from_yaml(&yaml)
        .unwrap()
        .spec
        .oauth_proxy
        .unwrap()
}

fn query(url: &str) -> Vec<(String, String)> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[test]
fn github_authorize_and_token_requests() {
    let up = Upstream::preset(&spec("github", ""), Some("sec ret".into())).unwrap();
    let url = up.authorize_url(
        "https://mcp.example.com/callback",
        "st",
        "ch",
        "no",
        "https://mcp.example.com/mcp",
    );
    assert!(url.starts_with("https://github.com/login/oauth/authorize?"));
    assert_eq!(
        query(&url),
        [
            ("response_type", "code"),
            ("client_id", "cid"),
            ("redirect_uri", "https://mcp.example.com/callback"),
            ("scope", "read:user"),
            ("state", "st"),
            ("code_challenge", "ch"),
            ("code_challenge_method", "S256"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec(),
        "no nonce (not OIDC), no resource"
    );
    let call = up.code_request(
        "c0de",
        "https://mcp.example.com/callback",
        "ver",
        "https://mcp.example.com/mcp",
    );
    assert_eq!(call.url, "https://github.com/login/oauth/access_token");
    assert!(
        call.headers
            .contains(&("accept", "application/json".into())),
        "GitHub answers form-encoded otherwise"
    );
    assert_eq!(
        call.form,
        [
            ("grant_type", "authorization_code"),
            ("code", "c0de"),
            ("redirect_uri", "https://mcp.example.com/callback"),
            ("code_verifier", "ver"),
            ("client_id", "cid"),
            ("client_secret", "sec ret"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec()
    );
    let me = up.identity_request("gho_x").unwrap();
    assert_eq!(me.url, "https://api.github.com/user");
    assert!(
        me.headers.contains(&("user-agent", "mcp-warden".into())),
        "GitHub requires a User-Agent"
    );
    assert!(
        me.headers
            .contains(&("authorization", "Bearer gho_x".into()))
    );
    assert!(up.revoke_request("t", "refresh_token").is_none());
}

#[test]
fn github_errors_arrive_with_status_200() {
    let up = Upstream::preset(&spec("github", ""), None).unwrap();
    let err = up.parse_tokens(200, br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#).unwrap_err();
    assert!(err.is_invalid_grant());
    let ok = up
        .parse_tokens(
            200,
            br#"{"access_token":"gho_abc","token_type":"bearer","scope":"read:user"}"#,
        )
        .unwrap();
    assert_eq!(
        (ok.access_token.as_str(), ok.refresh_token, ok.expires_at),
        ("gho_abc", None, None)
    );
    let user = up
        .parse_identity(br#"{"login":"octocat","id":583231,"name":"The Octocat","email":null}"#)
        .unwrap();
    assert_eq!(
        user,
        Identity {
            subject: "583231".into(),
            name: Some("The Octocat".into()),
            email: None,
            preferred_username: Some("octocat".into()),
            ..Identity::default()
        }
    );
    assert!(up.parse_identity(br#"{"login":"x"}"#).is_err());
}

#[test]
fn google_asks_for_offline_access() {
    let up = Upstream::preset(&spec("google", ""), Some("s".into())).unwrap();
    let q = query(&up.authorize_url("https://m/callback", "st", "ch", "n1", "https://m/mcp"));
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
    assert_eq!(get("scope"), Some("openid email profile"));
    assert_eq!(get("access_type"), Some("offline"));
    assert_eq!(get("prompt"), Some("consent"));
    assert_eq!(get("nonce"), Some("n1"));
    assert_eq!(get("resource"), None);
    assert_eq!(up.token_endpoint, "https://oauth2.googleapis.com/token");
    let revoke = up.revoke_request("rt", "refresh_token").unwrap();
    assert_eq!(revoke.url, "https://oauth2.googleapis.com/revoke");
    assert!(revoke.form.contains(&("token".into(), "rt".into())));
}

#[test]
fn entra_uses_tenant_and_v2_scopes() {
    let up = Upstream::preset(
        &spec("entra", "    tenant: contoso.onmicrosoft.com\n"),
        Some("s".into()),
    )
    .unwrap();
    assert_eq!(
        up.authorization_endpoint,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    );
    assert_eq!(
        up.token_endpoint,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(up.scopes, ["openid", "profile", "email", "offline_access"]);
    assert!(
        !up.send_resource,
        "v2 endpoint rejects `resource` next to scopes"
    );
    let default = Upstream::preset(&spec("entra", ""), None).unwrap();
    assert!(default.authorization_endpoint.contains("/organizations/"));
    // Policy overrides: scopes, resource, extra params.
    let custom = Upstream::preset(
        &spec("entra", "    scopes: [api://app/.default]\n    sendResourceUpstream: true\n    extraAuthorizeParams: {prompt: select_account}\n"),
        None,
    )
    .unwrap();
    let q = query(&custom.authorize_url("https://m/callback", "s", "c", "n", "https://m/mcp"));
    assert!(q.contains(&("scope".into(), "api://app/.default".into())));
    assert!(q.contains(&("resource".into(), "https://m/mcp".into())));
    assert!(q.contains(&("prompt".into(), "select_account".into())));
}

fn id_token(claims: serde_json::Value) -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.sig",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[test]
fn id_token_claims_are_checked() {
    let up = Upstream::preset(&spec("entra", "    tenant: t1\n"), None).unwrap();
    let good = serde_json::json!({"iss": "https://login.microsoftonline.com/t1/v2.0", "aud": "cid", "nonce": "n", "exp": now() + 300, "sub": "s1", "name": "Ada"});
    assert_eq!(
        up.identity_from_id_token(&id_token(good.clone()), "n")
            .unwrap()
            .subject,
        "s1"
    );
    for (field, value) in [
        ("iss", serde_json::json!("https://evil")),
        ("aud", serde_json::json!("other")),
        ("nonce", serde_json::json!("x")),
        ("exp", serde_json::json!(1)),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(
            up.identity_from_id_token(&id_token(bad), "n").is_err(),
            "{field}"
        );
    }
}

#[test]
fn discovery_picks_basic_auth_and_checks_issuer() {
    let s = spec("oidc", "    issuer: http://127.0.0.1:9000\n");
    let doc = serde_json::json!({
        "issuer": "http://127.0.0.1:9000",
        "authorization_endpoint": "http://127.0.0.1:9000/auth",
        "token_endpoint": "http://127.0.0.1:9000/token",
        "userinfo_endpoint": "http://127.0.0.1:9000/me",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]
    });
    let up =
        Upstream::from_discovery(&s, "http://127.0.0.1:9000", &doc, Some("p@ss:w".into())).unwrap();
    let call = up.refresh_request("rt", "r");
    assert_eq!(
        call.form,
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), "rt".to_owned())
        ]
    );
    let basic = STANDARD.encode("cid:p%40ss%3Aw");
    assert!(
        call.headers
            .contains(&("authorization", format!("Basic {basic}")))
    );
    assert!(Upstream::from_discovery(&s, "http://127.0.0.1:9001", &doc, None).is_err());
    let up = Upstream::from_discovery(&s, "http://127.0.0.1:9000", &doc, None).unwrap();
    assert!(
        up.parse_tokens(
            400,
            br#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#
        )
        .unwrap_err()
        .is_invalid_grant()
    );
    assert!(up.parse_tokens(500, b"<html>").is_err());
    let t = up
        .parse_tokens(
            200,
            br#"{"access_token":"a","refresh_token":"r","expires_in":3600,"id_token":"x.y.z"}"#,
        )
        .unwrap();
    assert_eq!(t.refresh_token.as_deref(), Some("r"));
    assert!(t.expires_at.unwrap() >= now() + 3590);
}

#[test]
fn multi_tenant_entra_accepts_only_the_issuer_of_the_tokens_own_tenant() {
    let up = Upstream::preset(&spec("entra", ""), None).unwrap();
    let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let claims = |iss: &str, tid: Option<&str>| {
        let mut c = serde_json::json!({"iss": iss, "aud": "cid", "nonce": "n", "exp": now() + 300, "sub": "s1"});
        if let Some(t) = tid {
            c["tid"] = t.into();
        }
        id_token(c)
    };
    let good = format!("https://login.microsoftonline.com/{tid}/v2.0");
    let id = up
        .identity_from_id_token(&claims(&good, Some(tid)), "n")
        .unwrap();
    assert_eq!(id.tenant.as_deref(), Some(tid));
    for (iss, t) in [
        // Another tenant's issuer with this tid, and the reverse.
        ("https://login.microsoftonline.com/other/v2.0", Some(tid)),
        (good.as_str(), Some("other")),
        // Anything else under the old accepted prefix.
        ("https://login.microsoftonline.com/evil", Some("evil")),
        (good.as_str(), None),
    ] {
        assert!(
            up.identity_from_id_token(&claims(iss, t), "n").is_err(),
            "{iss} {t:?}"
        );
    }
}

#[test]
fn oidc_identity_reads_verified_email_groups_hd_and_tid() {
    let s = spec(
        "oidc",
        "    issuer: https://idp.example\n    access: {groups: [ops]}\n    scopeGrants: {}\n",
    );
    let doc = serde_json::json!({"issuer": "https://idp.example", "authorization_endpoint": "https://idp.example/a", "token_endpoint": "https://idp.example/t"});
    let up = Upstream::from_discovery(&s, "https://idp.example", &doc, None).unwrap();
    let id = up
        .parse_identity(br#"{"sub":"u","email":"a@x.test","email_verified":"true","groups":["ops","dev"],"hd":"x.test","tid":"t"}"#)
        .unwrap();
    assert!(id.email_verified);
    assert_eq!(id.groups, ["ops", "dev"]);
    assert_eq!(
        (id.hosted_domain.as_deref(), id.tenant.as_deref()),
        (Some("x.test"), Some("t"))
    );
    let id = up
        .parse_identity(br#"{"sub":"u","email":"a@x.test","groups":"ops"}"#)
        .unwrap();
    assert!(!id.email_verified, "absent email_verified is not verified");
    assert_eq!(id.groups, ["ops"]);
    let roles = spec(
        "oidc",
        "    issuer: https://idp.example\n    access: {groups: [ops], groupsClaim: roles}\n",
    );
    let up = Upstream::from_discovery(&roles, "https://idp.example", &doc, None).unwrap();
    let id = up
        .parse_identity(br#"{"sub":"u","groups":["x"],"roles":["ops"]}"#)
        .unwrap();
    assert_eq!(id.groups, ["ops"]);
}

#[test]
fn github_facts_parse_and_the_preset_asks_for_the_scopes_they_need() {
    let emails = br#"[{"email":"old@x.test","primary":false,"verified":true},{"email":"me@x.test","primary":true,"verified":true}]"#;
    assert_eq!(
        github_primary_email(emails).unwrap().as_deref(),
        Some("me@x.test")
    );
    let unverified = br#"[{"email":"me@x.test","primary":true,"verified":false}]"#;
    assert_eq!(github_primary_email(unverified).unwrap(), None);
    assert_eq!(
        github_orgs(br#"[{"login":"acme","id":1}]"#).unwrap(),
        ["acme"]
    );
    assert_eq!(
        github_teams(br#"[{"slug":"platform","name":"Platform","organization":{"login":"acme"}}]"#)
            .unwrap(),
        ["acme/platform"]
    );
    let up = Upstream::preset(
        &spec(
            "github",
            "    access: {orgs: [acme], emailDomains: [x.test]}\n",
        ),
        None,
    )
    .unwrap();
    assert_eq!(up.scopes, ["read:user", "read:org", "user:email"]);
    let call = up
        .github_request("/orgs?per_page=100&page=2", "gho")
        .unwrap();
    assert_eq!(
        call.url,
        "https://api.github.com/user/orgs?per_page=100&page=2"
    );
    assert!(
        call.headers
            .contains(&("authorization", "Bearer gho".into()))
    );
}
