//! Server-rendered pages (consent, errors) and the cookies that bind a browser to its flow.
//!
//! Pages can't be framed (`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`), load nothing
//! external and are never cached. Cookies are `__Host-` prefixed, `Secure`, `HttpOnly`,
//! `SameSite=Lax` and HMAC-signed. Browsers drop `Secure` cookies on plain-http origins, so when
//! the issuer is plain http (loopback development only — validation refuses other http
//! resources) the prefix and `Secure` are left off; the signature and every other attribute stay.

use http::{HeaderMap, HeaderValue, header};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}\
h1{font-size:1.4rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}dd{margin:0;word-break:break-all}\
.actions{display:flex;gap:1rem;margin-top:2rem}button{font-size:1rem;padding:.6rem 1.4rem;border-radius:.4rem;border:2px solid #1a1a1a;cursor:pointer}\
button[value=approve]{background:#1a1a1a;color:#fff}button:focus{outline:3px solid #0a66c2;outline-offset:2px}.note{color:#444;font-size:.9rem}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// What the consent page shows.
pub struct ConsentView<'a> {
    /// The MCP server's name (or URL).
    pub server: &'a str,
    /// The client's self-declared name.
    pub client_name: Option<&'a str>,
    /// The client id (a URL for metadata-document clients).
    pub client_id: &'a str,
    /// Host (or scheme) the answer will be sent to.
    pub redirect_host: &'a str,
    /// The signed-in user (verified email, login or subject).
    pub signed_in_as: &'a str,
    /// The scopes this user is granted.
    pub scopes: &'a [String],
    /// Flow id (hidden field).
    pub tx: &'a str,
    /// CSRF token (hidden field).
    pub csrf: &'a str,
}

/// The consent form: approve or deny, posted to `/consent`.
pub fn consent_page(v: &ConsentView<'_>) -> String {
    let name = v.client_name.unwrap_or("An unnamed application");
    let scopes = if v.scopes.is_empty() {
        "<dd>basic access</dd>".to_owned()
    } else {
        v.scopes
            .iter()
            .map(|s| format!("<dd><code>{}</code></dd>", escape(s)))
            .collect::<Vec<_>>()
            .join("")
    };
    let body = format!(
        "<h1>Allow {name} to use {server}?</h1>\
<p>An application is asking to act on your behalf with <strong>{server}</strong>. Approve only if you started this and recognise where it sends you back.</p>\
<dl><dt>Application</dt><dd>{name} <span class=\"note\">(name chosen by the application)</span></dd>\
<dt>Client ID</dt><dd><code>{client_id}</code></dd>\
<dt>Returns to</dt><dd><strong>{host}</strong></dd>\
<dt>Signed in as</dt><dd>{user}</dd>\
<dt>Access</dt>{scopes}</dl>\
<form method=\"post\" action=\"/consent\">\
<input type=\"hidden\" name=\"tx\" value=\"{tx}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form>\
<p class=\"note\">Not you? Deny, sign out at your identity provider and start again.</p>",
        name = escape(name),
        server = escape(v.server),
        client_id = escape(v.client_id),
        host = escape(v.redirect_host),
        user = escape(v.signed_in_as),
        tx = escape(v.tx),
        csrf = escape(v.csrf),
    );
    layout("Authorize access", &body)
}

/// The refusal shown when the signed-in user may not use the server; the link hands the client
/// its `access_denied` answer.
pub fn denied_page(server: &str, user: &str, back_url: &str, back_host: &str) -> String {
    let body = format!(
        "<h1>Access denied</h1>\
<p>You are signed in as <strong>{user}</strong>, and this account is not allowed to use <strong>{server}</strong>. \
If you think it should be, ask the server's administrators; or sign out at your identity provider and sign in with another account.</p>\
<p><a href=\"{back}\">Return to the application</a> <span class=\"note\">({host})</span></p>",
        user = escape(user),
        server = escape(server),
        back = escape(back_url),
        host = escape(back_host),
    );
    layout("Access denied", &body)
}

/// A plain error page.
pub fn error_page(message: &str) -> String {
    layout(
        "Authorization failed",
        &format!("<h1>Authorization failed</h1><p>{}</p>", escape(message)),
    )
}

/// Headers every page carries.
pub fn protect(headers: &mut HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Cookie naming and attributes for one issuer.
#[derive(Clone, Debug)]
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    /// `secure` when the issuer is https.
    pub fn new(secure: bool) -> Self {
        Cookies { secure }
    }

    /// The full cookie name for `base`.
    pub fn name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// A `Set-Cookie` value.
    pub fn set(&self, base: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            self.name(base)
        );
        HeaderValue::from_str(&v).expect("cookie values are base64url")
    }

    /// The value of cookie `base` in the request, if sent.
    pub fn get<'a>(&self, headers: &'a HeaderMap, base: &str) -> Option<&'a str> {
        let name = self.name(base);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_page_escapes_client_supplied_text() {
        let scopes = vec!["mcp:tools".to_owned()];
        let html = consent_page(&ConsentView {
            server: "Tools",
            client_name: Some("<script>alert(1)</script>"),
            client_id: "https://x.example/\"><img>",
            redirect_host: "localhost",
            signed_in_as: "<i>ann</i>",
            scopes: &scopes,
            tx: "t1",
            csrf: "c1",
        });
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("\"><img>"));
        assert!(html.contains("name=\"csrf\" value=\"c1\""));
        assert!(html.contains("<strong>localhost</strong>"));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("<code>mcp:tools</code>"));
        assert!(html.contains("&lt;i&gt;ann&lt;/i&gt;"));
    }

    #[test]
    fn denied_page_escapes_and_links_back() {
        let html = denied_page(
            "Tools",
            "<b>eve</b>",
            "http://127.0.0.1:5/cb?error=access_denied&state=\"x",
            "127.0.0.1",
        );
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;") && !html.contains("<b>eve"));
        assert!(
            html.contains("href=\"http://127.0.0.1:5/cb?error=access_denied&amp;state=&quot;x\"")
        );
    }

    #[test]
    fn cookies_use_host_prefix_only_on_https() {
        let https = Cookies::new(true);
        let v = https.set("mcpw-tx", "abc", 600);
        assert_eq!(
            v,
            "__Host-mcpw-tx=abc; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        );
        let http = Cookies::new(false);
        assert_eq!(
            http.set("mcpw-tx", "abc", 600),
            "mcpw-tx=abc; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-mcpw-tx=xyz; mcpw-tx=plain"),
        );
        assert_eq!(https.get(&h, "mcpw-tx"), Some("xyz"));
        assert_eq!(http.get(&h, "mcpw-tx"), Some("plain"));
    }
}
