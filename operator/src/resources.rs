//! The injected sidecar's resources: the cluster default (operator flags) overridden per pod by
//! annotations, so a namespace whose ResourceQuota covers `limits.cpu` (or whose LimitRange
//! caps memory) can admit injected pods. Quantities are checked as the API server would: each
//! must parse, and each request must not exceed its limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Prefix of the per-pod resource annotations: `mcpwarden.dev/sidecar-<resource>-<request|limit>`.
pub const ANNOTATION_PREFIX: &str = "mcpwarden.dev/sidecar-";

/// The resources the annotations may set.
pub const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// The value of a Kubernetes quantity (`500m`, `128Mi`, `1.5G`, `2e3`), or why it is not one.
pub fn parse_quantity(raw: &str) -> Result<f64, String> {
    crate::quantity::parse(raw.trim())
        .filter(|v| *v >= 0.0)
        .ok_or_else(|| format!("{raw:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1G)"))
}

/// Checks that every quantity parses and no request exceeds its limit.
pub fn validate(resources: &ResourceRequirements) -> Result<(), String> {
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    for (kind, map) in [("request", &requests), ("limit", &limits)] {
        for (name, q) in map {
            parse_quantity(&q.0).map_err(|e| format!("sidecar {name} {kind}: {e}"))?;
        }
    }
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name)
            && parse_quantity(&request.0)? > parse_quantity(&limit.0)?
        {
            return Err(format!(
                "sidecar {name} request {} is above its limit {}",
                request.0, limit.0
            ));
        }
    }
    Ok(())
}

/// `defaults` with the pod's `mcpwarden.dev/sidecar-*` annotations applied. A limit set below
/// the default request (with no request annotation) lowers the request to it, as the API server
/// does for a limit without a request; anything else invalid is refused with a message.
pub fn for_pod(
    defaults: &ResourceRequirements,
    annotations: &BTreeMap<String, String>,
) -> Result<ResourceRequirements, String> {
    let mut requests = defaults.requests.clone().unwrap_or_default();
    let mut limits = defaults.limits.clone().unwrap_or_default();
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let (name, map) = if let Some(name) = rest.strip_suffix("-request") {
            (name, &mut requests)
        } else if let Some(name) = rest.strip_suffix("-limit") {
            (name, &mut limits)
        } else {
            continue;
        };
        if !RESOURCES.contains(&name) {
            return Err(format!(
                "{key}: mcp-warden sets only {} requests and limits",
                RESOURCES.join(", ")
            ));
        }
        parse_quantity(value).map_err(|e| format!("{key}: {e}"))?;
        map.insert(name.to_owned(), Quantity(value.trim().to_owned()));
    }
    for (name, limit) in &limits {
        let annotated_request =
            annotations.contains_key(&format!("{ANNOTATION_PREFIX}{name}-request"));
        if let Some(request) = requests.get(name)
            && !annotated_request
            && parse_quantity(&request.0)? > parse_quantity(&limit.0)?
        {
            requests.insert(name.clone(), limit.clone());
        }
    }
    let merged = ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..defaults.clone()
    };
    validate(&merged).map_err(|e| format!("{e} (from the {ANNOTATION_PREFIX}* annotations)"))?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn defaults() -> ResourceRequirements {
        ResourceRequirements {
            requests: Some([("cpu".into(), q("50m")), ("memory".into(), q("32Mi"))].into()),
            limits: Some([("memory".into(), q("128Mi"))].into()),
            ..Default::default()
        }
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{ANNOTATION_PREFIX}{k}"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn quantities_parse_like_the_api_server() {
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("1Gi").unwrap(), 1_073_741_824.0);
        assert_eq!(parse_quantity("1.5G").unwrap(), 1.5e9);
        assert_eq!(parse_quantity("2e3").unwrap(), 2000.0);
        for bad in ["", "abc", "-1", "10 Mi", "1mb", "1.2.3", "."] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn annotations_override_and_add_resources() {
        let r = for_pod(
            &defaults(),
            &ann(&[
                ("cpu-limit", "200m"),
                ("ephemeral-storage-request", "10Mi"),
                ("ephemeral-storage-limit", "100Mi"),
                ("memory-limit", "256Mi"),
            ]),
        )
        .unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(limits["cpu"].0, "200m");
        assert_eq!(limits["memory"].0, "256Mi");
        assert_eq!(limits["ephemeral-storage"].0, "100Mi");
        assert_eq!(r.requests.unwrap()["ephemeral-storage"].0, "10Mi");
    }

    #[test]
    fn a_low_limit_lowers_the_default_request_but_not_an_explicit_one() {
        let r = for_pod(&defaults(), &ann(&[("cpu-limit", "20m")])).unwrap();
        assert_eq!(r.requests.unwrap()["cpu"].0, "20m");
        let err = for_pod(
            &defaults(),
            &ann(&[("cpu-limit", "20m"), ("cpu-request", "100m")]),
        )
        .unwrap_err();
        assert!(
            err.contains("cpu request 100m is above its limit 20m"),
            "{err}"
        );
    }

    #[test]
    fn invalid_annotations_are_refused_with_the_key() {
        let err = for_pod(&defaults(), &ann(&[("memory-limit", "lots")])).unwrap_err();
        assert!(err.contains("mcpwarden.dev/sidecar-memory-limit"), "{err}");
        assert!(err.contains("\"lots\""), "{err}");
        let err = for_pod(&defaults(), &ann(&[("gpu-limit", "1")])).unwrap_err();
        assert!(err.contains("cpu, memory, ephemeral-storage"), "{err}");
        // Other sidecar-* annotations are none of this module's business.
        assert!(for_pod(&defaults(), &ann(&[("image", "x")])).is_ok());
    }
}
