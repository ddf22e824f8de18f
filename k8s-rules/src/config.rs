//! ConfigMap and Secret data: keys and the 1 MiB size limit.

use std::collections::BTreeSet;

use base64::Engine;
use serde_json::Value;

use crate::field::{Errors, Path, entries};
use crate::syntax;

/// The most data one ConfigMap or Secret may hold.
pub const DATA_MAX_BYTES: usize = 1024 * 1024;

/// A ConfigMap: `data` and `binaryData` keys, unique across both, at most 1 MiB in total.
pub fn config_map(object: &Value, errs: &mut Errors) {
    let mut keys = BTreeSet::new();
    let mut total = 0;
    for field in ["data", "binaryData"] {
        let at = Path::root().child(field);
        for (key, value) in entries(&object[field]) {
            errs.each(&at.key(key), key, syntax::config_key(key));
            if !keys.insert(key.clone()) {
                errs.duplicate(&at.key(key), key);
            }
            total += key.len();
            match (field, value.as_str()) {
                ("data", Some(v)) => total += v.len(),
                ("binaryData", Some(v)) => total += decoded_len(v, &at.key(key), errs),
                _ => errs.invalid(&at.key(key), value, "must be a string"),
            }
        }
    }
    if total > DATA_MAX_BYTES {
        errs.too_long(&Path::root(), DATA_MAX_BYTES);
    }
}

/// A Secret: `data` (base64) and `stringData` keys, at most 1 MiB of data.
pub fn secret(object: &Value, errs: &mut Errors) {
    let mut total = 0;
    for field in ["data", "stringData"] {
        let at = Path::root().child(field);
        for (key, value) in entries(&object[field]) {
            errs.each(&at.key(key), key, syntax::config_key(key));
            total += key.len();
            match (field, value.as_str()) {
                ("data", Some(v)) => total += decoded_len(v, &at.key(key), errs),
                ("stringData", Some(v)) => total += v.len(),
                _ => errs.invalid(&at.key(key), value, "must be a string"),
            }
        }
    }
    if total > DATA_MAX_BYTES {
        errs.too_long(&Path::root().child("data"), DATA_MAX_BYTES);
    }
}

fn decoded_len(encoded: &str, path: &Path, errs: &mut Errors) -> usize {
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(bytes) => bytes.len(),
        Err(e) => {
            errs.invalid_str(path, "<data>", format!("must be base64: {e}"));
            0
        }
    }
}
