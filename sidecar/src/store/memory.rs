//! In-memory [`Store`] for local runs and a single replica: a mutex-guarded map with expiring
//! entries (checked on every access and swept periodically) and a bound on the number of entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Store, StoreError, check_ttl};

/// Default bound on live entries; beyond it writes of new keys fail with [`StoreError::Full`].
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// How often the background sweep drops expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

/// The in-memory store. State lives in this process only: it is lost on restart and not shared
/// between replicas, so it suits local runs and single-replica deployments.
pub struct MemoryStore {
    map: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` live keys. Inside a Tokio runtime it also starts a
    /// sweep task that ends when the store is dropped.
    pub fn new(max_entries: usize) -> Arc<Self> {
        let store = Arc::new(MemoryStore {
            map: Mutex::new(HashMap::new()),
            max_entries,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_loop(Arc::downgrade(&store)));
        }
        store
    }

    /// Number of entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, e| e.expires > now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (every update is a
        // single insert or remove), so a poisoned map is still consistent.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Inserts or replaces `key`, enforcing the size bound for new keys.
    fn insert(
        &self,
        map: &mut HashMap<String, Entry>,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        if !map.contains_key(key) && map.len() >= self.max_entries {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.max_entries {
                return Err(StoreError::Full(self.max_entries));
            }
        }
        map.insert(
            key.to_owned(),
            Entry {
                value,
                expires: now + ttl,
            },
        );
        Ok(())
    }
}

/// Removes the entry under `key` if it has expired.
fn drop_expired(map: &mut HashMap<String, Entry>, key: &str) {
    if map.get(key).is_some_and(|e| e.expires <= Instant::now()) {
        map.remove(key);
    }
}

/// The live entry under `key`, removing it when expired.
fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
    drop_expired(map, key);
    map.get_mut(key)
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
        self.insert(&mut map, key, value.to_vec(), ttl)
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_ttl(ttl)?;
        let mut map = self.lock();
        if live(&mut map, key).is_some() {
            return Ok(false);
        }
        self.insert(&mut map, key, value.to_vec(), ttl)?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(live(&mut self.lock(), key).map(|e| e.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut map = self.lock();
        drop_expired(&mut map, key);
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
        match live(&mut map, key) {
            Some(entry) if entry.value == expected => {
                entry.value = new.to_vec();
                entry.expires = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        check_ttl(window)?;
        let mut map = self.lock();
        if let Some(entry) = live(&mut map, key) {
            // Stored as decimal text, as Redis does, so `get` reads the same on both backends.
            let count = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("counter {key} is not an integer")))?;
            let next = count + 1;
            entry.value = next.to_string().into_bytes();
            return Ok(next);
        }
        self.insert(&mut map, key, b"1".to_vec(), window)?;
        Ok(1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
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
            Err(StoreError::Full(2))
        ));
        assert!(matches!(
            store.incr("n", Duration::from_secs(60)).await,
            Err(StoreError::Full(2))
        ));
        store.put("b", b"2", Duration::from_secs(60)).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        store.put("c", b"1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get("c").await.unwrap().as_deref(), Some(&b"1"[..]));
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
