//! The HTTP side of `doctor`: plain requests without redirects, bounded bodies, and the
//! `WWW-Authenticate` parser.

use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::Value;

/// Largest body `doctor` reads from any endpoint.
const MAX_BODY: usize = 1 << 20;

/// A client that behaves like a careful MCP client: no redirects, a timeout per request.
pub fn client(timeout: Duration) -> reqwest::Result<Client> {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("mcp-warden-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What a GET for a JSON document found.
pub enum Fetched {
    /// 200 with a JSON object.
    Json(Value),
    /// Any other status (and the first bytes of the body, for the message).
    Status(u16),
    /// 200 whose body is not a JSON object.
    NotJson,
    /// No HTTP answer at all.
    Unreachable(String),
}

/// GET `url` expecting a JSON object.
pub async fn get_json(client: &Client, url: &str) -> Fetched {
    let response = match client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Fetched::Unreachable(error_text(&e)),
    };
    if response.status() != 200 {
        return Fetched::Status(response.status().as_u16());
    }
    match read_body(response).await {
        Ok(body) => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => Fetched::Json(v),
            _ => Fetched::NotJson,
        },
        Err(e) => Fetched::Unreachable(e),
    }
}

/// Sends a request and returns the response (or the transport error as text).
pub async fn send(
    client: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Response, String> {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.map_err(|e| error_text(&e))
}

/// Reads at most [`MAX_BODY`] bytes of a body.
pub async fn read_body(mut response: Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_text(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(format!("body larger than {MAX_BODY} bytes"));
        }
    }
    Ok(body)
}

/// The first JSON-RPC message of a body that is either JSON or a `text/event-stream`; stops
/// reading an event stream at the first message (servers may keep it open).
pub async fn first_rpc_message(mut response: Response) -> Result<Value, String> {
    let sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        let body = read_body(response).await?;
        return serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"));
    }
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_text(&e))? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        for line in buffer.lines() {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                && (v.get("result").is_some() || v.get("error").is_some())
            {
                return Ok(v);
            }
        }
        if buffer.len() > MAX_BODY {
            break;
        }
    }
    Err("the event stream ended without a JSON-RPC response".into())
}

fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The auth-params of the first `Bearer` challenge in a `WWW-Authenticate` value, names
/// lower-cased; `None` when there is no Bearer challenge.
pub fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let trimmed = header.trim_start();
    let scheme_end = trimmed.find(' ').unwrap_or(trimmed.len());
    if !trimmed[..scheme_end].eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = trimmed[scheme_end..].trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            out.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        params.push((name, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::bearer_params;

    #[test]
    fn parses_quoted_and_bare_params() {
        let p = bearer_params(
            r#"Bearer resource_metadata="https://a/.well-known/x", scope="a b", error=invalid_token"#,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                ("resource_metadata".into(), "https://a/.well-known/x".into()),
                ("scope".into(), "a b".into()),
                ("error".into(), "invalid_token".into()),
            ]
        );
        assert_eq!(
            bearer_params(r#"bearer realm="x\"y""#).unwrap(),
            [("realm".to_string(), "x\"y".to_string())]
        );
        assert!(bearer_params("Basic realm=x").is_none());
        assert_eq!(bearer_params("Bearer").unwrap(), []);
    }
}
