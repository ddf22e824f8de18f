//! In-memory [`Store`] for local runs and a single replica: a mutex-guarded map with expiring
//! entries (checked on every access and swept periodically), bounded in entries and in bytes.
//!
//! The byte budget keeps a flood of registrations from growing the process past its memory
//! limit. Writes that start something new ([`Store::put_new`]: registrations, cached client
//! documents) are refused once the store is three quarters full, so the rest stays for flows
//! already under way (authorization requests of registered clients, codes, sessions).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{LogBatch, Store, StoreError, check_ttl};

/// Default bound on live entries; beyond it writes of new keys fail with [`StoreError::Full`].
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Default byte budget (keys, values and bookkeeping): well inside a 128 MiB container.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Bytes counted per entry besides its key and value: the map slot, the key and value headers,
/// the expiry and allocator rounding.
const ENTRY_OVERHEAD: usize = 96;

/// How often the background sweep drops expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// The map and the bytes it holds (kept in step under one lock), and the logs.
#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Logs ([`Store::append`]): bounded by their keep time rather than the byte budget, so a
    /// full store still records revocations.
    logs: HashMap<String, Log>,
    /// Sequence number of the last log entry appended (the cursor), over all logs.
    log_seq: u64,
}

/// One log: entries with their sequence number and expiry, oldest first.
#[derive(Default)]
struct Log {
    entries: VecDeque<(u64, Instant, Vec<u8>)>,
}

impl Log {
    fn drop_expired(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|(_, exp, _)| *exp <= now) {
            self.entries.pop_front();
        }
    }
}

impl Map {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= cost(key, &entry.value);
        Some(entry)
    }

    fn drop_all_expired(&mut self, now: Instant) {
        self.logs.retain(|_, log| {
            log.drop_expired(now);
            !log.entries.is_empty()
        });
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let keep = e.expires > now;
            if !keep {
                freed += cost(k, &e.value);
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Removes the entry under `key` if it has expired.
    fn drop_expired(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.expires <= Instant::now())
        {
            self.remove(key);
        }
    }

    /// The live entry under `key`, removing it when expired.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        self.drop_expired(key);
        self.entries.get_mut(key)
    }

    /// Replaces the value of an existing entry, keeping the byte count right.
    fn set_value(&mut self, key: &str, value: Vec<u8>) {
        if let Some(entry) = self.entries.get_mut(key) {
            self.bytes = self.bytes - entry.value.len() + value.len();
            entry.value = value;
        }
    }
}

/// How full a write may leave the store.
#[derive(Clone, Copy)]
enum Room {
    /// The whole budget.
    All,
    /// Three quarters of it (writes that start something new).
    New,
}

/// The in-memory store. State lives in this process only: it is lost on restart and not shared
/// between replicas, so it suits local runs and single-replica deployments.
pub struct MemoryStore {
    map: Mutex<Map>,
    max_entries: usize,
    max_bytes: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` live keys and [`DEFAULT_MAX_BYTES`]. Inside a Tokio
    /// runtime it also starts a sweep task that ends when the store is dropped.
    pub fn new(max_entries: usize) -> Arc<Self> {
        Self::with_budget(max_entries, DEFAULT_MAX_BYTES)
    }

    /// A store holding at most `max_entries` live keys and `max_bytes` (keys, values and
    /// bookkeeping).
    pub fn with_budget(max_entries: usize, max_bytes: usize) -> Arc<Self> {
        let store = Arc::new(MemoryStore {
            map: Mutex::new(Map::default()),
            max_entries,
            max_bytes,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_loop(Arc::downgrade(&store)));
        }
        store
    }

    /// Number of entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (keys, values and per-entry bookkeeping), expired entries not yet swept
    /// included.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Drops every expired entry.
    pub fn sweep(&self) {
        self.lock().drop_all_expired(Instant::now());
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave an entry half-written (every update is a
        // single insert or remove), so a poisoned map is still consistent.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `map` has room for `added` more bytes (and one more entry when `new_key`).
    fn fits(&self, map: &Map, added: usize, new_key: bool, room: Room) -> bool {
        let (max_entries, max_bytes) = match room {
            Room::All => (self.max_entries, self.max_bytes),
            Room::New => (self.max_entries / 4 * 3, self.max_bytes / 4 * 3),
        };
        (!new_key || map.entries.len() < max_entries) && map.bytes + added <= max_bytes
    }

    /// Inserts or replaces `key`, enforcing the bounds.
    fn insert(
        &self,
        map: &mut Map,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        room: Room,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let old = map.entries.get(key).map(|e| cost(key, &e.value));
        let added = cost(key, &value).saturating_sub(old.unwrap_or(0));
        if !self.fits(map, added, old.is_none(), room) {
            map.drop_all_expired(now);
            let old = map.entries.get(key).map(|e| cost(key, &e.value));
            let added = cost(key, &value).saturating_sub(old.unwrap_or(0));
            if !self.fits(map, added, old.is_none(), room) {
                return Err(StoreError::Full(self.max_bytes));
            }
        }
        map.remove(key);
        map.bytes += cost(key, &value);
        map.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires: now + ttl,
            },
        );
        Ok(())
    }
}

async fn sweep_loop(store: Weak<MemoryStore>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.upgrade() {
            Some(store) => store.sweep(),
            None => return,
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        check_ttl(ttl)?;
        let mut map = self.lock();
        self.insert(&mut map, key, value.to_vec(), ttl, Room::All)
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        check_ttl(ttl)?;
        let mut map = self.lock();
        self.insert(&mut map, key, value.to_vec(), ttl, Room::New)
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_ttl(ttl)?;
        let mut map = self.lock();
        if map.live(key).is_some() {
            return Ok(false);
        }
        self.insert(&mut map, key, value.to_vec(), ttl, Room::All)?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().live(key).map(|e| e.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut map = self.lock();
        map.drop_expired(key);
        Ok(map.remove(key).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_ttl(ttl)?;
        let mut map = self.lock();
        match map.live(key) {
            Some(entry) if entry.value == expected => {
                let grows = new.len().saturating_sub(expected.len());
                if grows > 0 && !self.fits(&map, grows, false, Room::All) {
                    return Err(StoreError::Full(self.max_bytes));
                }
                map.set_value(key, new.to_vec());
                if let Some(entry) = map.entries.get_mut(key) {
                    entry.expires = Instant::now() + ttl;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        check_ttl(window)?;
        let mut map = self.lock();
        if let Some(entry) = map.live(key) {
            // Stored as decimal text, as Redis does, so `get` reads the same on both backends.
            let count = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("counter {key} is not an integer")))?;
            let next = count + 1;
            map.set_value(key, next.to_string().into_bytes());
            return Ok(next);
        }
        self.insert(&mut map, key, b"1".to_vec(), window, Room::All)?;
        Ok(1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append(&self, key: &str, entry: &[u8], keep: Duration) -> Result<(), StoreError> {
        check_ttl(keep)?;
        let now = Instant::now();
        let mut map = self.lock();
        map.log_seq += 1;
        let seq = map.log_seq;
        let log = map.logs.entry(key.to_owned()).or_default();
        log.drop_expired(now);
        log.entries.push_back((seq, now + keep, entry.to_vec()));
        Ok(())
    }

    async fn read_log(
        &self,
        key: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<LogBatch, StoreError> {
        let after = match after {
            None => 0,
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| StoreError::Invalid(format!("log cursor {c:?}")))?,
        };
        let now = Instant::now();
        let map = self.lock();
        let entries: Vec<(u64, Vec<u8>)> = map
            .logs
            .get(key)
            .map(|log| {
                log.entries
                    .iter()
                    .filter(|(seq, exp, _)| *seq > after && *exp > now)
                    .take(max)
                    .map(|(seq, _, e)| (*seq, e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let cursor = entries.last().map_or(after, |(seq, _)| *seq);
        Ok(LogBatch {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            cursor: (cursor > 0).then(|| cursor.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_are_swept() {
        let store = MemoryStore::new(10);
        store.put("a", b"1", Duration::from_secs(5)).await.unwrap();
        store.put("b", b"2", Duration::from_secs(60)).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.len(), 2, "expiry is lazy until a sweep");
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(store.len(), 1, "reading an expired key drops it");
        store.put("c", b"3", Duration::from_secs(5)).await.unwrap();
        tokio::time::advance(Duration::from_secs(40)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.len(), 1, "the periodic sweep dropped c");
        assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded_but_expired_entries_make_room() {
        let store = MemoryStore::new(2);
        store.put("a", b"1", Duration::from_secs(1)).await.unwrap();
        store.put("b", b"1", Duration::from_secs(60)).await.unwrap();
        assert!(matches!(
            store.put("c", b"1", Duration::from_secs(60)).await,
            Err(StoreError::Full(_))
        ));
        assert!(matches!(
            store.incr("n", Duration::from_secs(60)).await,
            Err(StoreError::Full(_))
        ));
        store.put("b", b"2", Duration::from_secs(60)).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        store.put("c", b"1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get("c").await.unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_bounded_and_new_things_stop_first() {
        let value = vec![7u8; 1000];
        let each = cost("k000", &value);
        let store = MemoryStore::with_budget(1_000_000, 8 * each);
        // New things fill three quarters of the budget …
        for i in 0..6 {
            store
                .put_new(&format!("k{i:03}"), &value, Duration::from_secs(60))
                .await
                .unwrap();
        }
        assert!(matches!(
            store.put_new("k006", &value, Duration::from_secs(60)).await,
            Err(StoreError::Full(_))
        ));
        // … the rest stays for work under way.
        store
            .put("k006", &value, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put("k007", &value, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(
            store.put("k008", &value, Duration::from_secs(60)).await,
            Err(StoreError::Full(_))
        ));
        assert_eq!(store.bytes(), 8 * each);
        // Taking, deleting and replacing give the bytes back.
        store.take("k000").await.unwrap();
        store.delete("k001").await.unwrap();
        store
            .put("k002", b"small", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.bytes(), 5 * each + cost("k002", b"small"));
        store.take("k003").await.unwrap();
        store
            .put_new("k100", &value, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put("k201", &value, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put("k202", &value, Duration::from_secs(60))
            .await
            .unwrap();
        // Expired entries make room.
        store
            .put("k007", &value, Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        store
            .put("k203", &value, Duration::from_secs(60))
            .await
            .unwrap();
        let small = cost("k002", b"small");
        assert_eq!(store.bytes(), 7 * each + small);
        assert_eq!(store.incr("n", Duration::from_secs(60)).await.unwrap(), 1);
        assert_eq!(store.incr("n", Duration::from_secs(60)).await.unwrap(), 2);
        assert_eq!(store.bytes(), 7 * each + small + cost("n", b"2"));
        // A swap that would outgrow the budget is refused.
        let big = vec![1u8; 2000];
        assert!(matches!(
            store
                .compare_and_swap("k002", b"small", &big, Duration::from_secs(60))
                .await,
            Err(StoreError::Full(_))
        ));
    }

    #[tokio::test]
    async fn sweeper_stops_with_the_store() {
        let store = MemoryStore::new(1);
        let weak = Arc::downgrade(&store);
        drop(store);
        assert!(
            weak.upgrade().is_none(),
            "the sweep task holds no strong reference"
        );
    }
}
