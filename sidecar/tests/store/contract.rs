//! The store contract: behaviour every `Store` backend must show, written once and run against
//! the in-memory store and real Redis (standalone, sentinel, cluster).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mcp_warden_sidecar::store::{Store, StoreError, key};

/// Enough concurrent tasks to make a non-atomic implementation lose a race.
const TASKS: usize = 32;

fn k(kind: &str, id: &str) -> String {
    key("contract", "store", kind, id)
}

const MINUTE: Duration = Duration::from_secs(60);

pub async fn values_round_trip(store: Arc<dyn Store>) {
    let key = k("value", "a");
    assert_eq!(store.get(&key).await.unwrap(), None, "fresh key is absent");
    let binary = [0u8, 255, 10, 13, b'{', 0];
    store.put(&key, &binary, MINUTE).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&binary[..]),
        "bytes survive"
    );
    store.put(&key, b"second", MINUTE).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"second"[..]),
        "put replaces"
    );
    store.delete(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None, "delete removes");
    store.delete(&key).await.unwrap();
    store.put(&key, b"", MINUTE).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b""[..]),
        "empty value is not absence"
    );
    store.ping().await.unwrap();
}

/// `put_new` stores like `put` while the store has room (a bounded store refuses it earlier).
pub async fn put_new_stores_like_put(store: Arc<dyn Store>) {
    let key = k("new", "a");
    store.put_new(&key, b"first", MINUTE).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    store.put_new(&key, b"second", MINUTE).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"second"[..]),
        "put_new replaces"
    );
    assert!(matches!(
        store.put_new(&key, b"x", Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn entries_expire(store: Arc<dyn Store>) {
    let short = Duration::from_millis(300);
    let (a, b, c) = (k("ttl", "a"), k("ttl", "b"), k("ttl", "c"));
    store.put(&a, b"1", short).await.unwrap();
    assert!(store.put_if_absent(&b, b"1", short).await.unwrap());
    assert_eq!(store.incr(&c, short).await.unwrap(), 1);
    store.put(&k("ttl", "long"), b"1", MINUTE).await.unwrap();
    assert!(store.get(&a).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.get(&a).await.unwrap(), None, "put TTL");
    assert_eq!(store.take(&b).await.unwrap(), None, "put_if_absent TTL");
    assert_eq!(store.get(&c).await.unwrap(), None, "incr window TTL");
    assert!(
        store.get(&k("ttl", "long")).await.unwrap().is_some(),
        "longer TTL still there"
    );
    assert!(
        store.put_if_absent(&b, b"2", MINUTE).await.unwrap(),
        "an expired key counts as absent"
    );
}

pub async fn rejects_zero_ttl(store: Arc<dyn Store>) {
    let key = k("ttl", "zero");
    assert!(matches!(
        store.put(&key, b"1", Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .put_if_absent(&key, b"1", Duration::from_micros(10))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.incr(&key, Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.get(&key).await.unwrap(), None, "nothing was written");
}

pub async fn put_if_absent_first_writer_wins(store: Arc<dyn Store>) {
    let key = k("lock", "a");
    assert!(store.put_if_absent(&key, b"first", MINUTE).await.unwrap());
    assert!(!store.put_if_absent(&key, b"second", MINUTE).await.unwrap());
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );

    let key = k("lock", "race");
    let winners = race(&store, |store, i| {
        let key = key.clone();
        async move {
            store
                .put_if_absent(&key, i.to_string().as_bytes(), MINUTE)
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = winners
        .into_iter()
        .filter_map(|(i, won)| won.then_some(i))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent writer wins: {winners:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(winners[0].to_string().into_bytes())
    );
}

pub async fn take_is_single_use(store: Arc<dyn Store>) {
    let key = k("code", "a");
    store.put(&key, b"grant", MINUTE).await.unwrap();
    assert_eq!(
        store.take(&key).await.unwrap().as_deref(),
        Some(&b"grant"[..])
    );
    assert_eq!(
        store.take(&key).await.unwrap(),
        None,
        "second take finds nothing"
    );
    assert_eq!(store.get(&key).await.unwrap(), None, "take deleted the key");
    assert_eq!(store.take(&k("code", "never")).await.unwrap(), None);

    for round in 0..10 {
        let key = k("code", &format!("race-{round}"));
        store.put(&key, b"grant", MINUTE).await.unwrap();
        let got = race(&store, |store, _| {
            let key = key.clone();
            async move { store.take(&key).await.unwrap() }
        })
        .await;
        let winners: Vec<_> = got.iter().filter(|(_, v)| v.is_some()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one of {TASKS} takers gets the code"
        );
        assert_eq!(winners[0].1.as_deref(), Some(&b"grant"[..]));
    }
}

pub async fn compare_and_swap_is_atomic(store: Arc<dyn Store>) {
    let key = k("refresh", "a");
    assert!(
        !store
            .compare_and_swap(&key, b"x", b"y", MINUTE)
            .await
            .unwrap(),
        "missing key never swaps"
    );
    assert_eq!(store.get(&key).await.unwrap(), None, "and is not created");
    store.put(&key, b"gen-1", MINUTE).await.unwrap();
    assert!(
        !store
            .compare_and_swap(&key, b"gen-0", b"gen-2", MINUTE)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"gen-1"[..]),
        "failed CAS changes nothing"
    );
    assert!(
        store
            .compare_and_swap(&key, b"gen-1", b"gen-2", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"gen-2"[..])
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.get(&key).await.unwrap(), None, "CAS sets the new TTL");

    // Concurrent rotations of one refresh family: exactly one rotation of a generation wins.
    let key = k("refresh", "race");
    store.put(&key, b"gen-0", MINUTE).await.unwrap();
    let results = race(&store, |store, i| {
        let key = key.clone();
        async move {
            store
                .compare_and_swap(&key, b"gen-0", format!("gen-1-by-{i}").as_bytes(), MINUTE)
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = results
        .into_iter()
        .filter_map(|(i, won)| won.then_some(i))
        .collect();
    assert_eq!(winners.len(), 1, "one rotation wins: {winners:?}");
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(format!("gen-1-by-{}", winners[0]).into_bytes())
    );

    // A CAS retry loop is a lock-free counter only if CAS is linearizable: no update is lost.
    let key = k("refresh", "counter");
    store.put(&key, b"0", MINUTE).await.unwrap();
    race(&store, |store, _| {
        let key = key.clone();
        async move {
            for _ in 0..5 {
                loop {
                    let current = store.get(&key).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&current).unwrap().parse().unwrap();
                    let next = (n + 1).to_string();
                    if store
                        .compare_and_swap(&key, &current, next.as_bytes(), MINUTE)
                        .await
                        .unwrap()
                    {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some((TASKS * 5).to_string().into_bytes()),
        "every CAS increment counted"
    );
}

pub async fn incr_counts_per_window(store: Arc<dyn Store>) {
    let window = Duration::from_millis(1000);
    let key = k("rate", "a");
    for expected in 1..=3 {
        assert_eq!(store.incr(&key, window).await.unwrap(), expected);
    }
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"3"[..]),
        "counter reads as decimal"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        store.incr(&key, window).await.unwrap(),
        1,
        "a new window starts at 1"
    );

    // Later increments do not extend the window.
    let key = k("rate", "fixed");
    assert_eq!(store.incr(&key, window).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.incr(&key, window).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        store.incr(&key, window).await.unwrap(),
        1,
        "window ran from the first increment"
    );

    let key = k("rate", "race");
    let counts = race(&store, |store, _| {
        let key = key.clone();
        async move { store.incr(&key, MINUTE).await.unwrap() }
    })
    .await;
    let seen: HashSet<u64> = counts.into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        seen,
        (1..=TASKS as u64).collect(),
        "concurrent increments are each counted once"
    );

    let key = k("rate", "not-a-number");
    store.put(&key, b"abc", MINUTE).await.unwrap();
    assert!(matches!(
        store.incr(&key, MINUTE).await,
        Err(StoreError::Corrupt(_))
    ));
}

pub async fn count_and_get_counts_and_reads(store: Arc<dyn Store>) {
    let (a, b, missing) = (k("record", "a"), k("record", "b"), k("record", "none"));
    store.put(&a, b"first", MINUTE).await.unwrap();
    store.put(&b, b"second", MINUTE).await.unwrap();
    let counter = k("rate", "count-and-get");
    let window = Duration::from_millis(1000);
    for expected in 1..=2 {
        let (count, values) = store
            .count_and_get(Some((&counter, window)), &[&a, &missing, &b])
            .await
            .unwrap();
        assert_eq!(count, Some(expected));
        assert_eq!(
            values,
            [Some(b"first".to_vec()), None, Some(b"second".to_vec())]
        );
    }
    assert_eq!(
        store.incr(&counter, window).await.unwrap(),
        3,
        "one counter with incr"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (count, values) = store
        .count_and_get(Some((&counter, window)), &[])
        .await
        .unwrap();
    assert_eq!(
        (count, values),
        (Some(1), vec![]),
        "the counter's window expires"
    );

    let (count, values) = store.count_and_get(None, &[&b, &a]).await.unwrap();
    assert_eq!(count, None, "nothing counted without a counter");
    assert_eq!(values, [Some(b"second".to_vec()), Some(b"first".to_vec())]);
    assert_eq!(
        store.count_and_get(None, &[]).await.unwrap(),
        (None, vec![])
    );
    assert!(matches!(
        store
            .count_and_get(Some((&counter, Duration::ZERO)), &[&a])
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// Every case, in order (for deployments too costly to set up per case).
pub async fn all(store: Arc<dyn Store>) {
    values_round_trip(store.clone()).await;
    entries_expire(store.clone()).await;
    rejects_zero_ttl(store.clone()).await;
    put_if_absent_first_writer_wins(store.clone()).await;
    take_is_single_use(store.clone()).await;
    compare_and_swap_is_atomic(store.clone()).await;
    incr_counts_per_window(store.clone()).await;
    count_and_get_counts_and_reads(store.clone()).await;
    log_reads_each_entry_once_in_order(store).await;
}

/// Runs `f` in [`TASKS`] tasks released at once; returns each task's index and result.
async fn race<F, Fut, T>(store: &Arc<dyn Store>, f: F) -> Vec<(usize, T)>
where
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let work = f(store.clone(), i);
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                (i, work.await)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(TASKS);
    for task in tasks {
        out.push(task.await.expect("contract task panicked"));
    }
    out
}

/// An append-only log read by cursor: every entry once, in order, across appends; expired
/// entries are not read.
pub async fn log_reads_each_entry_once_in_order(store: Arc<dyn Store>) {
    let key = k("log", "revoked");
    let empty = store.read_log(&key, None, 10).await.unwrap();
    assert!(
        empty.entries.is_empty() && empty.cursor.is_none(),
        "fresh log is empty"
    );
    for i in 0..5u8 {
        store.append(&key, &[b'a', i], MINUTE).await.unwrap();
    }
    let first = store.read_log(&key, None, 3).await.unwrap();
    assert_eq!(
        first.entries,
        vec![vec![b'a', 0], vec![b'a', 1], vec![b'a', 2]]
    );
    let rest = store
        .read_log(&key, first.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(rest.entries, vec![vec![b'a', 3], vec![b'a', 4]]);
    let none = store
        .read_log(&key, rest.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    assert_eq!(none.cursor, rest.cursor, "an empty read keeps the cursor");
    store.append(&key, b"late", MINUTE).await.unwrap();
    let late = store
        .read_log(&key, none.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(late.entries, vec![b"late".to_vec()]);
    // A short-lived log expires as a whole.
    let short = k("log", "short");
    store
        .append(&short, b"x", Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store
            .read_log(&short, None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}
