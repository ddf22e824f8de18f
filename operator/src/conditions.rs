//! Status conditions in the `metav1.Condition` shape.

use mcp_warden_policy::PolicyCondition;

/// Condition types the operator writes.
pub mod types {
    /// The policy is usable: config rendered and nothing known broken.
    pub const READY: &str = "Ready";
    /// Discovery and JWKS of the issuer answered.
    pub const ISSUER_REACHABLE: &str = "IssuerReachable";
    /// The sidecar configuration ConfigMap is up to date.
    pub const CONFIG_RENDERED: &str = "ConfigRendered";
}

/// A condition as computed now (the transition time is settled by [`merge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Type.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// PascalCase reason.
    pub reason: String,
    /// Detail.
    pub message: String,
}

impl Observed {
    /// A condition with status `True`.
    pub fn yes(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, "True", reason, message)
    }

    /// A condition with status `False`.
    pub fn no(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, "False", reason, message)
    }

    /// A condition with status `Unknown`.
    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, "Unknown", reason, message)
    }

    fn new(
        type_: &'static str,
        status: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The new condition list: `lastTransitionTime` is kept when a condition's status did not
/// change, set to `now` otherwise. Returns the list and the conditions whose status changed.
pub fn merge(
    old: &[PolicyCondition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &str,
) -> (Vec<PolicyCondition>, Vec<Observed>) {
    let mut changed = Vec::new();
    let conditions = observed
        .iter()
        .map(|o| {
            let prev = old.iter().find(|c| c.type_ == o.type_);
            let same = prev.is_some_and(|c| c.status == o.status);
            if !same || prev.is_some_and(|c| c.reason != o.reason) {
                changed.push(o.clone());
            }
            PolicyCondition {
                type_: o.type_.to_owned(),
                status: o.status.to_owned(),
                reason: o.reason.clone(),
                message: o.message.clone(),
                last_transition_time: match prev {
                    Some(c) if same => c.last_transition_time.clone(),
                    _ => now.to_owned(),
                },
                observed_generation: generation,
            }
        })
        .collect();
    (conditions, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let first = [Observed::yes(types::READY, "Ready", "ok")];
        let (c1, changed) = merge(&[], &first, Some(1), "t1");
        assert_eq!(changed.len(), 1);
        assert_eq!(c1[0].last_transition_time, "t1");
        let (c2, changed) = merge(&c1, &first, Some(2), "t2");
        assert!(changed.is_empty());
        assert_eq!(c2[0].last_transition_time, "t1");
        assert_eq!(c2[0].observed_generation, Some(2));
        let down = [Observed::no(types::READY, "IssuerUnreachable", "down")];
        let (c3, changed) = merge(&c2, &down, Some(2), "t3");
        assert_eq!(changed.len(), 1);
        assert_eq!(
            (c3[0].status.as_str(), c3[0].last_transition_time.as_str()),
            ("False", "t3")
        );
    }
}
