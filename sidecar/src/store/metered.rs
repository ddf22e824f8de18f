//! Store metrics: a [`Store`] wrapper timing every operation and counting failures, labelled by
//! operation only (a bounded set), never by key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{LogBatch, Store, StoreError};

/// A store operation, the `op` label.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Op {
    Put,
    PutIfAbsent,
    Get,
    Take,
    Delete,
    CompareAndSwap,
    Incr,
    CountAndGet,
    Ping,
    Append,
    ReadLog,
}

impl Op {
    /// Every operation, to pre-create label sets so dashboards see zeros before traffic.
    pub const ALL: [Op; 11] = [
        Op::Put,
        Op::PutIfAbsent,
        Op::Get,
        Op::Take,
        Op::Delete,
        Op::CompareAndSwap,
        Op::Incr,
        Op::CountAndGet,
        Op::Ping,
        Op::Append,
        Op::ReadLog,
    ];

    /// The label value (snake case, like the method names).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::PutIfAbsent => "put_if_absent",
            Op::Get => "get",
            Op::Take => "take",
            Op::Delete => "delete",
            Op::CompareAndSwap => "compare_and_swap",
            Op::Incr => "incr",
            Op::CountAndGet => "count_and_get",
            Op::Ping => "ping",
            Op::Append => "append",
            Op::ReadLog => "read_log",
        }
    }
}

impl EncodeLabelValue for Op {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of the store metric families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation.
    pub op: Op,
}

/// The store metric families.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Time per operation, failures included.
    pub duration: Family<OpLabels, Histogram>,
    /// Failed operations.
    pub errors: Family<OpLabels, Counter>,
}

impl StoreMetrics {
    /// Creates the families and registers them under `mcp_warden_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = StoreMetrics {
            // 100 µs .. ~3.3 s: loopback Redis answers in well under a millisecond, a timeout
            // shows up in the top buckets.
            duration: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::doubling_buckets(0.0001, 16))
            }),
            errors: Family::default(),
        };
        // Families print only once a label set exists: create every op up front, so dashboards
        // see both families before the first store call.
        for op in Op::ALL {
            drop(m.errors.get_or_create(&OpLabels { op }));
            drop(m.duration.get_or_create(&OpLabels { op }));
        }
        let r = registry.sub_registry_with_prefix("mcp_warden");
        r.register(
            "store_operation_duration_seconds",
            "Time of each state store operation",
            m.duration.clone(),
        );
        r.register(
            "store_errors",
            "Failed state store operations",
            m.errors.clone(),
        );
        m
    }

    fn record<T>(&self, op: Op, started: Instant, result: &Result<T, StoreError>) {
        let labels = OpLabels { op };
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.errors.get_or_create(&labels).inc();
            tracing::debug!(?op, error = %e, "state store operation failed");
        }
    }
}

/// Runs one store operation in a trace span (when tracing is on).
async fn traced<T>(
    op: Op,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let attributes = || {
        vec![opentelemetry::KeyValue::new(
            "db.operation.name",
            op.as_str(),
        )]
    };
    crate::telemetry::client("store", attributes, work).await
}

/// A [`Store`] that records [`StoreMetrics`] for another store.
pub struct Metered {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Metered { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Store for Metered {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = traced(Op::Put, self.inner.put(key, value, ttl)).await;
        self.metrics.record(Op::Put, t, &r);
        r
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = traced(Op::Put, self.inner.put_new(key, value, ttl)).await;
        self.metrics.record(Op::Put, t, &r);
        r
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let t = Instant::now();
        let r = traced(Op::PutIfAbsent, self.inner.put_if_absent(key, value, ttl)).await;
        self.metrics.record(Op::PutIfAbsent, t, &r);
        r
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = Instant::now();
        let r = traced(Op::Get, self.inner.get(key)).await;
        self.metrics.record(Op::Get, t, &r);
        r
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = Instant::now();
        let r = traced(Op::Take, self.inner.take(key)).await;
        self.metrics.record(Op::Take, t, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = traced(Op::Delete, self.inner.delete(key)).await;
        self.metrics.record(Op::Delete, t, &r);
        r
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let t = Instant::now();
        let r = traced(
            Op::CompareAndSwap,
            self.inner.compare_and_swap(key, expected, new, ttl),
        )
        .await;
        self.metrics.record(Op::CompareAndSwap, t, &r);
        r
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let t = Instant::now();
        let r = traced(Op::Incr, self.inner.incr(key, window)).await;
        self.metrics.record(Op::Incr, t, &r);
        r
    }

    async fn count_and_get(
        &self,
        counter: Option<(&str, Duration)>,
        keys: &[&str],
    ) -> Result<(Option<u64>, Vec<Option<Vec<u8>>>), StoreError> {
        let t = Instant::now();
        let r = traced(Op::CountAndGet, self.inner.count_and_get(counter, keys)).await;
        self.metrics.record(Op::CountAndGet, t, &r);
        r
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = traced(Op::Ping, self.inner.ping()).await;
        self.metrics.record(Op::Ping, t, &r);
        r
    }

    async fn append(&self, key: &str, entry: &[u8], keep: Duration) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = traced(Op::Append, self.inner.append(key, entry, keep)).await;
        self.metrics.record(Op::Append, t, &r);
        r
    }

    async fn read_log(
        &self,
        key: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<LogBatch, StoreError> {
        let t = Instant::now();
        let r = traced(Op::ReadLog, self.inner.read_log(key, after, max)).await;
        self.metrics.record(Op::ReadLog, t, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn records_latency_and_errors_by_operation() {
        let mut registry = Registry::default();
        let metrics = StoreMetrics::register(&mut registry);
        let store = Metered::new(MemoryStore::new(10), metrics);
        store.put("k", b"v", Duration::from_secs(5)).await.unwrap();
        store.get("k").await.unwrap();
        assert!(matches!(
            store.put("k", b"v", Duration::ZERO).await,
            Err(StoreError::Invalid(_))
        ));

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE mcp_warden_store_operation_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_store_operation_duration_seconds_count{op=\"put\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_store_operation_duration_seconds_count{op=\"get\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_store_errors_total{op=\"put\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_store_errors_total{op=\"take\"} 0"),
            "{text}"
        );
    }
}
