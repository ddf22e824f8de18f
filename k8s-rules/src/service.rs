//! Services: ports and selectors.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::field::{Errors, Path, items};
use crate::{meta, syntax};

/// A Service `spec`.
pub fn service(spec: &Value, path: &Path, errs: &mut Errors) {
    meta::labels(&spec["selector"], &path.child("selector"), errs);
    let ports = spec["ports"].as_array().map(Vec::len).unwrap_or(0);
    let mut names = BTreeSet::new();
    for (i, p) in items(&spec["ports"]) {
        let at = path.child("ports").index(i);
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => {
                errs.each(&at.child("name"), name, syntax::dns_label(name));
                if !names.insert(name.to_owned()) {
                    errs.duplicate(&at.child("name"), name);
                }
            }
            None if ports > 1 => errs.required(&at.child("name"), ""),
            None => {}
        }
        for m in syntax::port_number(p["port"].as_i64().unwrap_or(0)) {
            errs.invalid(&at.child("port"), &p["port"], m);
        }
        errs.one_of(
            &at.child("protocol"),
            &p["protocol"],
            &["TCP", "UDP", "SCTP"],
        );
        match &p["targetPort"] {
            Value::Null => {}
            Value::Number(n) => {
                for m in syntax::port_number(n.as_i64().unwrap_or(0)) {
                    errs.invalid(&at.child("targetPort"), &p["targetPort"], m);
                }
            }
            Value::String(name) => {
                errs.each(&at.child("targetPort"), name, syntax::port_name(name))
            }
            other => errs.invalid(
                &at.child("targetPort"),
                other,
                "must be a port number or name",
            ),
        }
    }
}
