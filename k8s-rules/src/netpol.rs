//! NetworkPolicies: selectors, peers and ports.

use serde_json::Value;

use crate::field::{Errors, Path, items};
use crate::{meta, syntax};

/// A NetworkPolicy `spec`.
pub fn network_policy(spec: &Value, path: &Path, errs: &mut Errors) {
    let selector = &spec["podSelector"];
    if selector.is_null() {
        errs.required(&path.child("podSelector"), "");
    }
    meta::label_selector(selector, &path.child("podSelector"), errs);
    for (i, t) in items(&spec["policyTypes"]) {
        errs.one_of(
            &path.child("policyTypes").index(i),
            t,
            &["Ingress", "Egress"],
        );
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(&spec[direction]) {
            let at = path.child(direction).index(i);
            for (j, port) in items(&rule["ports"]) {
                policy_port(port, &at.child("ports").index(j), errs);
            }
            for (j, peer) in items(&rule[peers]) {
                policy_peer(peer, &at.child(peers).index(j), errs);
            }
        }
    }
}

fn policy_port(port: &Value, path: &Path, errs: &mut Errors) {
    errs.one_of(
        &path.child("protocol"),
        &port["protocol"],
        &["TCP", "UDP", "SCTP"],
    );
    let end = &port["endPort"];
    match &port["port"] {
        Value::Null => {
            if !end.is_null() {
                errs.required(
                    &path.child("port"),
                    "must be specified when endPort is specified",
                );
            }
        }
        Value::Number(n) => {
            let start = n.as_i64().unwrap_or(0);
            for m in syntax::port_number(start) {
                errs.invalid(&path.child("port"), &port["port"], m);
            }
            if let Some(e) = end.as_i64()
                && (e < start || e > 65535)
            {
                errs.invalid(
                    &path.child("endPort"),
                    end,
                    "must be greater than or equal to `port` and at most 65535",
                );
            }
        }
        Value::String(name) => {
            errs.each(&path.child("port"), name, syntax::port_name(name));
            if !end.is_null() {
                errs.invalid(
                    &path.child("endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                );
            }
        }
        other => errs.invalid(&path.child("port"), other, "must be a port number or name"),
    }
}

fn policy_peer(peer: &Value, path: &Path, errs: &mut Errors) {
    let pod = &peer["podSelector"];
    let ns = &peer["namespaceSelector"];
    let ip = &peer["ipBlock"];
    let set = [pod, ns, ip].iter().filter(|v| !v.is_null()).count();
    if set == 0 {
        errs.required(path, "must specify a peer");
    }
    if !ip.is_null() && set > 1 {
        errs.forbidden(path, "may not specify both ipBlock and another peer");
    }
    if !pod.is_null() {
        meta::label_selector(pod, &path.child("podSelector"), errs);
    }
    if !ns.is_null() {
        meta::label_selector(ns, &path.child("namespaceSelector"), errs);
    }
    if !ip.is_null() {
        let cidr = ip["cidr"].as_str().unwrap_or_default();
        if !is_cidr(cidr) {
            errs.invalid_str(
                &path.child("ipBlock").child("cidr"),
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
        }
        for (i, e) in items(&ip["except"]) {
            let text = e.as_str().unwrap_or_default();
            if !is_cidr(text) {
                errs.invalid_str(
                    &path.child("ipBlock").child("except").index(i),
                    text,
                    "must be a valid CIDR value",
                );
            }
        }
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}
