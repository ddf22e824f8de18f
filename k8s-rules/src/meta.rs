//! `metadata`: object names, labels, annotations; label selectors.

use serde_json::Value;

use crate::field::{Errors, Path, entries, items};
use crate::syntax;

/// The total size of one object's annotation keys and values.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Which syntax an object's name follows.
#[derive(Clone, Copy)]
pub enum NameRule {
    /// RFC 1123 label (Namespace, Service).
    Label,
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// Path segment (RBAC).
    Path,
}

/// `metadata` of a top-level object.
pub fn object_meta(meta: &Value, rule: NameRule, path: &Path, errs: &mut Errors) {
    match (meta["name"].as_str(), meta["generateName"].as_str()) {
        (Some(name), _) => {
            let msgs = match rule {
                NameRule::Label => syntax::dns_label(name),
                NameRule::Subdomain => syntax::dns_subdomain(name),
                NameRule::Path => syntax::path_segment(name),
            };
            errs.each(&path.child("name"), name, msgs);
        }
        (None, Some(_)) => {}
        (None, None) => errs.required(&path.child("name"), "name or generateName is required"),
    }
    if let Some(ns) = meta["namespace"].as_str() {
        errs.each(&path.child("namespace"), ns, syntax::dns_label(ns));
    }
    labels_and_annotations(meta, path, errs);
}

/// Labels and annotations of any metadata (objects and pod templates).
pub fn labels_and_annotations(meta: &Value, path: &Path, errs: &mut Errors) {
    labels(&meta["labels"], &path.child("labels"), errs);
    let annotations = path.child("annotations");
    let mut total = 0;
    for (key, value) in entries(&meta["annotations"]) {
        errs.each(
            &annotations,
            key,
            syntax::qualified_name(&key.to_lowercase()),
        );
        match value.as_str() {
            Some(v) => total += key.len() + v.len(),
            None => errs.invalid(&annotations.key(key), value, "must be a string"),
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.too_long(&annotations, ANNOTATIONS_MAX_BYTES);
    }
}

/// A label map (`metadata.labels`, `matchLabels`, Service selectors).
pub fn labels(map: &Value, path: &Path, errs: &mut Errors) {
    for (key, value) in entries(map) {
        errs.each(path, key, syntax::qualified_name(key));
        match value.as_str() {
            Some(v) => errs.each(&path.key(key), v, syntax::label_value(v)),
            None => errs.invalid(&path.key(key), value, "must be a string"),
        }
    }
}

/// A `metav1.LabelSelector`.
pub fn label_selector(selector: &Value, path: &Path, errs: &mut Errors) {
    labels(&selector["matchLabels"], &path.child("matchLabels"), errs);
    for (i, expr) in items(&selector["matchExpressions"]) {
        let at = path.child("matchExpressions").index(i);
        let key = expr["key"].as_str().unwrap_or_default();
        errs.each(&at.child("key"), key, syntax::qualified_name(key));
        let values = expr["values"].as_array().map(Vec::len).unwrap_or(0);
        match expr["operator"].as_str() {
            Some("In" | "NotIn") if values == 0 => errs.required(
                &at.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            Some("Exists" | "DoesNotExist") if values > 0 => errs.forbidden(
                &at.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist") => {}
            _ => errs.not_supported(
                &at.child("operator"),
                &expr["operator"],
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
        for (j, v) in items(&expr["values"]) {
            let text = v.as_str().unwrap_or_default();
            errs.each(
                &at.child("values").index(j),
                text,
                syntax::label_value(text),
            );
        }
    }
}
