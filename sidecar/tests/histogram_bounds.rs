//! Histogram bounds computed without libm: `powf` was the release binary's only use of it, and a
//! shared library less is one less mapped into every sidecar (file-backed RSS) and resolved at
//! every start. (Test builds still link it: tokio's work-stealing scheduler, for the store
//! contract tests, uses `powf` too.)

use prometheus_client::metrics::histogram::exponential_buckets;

use mcp_warden_sidecar::metrics::doubling_buckets;

#[test]
fn histogram_bounds_are_prometheus_clients_exponential_ones() {
    for (start, count) in [(0.0005, 16), (0.005, 14), (0.0001, 16)] {
        let ours: Vec<f64> = doubling_buckets(start, count).collect();
        let theirs: Vec<f64> = exponential_buckets(start, 2.0, count as u16).collect();
        assert_eq!(ours, theirs);
    }
}
