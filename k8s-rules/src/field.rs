//! Field paths and violations, worded like the API server's `field.Error`s.

use std::fmt;

use serde_json::Value;

/// A path to a field: `spec.containers[1].ports[0].name`.
#[derive(Clone, Debug, Default)]
pub struct Path(String);

impl Path {
    /// The object itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// `self.name`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `self[i]`.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `self[key]`.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "<root>" } else { &self.0 })
    }
}

/// One rule an object breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field, e.g. `spec.containers[1].ports[1].name`.
    pub field: String,
    /// What is wrong, e.g. `Invalid value: "mcp-warden-admin": must be no more than 15
    /// characters`.
    pub detail: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// How the API server prints a bad value: strings quoted, everything else as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The violations found so far.
#[derive(Default)]
pub struct Errors(Vec<Violation>);

impl Errors {
    pub fn push(&mut self, v: Violation) {
        self.0.push(v);
    }

    /// `field: Invalid value: <value>: <detail>`.
    pub fn invalid(&mut self, path: &Path, value: &Value, detail: impl fmt::Display) {
        self.push(Violation::new(
            path.to_string(),
            format!("Invalid value: {}: {detail}", show(value)),
        ));
    }

    /// [`Errors::invalid`] with a string value.
    pub fn invalid_str(&mut self, path: &Path, value: &str, detail: impl fmt::Display) {
        self.invalid(path, &Value::String(value.to_owned()), detail);
    }

    /// `field: Required value[: detail]`.
    pub fn required(&mut self, path: &Path, detail: &str) {
        let text = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        self.push(Violation::new(path.to_string(), text));
    }

    /// `field: Duplicate value: <value>`.
    pub fn duplicate(&mut self, path: &Path, value: &str) {
        self.push(Violation::new(
            path.to_string(),
            format!("Duplicate value: {value:?}"),
        ));
    }

    /// `field: Not found: <value>`.
    pub fn not_found(&mut self, path: &Path, value: &str) {
        self.push(Violation::new(
            path.to_string(),
            format!("Not found: {value:?}"),
        ));
    }

    /// `field: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(&mut self, path: &Path, value: &Value, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(Violation::new(
            path.to_string(),
            format!(
                "Unsupported value: {}: supported values: {list}",
                show(value)
            ),
        ));
    }

    /// `field: Forbidden: <detail>`.
    pub fn forbidden(&mut self, path: &Path, detail: &str) {
        self.push(Violation::new(
            path.to_string(),
            format!("Forbidden: {detail}"),
        ));
    }

    /// `field: Too long: must have at most <n> bytes`.
    pub fn too_long(&mut self, path: &Path, max: usize) {
        self.push(Violation::new(
            path.to_string(),
            format!("Too long: must have at most {max} bytes"),
        ));
    }

    /// One `Invalid value` per message of a syntax check.
    pub fn each(&mut self, path: &Path, value: &str, messages: Vec<String>) {
        for m in messages {
            self.invalid_str(path, value, m);
        }
    }

    /// Checks an optional enum-like string field.
    pub fn one_of(&mut self, path: &Path, value: &Value, supported: &[&str]) {
        match value {
            Value::Null => {}
            Value::String(s) if supported.contains(&s.as_str()) => {}
            other => self.not_supported(path, other, supported),
        }
    }

    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}

/// The elements of an optional list.
pub fn items(value: &Value) -> impl Iterator<Item = (usize, &Value)> {
    value.as_array().into_iter().flatten().enumerate()
}

/// The entries of an optional map.
pub fn entries(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}
