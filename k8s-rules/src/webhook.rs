//! Mutating and validating webhook configurations (`admissionregistration.k8s.io/v1`).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::field::{Errors, Path, items};
use crate::{meta, syntax};

/// A `MutatingWebhookConfiguration` (`mutating`) or `ValidatingWebhookConfiguration`.
pub fn configuration(object: &Value, mutating: bool, errs: &mut Errors) {
    let mut names = BTreeSet::new();
    for (i, hook) in items(&object["webhooks"]) {
        let at = Path::root().child("webhooks").index(i);
        let name = hook["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.required(&at.child("name"), "");
        } else {
            let msgs = syntax::dns_subdomain(name);
            if msgs.is_empty() && name.split('.').count() < 3 {
                errs.invalid_str(
                    &at.child("name"),
                    name,
                    "should be a domain with at least three segments separated by dots",
                );
            }
            errs.each(&at.child("name"), name, msgs);
            if !names.insert(name.to_owned()) {
                errs.duplicate(&at.child("name"), name);
            }
        }
        client_config(&hook["clientConfig"], &at.child("clientConfig"), errs);
        match hook["timeoutSeconds"].as_i64() {
            None => {}
            Some(1..=30) => {}
            Some(_) => errs.invalid(
                &at.child("timeoutSeconds"),
                &hook["timeoutSeconds"],
                "the timeout value must be between 1 and 30 seconds",
            ),
        }
        let side_effects = &hook["sideEffects"];
        if side_effects.is_null() {
            errs.required(
                &at.child("sideEffects"),
                "must specify one of None, NoneOnDryRun",
            );
        } else {
            errs.one_of(
                &at.child("sideEffects"),
                side_effects,
                &["None", "NoneOnDryRun"],
            );
        }
        let versions: Vec<&str> = items(&hook["admissionReviewVersions"])
            .filter_map(|(_, v)| v.as_str())
            .collect();
        if versions.is_empty() {
            errs.required(
                &at.child("admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            );
        } else if !versions.contains(&"v1") {
            errs.invalid(
                &at.child("admissionReviewVersions"),
                &hook["admissionReviewVersions"],
                "must include v1",
            );
        }
        errs.one_of(
            &at.child("failurePolicy"),
            &hook["failurePolicy"],
            &["Ignore", "Fail"],
        );
        errs.one_of(
            &at.child("matchPolicy"),
            &hook["matchPolicy"],
            &["Exact", "Equivalent"],
        );
        if mutating {
            errs.one_of(
                &at.child("reinvocationPolicy"),
                &hook["reinvocationPolicy"],
                &["Never", "IfNeeded"],
            );
        } else if !hook["reinvocationPolicy"].is_null() {
            errs.forbidden(
                &at.child("reinvocationPolicy"),
                "only for mutating webhooks",
            );
        }
        for selector in ["namespaceSelector", "objectSelector"] {
            if !hook[selector].is_null() {
                meta::label_selector(&hook[selector], &at.child(selector), errs);
            }
        }
        for (j, rule) in items(&hook["rules"]) {
            let rule_at = at.child("rules").index(j);
            for (k, op) in items(&rule["operations"]) {
                errs.one_of(
                    &rule_at.child("operations").index(k),
                    op,
                    &["*", "CREATE", "UPDATE", "DELETE", "CONNECT"],
                );
            }
            errs.one_of(
                &rule_at.child("scope"),
                &rule["scope"],
                &["*", "Cluster", "Namespaced"],
            );
            for list in ["apiGroups", "apiVersions", "resources"] {
                if rule[list].as_array().is_none_or(Vec::is_empty) {
                    errs.required(&rule_at.child(list), "");
                }
            }
        }
    }
}

fn client_config(config: &Value, path: &Path, errs: &mut Errors) {
    let url = config["url"].as_str();
    let service = &config["service"];
    match (url, service.is_null()) {
        (Some(_), false) | (None, true) => {
            errs.required(path, "exactly one of url or service is required");
        }
        (Some(raw), true) => webhook_url(raw, &path.child("url"), errs),
        (None, false) => {
            let at = path.child("service");
            for field in ["namespace", "name"] {
                match service[field].as_str() {
                    None | Some("") => errs.required(&at.child(field), ""),
                    Some(v) => errs.each(&at.child(field), v, syntax::dns_label(v)),
                }
            }
            if let Some(p) = service["path"].as_str()
                && !p.starts_with('/')
            {
                errs.invalid_str(&at.child("path"), p, "must start with a '/'");
            }
            if let Some(port) = service["port"].as_i64() {
                for m in syntax::port_number(port) {
                    errs.invalid(&at.child("port"), &service["port"], m);
                }
            }
        }
    }
}

fn webhook_url(raw: &str, path: &Path, errs: &mut Errors) {
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return errs.invalid_str(path, raw, format!("url must be a valid URL: {e}")),
    };
    if url.scheme() != "https" {
        errs.invalid_str(path, raw, "'https' is the only allowed URL scheme");
    }
    if url.host_str().is_none_or(str::is_empty) {
        errs.invalid_str(path, raw, "host must be specified");
    }
    if !url.username().is_empty() || url.password().is_some() {
        errs.invalid_str(path, raw, "user information is not permitted in the URL");
    }
    if url.fragment().is_some() {
        errs.invalid_str(path, raw, "fragments are not permitted in the URL");
    }
    if url.query().is_some() {
        errs.invalid_str(path, raw, "query parameters are not permitted in the URL");
    }
}
