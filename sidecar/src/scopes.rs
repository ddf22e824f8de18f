//! Scope sets and how a granted scope satisfies a required one.
//!
//! Scopes form a hierarchy on `:`: a granted `mcp` covers `mcp:tools`, and `mcp:tools` covers
//! `mcp:tools:read`, so a broad grant never needs every narrow scope spelled out. Nothing else is
//! implied: `mcp:tools` does not cover `mcp:toolsadmin` or `mcp`.

use std::collections::BTreeSet;

/// The scopes a token grants, from its `scope` and `scp` claims (string or array).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted(
    /// The scopes sorted, each once, separated by single spaces: one allocation per token.
    String,
);

impl Granted {
    /// Collects the scopes `each` lists: it calls its argument with each scope in the token's
    /// order, repeats included, until that answers false, and returns false if it did.
    pub fn collect<'a>(each: impl Fn(&mut dyn FnMut(&'a str) -> bool) -> bool) -> Self {
        // Usually the scopes come sorted and unique already, and are copied as they are read.
        let mut text = String::new();
        let mut last = "";
        let sorted = each(&mut |scope| {
            if !text.is_empty() {
                if scope <= last {
                    return false;
                }
                text.push(' ');
            }
            text.push_str(scope);
            last = scope;
            true
        });
        if sorted {
            return Granted(text);
        }
        let mut all = Vec::new();
        each(&mut |scope| {
            all.push(scope);
            true
        });
        all.sort_unstable();
        all.dedup();
        Granted(all.join(" "))
    }

    /// True when some granted scope covers `required`.
    pub fn covers(&self, required: &str) -> bool {
        self.iter().any(|g| {
            required == g
                || (required.len() > g.len()
                    && required.starts_with(g)
                    && required.as_bytes()[g.len()] == b':')
        })
    }

    /// True when every required scope is covered.
    pub fn covers_all<'a>(&self, mut required: impl Iterator<Item = &'a String>) -> bool {
        required.all(|r| self.covers(r))
    }

    /// The granted scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split_ascii_whitespace()
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

    fn granted(v: serde_json::Value) -> Granted {
        crate::verify::Claims::from(v.as_object().unwrap().clone()).granted()
    }

    #[test]
    fn reads_scope_and_scp_as_string_or_array() {
        let g = granted(json!({"scope": "a b", "scp": ["c", "d e"]}));
        assert_eq!(g.iter().collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        assert_eq!(granted(json!({"scope": 5})), Granted::default());
        assert_eq!(
            granted(json!({"scope": " ", "scp": [7, ""]})),
            Granted::default()
        );
    }

    #[test]
    fn keeps_each_scope_once_in_order() {
        let g = granted(json!({"scope": "b  a\tb", "scp": ["a", "c", 1, "a:x b"]}));
        assert_eq!(g.iter().collect::<Vec<_>>(), ["a", "a:x", "b", "c"]);
        assert_eq!(g, granted(json!({"scp": "a:x c b a"})));
        let sorted = granted(json!({"scope": "a b", "scp": "c"}));
        assert_eq!(sorted.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(granted(json!({"scope": "a a"})).iter().count(), 1);
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
