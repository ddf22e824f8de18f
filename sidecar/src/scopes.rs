//! Scope sets and how a granted scope satisfies a required one.
//!
//! Scopes form a hierarchy on `:`: a granted `mcp` covers `mcp:tools`, and `mcp:tools` covers
//! `mcp:tools:read`, so a broad grant never needs every narrow scope spelled out. Nothing else is
//! implied: `mcp:tools` does not cover `mcp:toolsadmin` or `mcp`.

use std::collections::BTreeSet;

use serde_json::Value;

/// The scopes a token grants, from its `scope` and `scp` claims (string or array).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted(BTreeSet<String>);

impl Granted {
    /// Collects the scopes of a claims object.
    pub fn from_claims(claims: &serde_json::Map<String, Value>) -> Self {
        let mut set = BTreeSet::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(s)) => set.extend(s.split_ascii_whitespace().map(str::to_owned)),
                Some(Value::Array(items)) => {
                    for item in items.iter().filter_map(Value::as_str) {
                        set.extend(item.split_ascii_whitespace().map(str::to_owned));
                    }
                }
                _ => {}
            }
        }
        Granted(set)
    }

    /// True when some granted scope covers `required`.
    pub fn covers(&self, required: &str) -> bool {
        self.0.iter().any(|g| {
            required == g
                || (required.len() > g.len()
                    && required.starts_with(g.as_str())
                    && required.as_bytes()[g.len()] == b':')
        })
    }

    /// True when every required scope is covered.
    pub fn covers_all<'a>(&self, mut required: impl Iterator<Item = &'a String>) -> bool {
        required.all(|r| self.covers(r))
    }

    /// The granted scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// Joins scopes with single spaces, without duplicates, keeping first-seen order.
pub fn join<'a>(scopes: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for s in scopes {
        if seen.insert(s) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn granted(v: Value) -> Granted {
        Granted::from_claims(v.as_object().unwrap())
    }

    #[test]
    fn reads_scope_and_scp_as_string_or_array() {
        let g = granted(json!({"scope": "a b", "scp": ["c", "d e"]}));
        assert_eq!(g.iter().collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        assert_eq!(granted(json!({"scope": 5})), Granted::default());
    }

    #[test]
    fn broad_scopes_cover_narrow_ones_only_on_colon_boundaries() {
        let g = granted(json!({"scope": "mcp:tools"}));
        assert!(g.covers("mcp:tools"));
        assert!(g.covers("mcp:tools:read"));
        assert!(!g.covers("mcp"));
        assert!(!g.covers("mcp:toolsadmin"));
        assert!(!g.covers("mcp:admin"));
        let required = ["mcp:tools:call".to_string(), "mcp:admin".to_string()];
        assert!(!g.covers_all(required.iter()));
        assert!(g.covers_all(required[..1].iter()));
        assert!(g.covers_all([].iter()));
    }

    #[test]
    fn join_deduplicates_in_order() {
        assert_eq!(join(["b", "a", "b"]), "b a");
        assert_eq!(join([]), "");
    }
}
