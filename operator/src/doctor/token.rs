//! Reading (never trusting) the claims of an access token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The claims `doctor` compares with the metadata.
#[derive(Debug, Default)]
pub struct Claims {
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud`, a string or an array.
    pub audiences: Vec<String>,
    /// `exp` (seconds since the epoch).
    pub expires: Option<i64>,
    /// `scope` (space-separated) or `scp` (string or array).
    pub scopes: Vec<String>,
}

/// The payload of a compact JWS, or `None` for a token that is not one (opaque tokens).
pub fn decode(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let v = v.as_object()?;
    let strings = |value: Option<&Value>, split: bool| -> Vec<String> {
        match value {
            Some(Value::String(s)) if split => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut scopes = strings(v.get("scope"), true);
    if scopes.is_empty() {
        scopes = strings(v.get("scp"), true);
    }
    Some(Claims {
        issuer: v.get("iss").and_then(Value::as_str).map(str::to_owned),
        audiences: strings(v.get("aud"), false),
        expires: v.get("exp").and_then(Value::as_i64),
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn reads_string_and_array_claims() {
        let c = decode(&jwt(
            r#"{"iss":"https://i","aud":["a","b"],"exp":5,"scope":"x y"}"#,
        ))
        .unwrap();
        assert_eq!(c.issuer.as_deref(), Some("https://i"));
        assert_eq!(c.audiences, ["a", "b"]);
        assert_eq!(c.expires, Some(5));
        assert_eq!(c.scopes, ["x", "y"]);
        let c = decode(&jwt(r#"{"aud":"a","scp":["s"]}"#)).unwrap();
        assert_eq!(
            (c.audiences, c.scopes),
            (vec!["a".into()], vec!["s".into()])
        );
    }

    #[test]
    fn opaque_tokens_are_not_decoded() {
        assert!(decode("opaque-token-value").is_none());
        assert!(decode("a.b.c.d").is_none());
        assert!(decode("a.!!.c").is_none());
    }
}
