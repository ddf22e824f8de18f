//! The verified-token cache: entries found by a keyed hash of the token computed once per
//! request, and evicted oldest first, one per new token, when the cache is full.
//!
//! Evicting one entry per insertion keeps the cost of a new token steady: no pass over the
//! whole cache and no burst of frees when it fills, and the memory an evicted entry held is
//! what the next one reuses.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Mutex;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// Tokens and what they verified to, at most `capacity` of them; shared by the request threads.
pub(super) struct TokenCache<V> {
    /// foldhash with a random seed per cache: tokens come from clients, and only verified ones
    /// are kept, so a client cannot choose colliding entries; a token is hundreds of bytes,
    /// which SipHash took ~1k instructions a request to hash.
    hasher: RandomState,
    capacity: usize,
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    table: HashTable<Slot<V>>,
    /// Each entry's hash and number, oldest first: one item per entry in `table`.
    order: VecDeque<(u64, u64)>,
    /// The number the next new entry gets.
    next: u64,
}

struct Slot<V> {
    token: Box<str>,
    hash: u64,
    number: u64,
    value: V,
}

impl<V: Clone> TokenCache<V> {
    /// An empty cache holding at most `capacity` tokens.
    pub(super) fn new(capacity: usize) -> Self {
        TokenCache {
            hasher: RandomState::default(),
            capacity: capacity.max(1),
            entries: Mutex::new(Entries {
                table: HashTable::new(),
                order: VecDeque::new(),
                next: 0,
            }),
        }
    }

    /// The hash `get` and `insert` take for `token`.
    pub(super) fn hash(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    /// The value kept for `token` (whose hash is `hash`).
    pub(super) fn get(&self, token: &str, hash: u64) -> Option<V> {
        let entries = self.entries.lock().expect("token cache lock");
        entries
            .table
            .find(hash, |s| *s.token == *token)
            .map(|s| s.value.clone())
    }

    /// Keeps `value` for `token` (whose hash is `hash`), in place of the value it had, or as a
    /// new entry after evicting the oldest when the cache is full. Returns the value replaced or
    /// evicted, for the caller to drop outside the lock.
    pub(super) fn insert(&self, token: &str, hash: u64, value: V) -> Option<V> {
        let mut entries = self.entries.lock().expect("token cache lock");
        let Entries { table, order, next } = &mut *entries;
        if let Some(slot) = table.find_mut(hash, |s| *s.token == *token) {
            return Some(std::mem::replace(&mut slot.value, value));
        }
        let mut evicted = None;
        while table.len() >= self.capacity {
            let Some((hash, number)) = order.pop_front() else {
                break;
            };
            if let Ok(oldest) = table.find_entry(hash, |s| s.number == number) {
                evicted = Some(oldest.remove().0.value);
            }
        }
        let number = *next;
        *next += 1;
        order.push_back((hash, number));
        let slot = Slot {
            token: token.into(),
            hash,
            number,
            value,
        };
        table.insert_unique(hash, slot, |s| s.hash);
        evicted
    }

    /// Number of tokens kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().expect("token cache lock").table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &TokenCache<u32>, token: &str, value: u32) {
        let hash = cache.hash(token);
        cache.insert(token, hash, value);
    }

    fn get(cache: &TokenCache<u32>, token: &str) -> Option<u32> {
        cache.get(token, cache.hash(token))
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_entry_only() {
        let cache = TokenCache::new(3);
        for (i, token) in ["a", "b", "c", "d"].into_iter().enumerate() {
            put(&cache, token, i as u32);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(get(&cache, "a"), None);
        assert_eq!(
            ["b", "c", "d"].map(|t| get(&cache, t)),
            [Some(1), Some(2), Some(3)]
        );
    }

    #[test]
    fn a_token_kept_again_replaces_its_value_and_keeps_its_age() {
        let cache = TokenCache::new(2);
        put(&cache, "a", 1);
        put(&cache, "b", 2);
        put(&cache, "a", 3);
        assert_eq!((cache.len(), get(&cache, "a")), (2, Some(3)));
        put(&cache, "c", 4);
        assert_eq!(
            ["a", "b", "c"].map(|t| get(&cache, t)),
            [None, Some(2), Some(4)]
        );
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.order.len(), entries.table.len());
    }

    #[test]
    fn tokens_differing_anywhere_are_different_entries() {
        let cache = TokenCache::new(10);
        put(&cache, "h.p.s1", 1);
        put(&cache, "h.p.s2", 2);
        assert_eq!(get(&cache, "h.p.s1"), Some(1));
        assert_eq!(get(&cache, "h.p.s"), None);
    }
}
