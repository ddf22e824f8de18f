//! A counter and a histogram for the request path that each thread bumps in cache lines of its
//! own, summed when scraped. prometheus-client's `Counter` is one atomic and its `Histogram` one
//! lock, shared by every serving thread: each request then moves those cache lines between cores,
//! which costs far more cycles than the few instructions suggest. Both types encode exactly as
//! prometheus-client's own do (same type, same text), so they sit in the same `Registry` and
//! `Family`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric. Threads take one each, round-robin, the first time they record anything, so
/// up to this many serving threads never write the same line; further threads share a shard
/// (still exact, as every write is an atomic read-modify-write, only slower).
pub const SHARDS: usize = 8;

/// Bytes a shard's words are aligned to and padded to: x86 fetches cache lines in adjacent pairs,
/// so a thread's words must not share either 64-byte half with another thread's.
const LINE: usize = 128;

/// Words in one [`LINE`].
const WORDS: usize = LINE / 8;

/// `words` atomics per shard, each shard in lines of its own. One plain allocation whose first
/// [`LINE`]-aligned word starts shard 0: an over-aligned allocation would leave free fragments in
/// the allocator's bins, which the request path's own allocations then pay for.
#[derive(Debug)]
struct Cells {
    words: Box<[AtomicU64]>,
    /// Index of the first aligned word.
    first: usize,
    /// Words per shard, whole lines.
    stride: usize,
}

impl Cells {
    fn new(words: usize) -> Self {
        let stride = words.div_ceil(WORDS) * WORDS;
        let words: Box<[AtomicU64]> = (0..SHARDS * stride + WORDS - 1)
            .map(|_| AtomicU64::new(0))
            .collect();
        let first = (words.as_ptr() as usize).wrapping_neg() % LINE / 8;
        Cells {
            words,
            first,
            stride,
        }
    }

    /// Word `i` of `shard`.
    fn word(&self, shard: usize, i: usize) -> &AtomicU64 {
        &self.words[self.first + shard * self.stride + i]
    }

    /// Word `i` summed over the shards.
    fn total(&self, i: usize) -> u64 {
        (0..SHARDS)
            .map(|shard| self.word(shard, i).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A thread's shard (below [`SHARDS`]), to look it up once for several updates.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shard(usize);

impl Shard {
    /// The calling thread's shard, chosen on its first call.
    pub(super) fn current() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
        }
        Shard(SHARD.with(|shard| *shard))
    }
}

/// A counter (`u64`, like prometheus-client's default `Counter`) sharded per thread.
#[derive(Clone, Debug)]
pub struct ShardedCounter {
    cells: Arc<Cells>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter {
            cells: Arc::new(Cells::new(1)),
        }
    }
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_at(Shard::current());
    }

    /// Adds one in `shard`, the calling thread's.
    pub(super) fn inc_at(&self, shard: Shard) {
        self.cells.word(shard.0, 0).fetch_add(1, Relaxed);
    }

    /// The sum over all threads.
    pub fn get(&self) -> u64 {
        self.cells.total(0)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram with fixed bucket bounds, sharded per thread. Each shard holds the bits of its
/// `f64` sum (word 0) and its per-bucket counts (not cumulative); the count is the sum of the
/// buckets, since every observation lands in exactly one.
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, ascending, the last one `+Inf`.
    bounds: Box<[f64]>,
    cells: Cells,
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (ascending) and the implicit `+Inf` bucket; non-finite
    /// bounds are dropped, as prometheus-client's `Histogram::new` does.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let cells = Cells::new(1 + bounds.len());
        ShardedHistogram {
            inner: Arc::new(HistogramInner { bounds, cells }),
        }
    }

    /// Records one value: in the first bucket whose bound is at least `v` (`NaN` in `+Inf`).
    pub fn observe(&self, v: f64) {
        self.observe_at(Shard::current(), v);
    }

    /// Records one value in `shard`, the calling thread's.
    pub(super) fn observe_at(&self, Shard(shard): Shard, v: f64) {
        let inner = &*self.inner;
        let last = inner.bounds.len() - 1;
        let bucket = inner
            .bounds
            .iter()
            .position(|&bound| bound >= v)
            .unwrap_or(last);
        inner.cells.word(shard, 1 + bucket).fetch_add(1, Relaxed);
        // Only this thread writes its shard, unless more threads than shards record: then the
        // loop retries until no other thread wrote in between.
        let sum = inner.cells.word(shard, 0);
        let mut old = sum.load(Relaxed);
        while let Err(now) =
            sum.compare_exchange_weak(old, (f64::from_bits(old) + v).to_bits(), Relaxed, Relaxed)
        {
            old = now;
        }
    }

    /// Sum, count and per-bucket counts (bound, count), over all threads.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let sum = (0..SHARDS)
            .map(|shard| f64::from_bits(inner.cells.word(shard, 0).load(Relaxed)))
            .fold(0.0, |a, b| a + b);
        let buckets: Vec<(f64, u64)> = (inner.bounds.iter().enumerate())
            .map(|(i, &bound)| (bound, inner.cells.total(1 + i)))
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).fold(0, u64::wrapping_add);
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{doubling_buckets, render};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    const BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];

    #[test]
    fn sums_over_more_threads_than_shards() {
        // Four times as many threads as shards, so they share: every bump must still count.
        const THREADS: usize = 4 * SHARDS;
        const ROUNDS: u64 = 50_000;
        let counter = ShardedCounter::default();
        let histogram = ShardedHistogram::new(BOUNDS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        counter.inc();
                        for v in [0.5, 2.0, 3.0, 100.0] {
                            histogram.observe(v);
                        }
                    }
                });
            }
        });
        let n = THREADS as u64 * ROUNDS;
        assert_eq!(counter.get(), n);
        let (sum, count, buckets) = histogram.snapshot();
        // Every partial sum is a multiple of 0.5 far below 2^52: exact in any order.
        assert_eq!(sum, 105.5 * n as f64);
        assert_eq!(count, 4 * n);
        assert_eq!(buckets, [(1.0, n), (2.0, n), (4.0, n), (f64::INFINITY, n)]);
    }

    #[test]
    fn a_thread_writes_only_its_own_shard() {
        let counter = ShardedCounter::default();
        std::thread::scope(|s| {
            s.spawn(|| (0..3).for_each(|_| counter.inc()));
        });
        let per_shard: Vec<u64> = (0..SHARDS)
            .map(|shard| counter.cells.word(shard, 0).load(Relaxed))
            .collect();
        assert_eq!(per_shard.iter().sum::<u64>(), 3);
        assert_eq!(
            per_shard.iter().filter(|&&n| n > 0).count(),
            1,
            "{per_shard:?}"
        );
    }

    #[test]
    fn threads_spread_over_shards() {
        // Threads take shards round-robin from one process-wide ticket, so SHARDS threads all
        // landing in one shard would need other threads to take exactly the tickets in between.
        let counter = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..SHARDS {
                s.spawn(|| counter.inc());
            }
        });
        let used = (0..SHARDS)
            .filter(|&shard| counter.cells.word(shard, 0).load(Relaxed) > 0)
            .count();
        assert!(used > 1, "{SHARDS} threads wrote {used} shard(s)");
    }

    #[test]
    fn shards_share_no_cache_line() {
        // A counter (one word per shard) and the request histogram (a sum and 17 buckets: more
        // than one line per shard). Each shard starts a line and ends before the next one's.
        let counter = ShardedCounter::default();
        let histogram = ShardedHistogram::new(doubling_buckets(0.0005, 16));
        for (cells, words) in [
            (&*counter.cells, 1),
            (&histogram.inner.cells, 1 + histogram.inner.bounds.len()),
        ] {
            let address = |shard, i| std::ptr::from_ref(cells.word(shard, i)) as usize;
            for shard in 0..SHARDS {
                assert_eq!(address(shard, 0) % LINE, 0, "shard {shard}");
                if shard > 0 {
                    assert!(address(shard - 1, words - 1) < address(shard, 0));
                }
            }
        }
    }

    #[test]
    fn renders_exactly_as_prometheus_client() {
        let (mut ours, mut theirs) = (Registry::default(), Registry::default());

        let (counter, reference): (_, Counter) = (ShardedCounter::default(), Counter::default());
        for _ in 0..5 {
            counter.inc();
            reference.inc();
        }
        ours.register("hits", "Hits", counter);
        theirs.register("hits", "Hits", reference);

        // Values below, on, between and above the bounds; sums that round (0.1 + 0.2).
        let finite = [0.0, -1.0, 0.1, 0.2, 0.3, 1.0, 1.5, 2.0, 4.0, 4.000_001, 1e9];
        let (histogram, reference) = (ShardedHistogram::new(BOUNDS), Histogram::new(BOUNDS));
        finite.iter().for_each(|&v| histogram.observe(v));
        finite.iter().for_each(|&v| reference.observe(v));
        ours.register("latency", "Latency", histogram);
        theirs.register("latency", "Latency", reference);

        let odd = [1.0, f64::INFINITY, f64::NAN];
        let (histogram, reference) = (ShardedHistogram::new(BOUNDS), Histogram::new(BOUNDS));
        odd.iter().for_each(|&v| histogram.observe(v));
        odd.iter().for_each(|&v| reference.observe(v));
        ours.register("odd", "Odd", histogram);
        theirs.register("odd", "Odd", reference);

        // In families, with the request histogram's bounds (one label set each: a family's
        // order is a hash map's).
        type Labels = Vec<(String, String)>;
        let labels = vec![("policy".to_owned(), "p".to_owned())];
        let counters = Family::<Labels, ShardedCounter>::default();
        let references = Family::<Labels, Counter>::default();
        counters.get_or_create(&labels).inc();
        references.get_or_create(&labels).inc();
        ours.register("calls", "Calls", counters);
        theirs.register("calls", "Calls", references);
        let histograms = Family::<Labels, ShardedHistogram>::new_with_constructor(|| {
            ShardedHistogram::new(doubling_buckets(0.0005, 16))
        });
        let references = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(doubling_buckets(0.0005, 16))
        });
        for v in [0.0004, 0.0005, 0.003, 0.5, 20.0, 100.0] {
            histograms.get_or_create(&labels).observe(v);
            references.get_or_create(&labels).observe(v);
        }
        ours.register("duration_seconds", "Duration", histograms);
        theirs.register("duration_seconds", "Duration", references);

        assert_eq!(render(&ours), render(&theirs));
    }
}
