//! Per-method and per-tool scope rules, checked against the JSON-RPC messages in a request body.

use mcp_warden_policy::ScopeRule;

use crate::rpc::{self, BodyError};

/// Largest POST body inspected when rules are configured.
pub const MAX_RPC_BODY: usize = 4 * 1024 * 1024;

/// The policy's scope rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<ScopeRule>,
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Rules {
    /// From the policy's `rules`.
    pub fn new(rules: &[ScopeRule]) -> Self {
        Rules {
            rules: rules.to_vec(),
        }
    }

    /// True when no rule is configured (bodies are then never inspected).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn matches(rule: &ScopeRule, method: &str, tool: Option<&str>) -> bool {
        let method_ok = rule.method == "*" || rule.method == method;
        let tool_ok =
            rule.tools.is_empty() || tool.is_some_and(|t| rule.tools.iter().any(|p| glob(p, t)));
        method_ok && tool_ok
    }

    /// The scopes the messages in `body` need, in rule order, without duplicates. Bodies that
    /// are not JSON-RPC, or that parsers could read differently, are refused (see [`rpc`]).
    pub fn required_for(&self, body: &[u8]) -> Result<Vec<String>, BodyError> {
        Ok(self.required_by(&rpc::scan(body)?))
    }

    /// The scopes `messages` (one scanned body) need, in rule order, without duplicates.
    pub fn required_by(&self, messages: &[rpc::Message]) -> Vec<String> {
        let mut needed: Vec<String> = Vec::new();
        for message in messages {
            // Responses and notifications without a method need nothing extra.
            let Some(method) = message.method.as_deref() else {
                continue;
            };
            let tool = message.tool.as_deref();
            for rule in self.rules.iter().filter(|r| Self::matches(r, method, tool)) {
                for scope in &rule.scopes {
                    if !needed.contains(scope) {
                        needed.push(scope.clone());
                    }
                }
            }
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&[
            ScopeRule {
                method: "tools/call".into(),
                tools: vec!["delete_*".into()],
                scopes: vec!["mcp:admin".into()],
            },
            ScopeRule {
                method: "tools/call".into(),
                tools: vec![],
                scopes: vec!["mcp:tools".into()],
            },
            ScopeRule {
                method: "*".into(),
                tools: vec![],
                scopes: vec!["mcp".into()],
            },
        ])
    }

    #[test]
    fn globs() {
        assert!(glob("delete_*", "delete_repo"));
        assert!(glob("*_repo", "delete_repo"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(!glob("delete_*", "undelete_repo"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn tool_calls_collect_matching_rules() {
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}"#;
        assert_eq!(
            rules().required_for(body).unwrap(),
            ["mcp:admin", "mcp:tools", "mcp"]
        );
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert_eq!(rules().required_for(body).unwrap(), ["mcp:tools", "mcp"]);
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"result":{}}]"#;
        assert_eq!(rules().required_for(body).unwrap(), ["mcp"]);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(rules().required_for(b"not json").is_err());
        assert!(rules().required_for(b"[]").is_err());
        assert!(rules().required_for(b"[1]").is_err());
        assert!(rules().required_for(br#"{"method":5}"#).is_err());
    }

    #[test]
    fn ambiguous_tool_names_are_refused() {
        for body in [
            r#"{"method":"tools/call","params":{"name":"echo","NAME":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"name":"echo","name":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"name":"echo"},"Params":{"name":"delete_repo"}}"#,
            r#"{"method":"ping","Method":"tools/call","params":{"name":"delete_repo"}}"#,
        ] {
            assert!(
                matches!(
                    rules().required_for(body.as_bytes()),
                    Err(BodyError::Invalid(_))
                ),
                "{body}"
            );
        }
    }
}
