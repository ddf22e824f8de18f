//! A small per-thread front to the verified-token cache.
//!
//! The shared cache sits behind a lock and hands out clones of one `Arc<Principal>` per token,
//! so each hit writes cache lines that every serving thread writes too, and those lines move
//! between cores on every request. The front keeps the few tokens this thread sees most, each
//! with a copy of its principal in an allocation of the thread's own: a hit takes no lock and
//! writes nothing another thread writes.
//!
//! An entry is answered under the shared cache's conditions (the same key-set generation, and
//! before `valid_until`, which is copied from the shared entry), so it never outlives the entry
//! it came from. A token enters on its second shared-cache hit on this thread: a stream of
//! distinct tokens, each seen again only after many others, does not churn the front.

use std::cell::RefCell;
use std::sync::Arc;

use super::{Cached, Principal};

/// Most tokens one thread keeps.
const SLOTS: usize = 32;
/// Shared-cache hits one thread remembers, to admit a token the second time it is hit.
const RECENT: usize = 32;

/// Which verifier verified a token, and the token's hash in that verifier's cache.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    /// [`super::Verifier`]'s number, never 0.
    pub verifier: u64,
    pub hash: u64,
}

/// Never the key of a token: verifiers are numbered from 1.
const NO_KEY: Key = Key {
    verifier: 0,
    hash: 0,
};

struct Entry {
    key: Key,
    token: Box<str>,
    cached: Cached,
}

/// One thread's tokens.
struct Front {
    entries: Vec<Entry>,
    /// The entry the next admitted token replaces once the front is full (the oldest).
    oldest: usize,
    /// Keys of recent shared-cache hits not admitted yet.
    recent: [Key; RECENT],
    /// The item of `recent` the next hit replaces.
    next_recent: usize,
}

impl Front {
    const fn new() -> Self {
        Front {
            entries: Vec::new(),
            oldest: 0,
            recent: [NO_KEY; RECENT],
            next_recent: 0,
        }
    }

    fn find(&self, key: Key, token: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.key == key && *e.token == *token)
    }

    fn get(&self, key: Key, token: &str, generation: u64, now: u64) -> Option<Arc<Principal>> {
        let entry = &self.entries[self.find(key, token)?];
        entry
            .cached
            .fresh(generation, now)
            .then(|| entry.cached.principal.clone())
    }

    fn offer(&mut self, key: Key, token: &str, hit: &Cached) -> Option<Arc<Principal>> {
        let own = |hit: &Cached| Cached {
            principal: Arc::new(Principal::clone(&hit.principal)),
            ..*hit
        };
        // Kept before and gone stale (a new key set, or past its time): renewed in place.
        if let Some(at) = self.find(key, token) {
            let entry = &mut self.entries[at];
            entry.cached = own(hit);
            return Some(entry.cached.principal.clone());
        }
        let Some(seen) = self.recent.iter().position(|k| *k == key) else {
            self.recent[self.next_recent] = key;
            self.next_recent = (self.next_recent + 1) % RECENT;
            return None;
        };
        self.recent[seen] = NO_KEY;
        let entry = Entry {
            key,
            token: token.into(),
            cached: own(hit),
        };
        let principal = entry.cached.principal.clone();
        if self.entries.len() < SLOTS {
            self.entries.push(entry);
        } else {
            self.entries[self.oldest] = entry;
            self.oldest = (self.oldest + 1) % SLOTS;
        }
        Some(principal)
    }
}

thread_local! {
    static FRONT: RefCell<Front> = const { RefCell::new(Front::new()) };
}

/// This thread's principal for `token`, if it keeps one that is still fresh at `generation`
/// (of the key set in force) and `now` (seconds since the epoch).
pub(super) fn get(key: Key, token: &str, generation: u64, now: u64) -> Option<Arc<Principal>> {
    FRONT.with(|front| front.borrow().get(key, token, generation, now))
}

/// Tells this thread's front of a fresh shared-cache hit for `token`: the thread's own copy of
/// its principal if the token is (now) kept in the front, `None` if not.
pub(super) fn offer(key: Key, token: &str, hit: &Cached) -> Option<Arc<Principal>> {
    FRONT.with(|front| front.borrow_mut().offer(key, token, hit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000;

    fn hit(generation: u64, valid_until: u64) -> Cached {
        Cached {
            principal: Arc::new(Principal {
                claims: Default::default(),
                scopes: Default::default(),
                expires_at: valid_until,
            }),
            generation,
            valid_until,
        }
    }

    fn key(hash: u64) -> Key {
        Key { verifier: 1, hash }
    }

    /// Offers `cached` for `token` until it is admitted; returns the front's copy.
    fn admit(front: &mut Front, token: &str, cached: &Cached) -> Arc<Principal> {
        let key = key(token.len() as u64);
        front
            .offer(key, token, cached)
            .or_else(|| front.offer(key, token, cached))
            .expect("admitted on the second hit")
    }

    #[test]
    fn a_token_hit_twice_is_answered_from_a_copy_of_its_own() {
        let mut front = Front::new();
        let shared = hit(7, NOW + 60);
        assert!(front.offer(key(3), "abc", &shared).is_none(), "first hit");
        assert!(front.get(key(3), "abc", 7, NOW).is_none());
        let own = front.offer(key(3), "abc", &shared).expect("second hit");
        assert!(
            !Arc::ptr_eq(&own, &shared.principal),
            "a separate allocation"
        );
        let again = front.get(key(3), "abc", 7, NOW).expect("kept");
        assert!(Arc::ptr_eq(&own, &again));
        assert_eq!(again.expires_at, NOW + 60);
    }

    #[test]
    fn another_token_or_verifier_is_a_miss() {
        let mut front = Front::new();
        admit(&mut front, "abc", &hit(7, NOW + 60));
        assert!(front.get(key(3), "abd", 7, NOW).is_none(), "same hash");
        assert!(front.get(key(4), "abcd", 7, NOW).is_none());
        let other = Key {
            verifier: 2,
            hash: 3,
        };
        assert!(front.get(other, "abc", 7, NOW).is_none());
    }

    #[test]
    fn a_new_key_set_or_the_end_of_validity_is_a_miss_until_renewed() {
        let mut front = Front::new();
        admit(&mut front, "abc", &hit(7, NOW + 60));
        assert!(front.get(key(3), "abc", 8, NOW).is_none(), "generation");
        assert!(front.get(key(3), "abc", 7, NOW + 60).is_none(), "expired");
        assert!(front.get(key(3), "abc", 7, NOW + 59).is_some());
        // Verified again (a new shared entry): renewed on its first hit, in place.
        let renewed = front.offer(key(3), "abc", &hit(8, NOW + 120)).unwrap();
        assert_eq!(renewed.expires_at, NOW + 120);
        assert!(front.get(key(3), "abc", 8, NOW + 100).is_some());
        assert_eq!(front.entries.len(), 1);
    }

    #[test]
    fn keeps_at_most_its_size_replacing_the_oldest() {
        let mut front = Front::new();
        let tokens: Vec<String> = (1..=SLOTS + 2).map(|n| "t".repeat(n)).collect();
        for token in &tokens {
            admit(&mut front, token, &hit(7, NOW + 60));
        }
        assert_eq!(front.entries.len(), SLOTS);
        let kept = |t: &String| front.get(key(t.len() as u64), t, 7, NOW).is_some();
        assert!(!kept(&tokens[0]) && !kept(&tokens[1]));
        assert!(tokens[2..].iter().all(kept));
    }

    #[test]
    fn tokens_hit_once_each_are_not_admitted() {
        let mut front = Front::new();
        for n in 1..=RECENT * 3 {
            let token = "t".repeat(n);
            assert!(
                front
                    .offer(key(n as u64), &token, &hit(7, NOW + 60))
                    .is_none()
            );
        }
        assert!(front.entries.is_empty());
    }

    #[test]
    fn each_thread_has_its_own_front() {
        let shared = hit(7, NOW + 60);
        assert!(offer(key(3), "abc", &shared).is_none());
        let own = offer(key(3), "abc", &shared).unwrap();
        assert!(Arc::ptr_eq(&get(key(3), "abc", 7, NOW).unwrap(), &own));
        let elsewhere = std::thread::spawn({
            let shared = shared.clone();
            move || {
                let missed = get(key(3), "abc", 7, NOW).is_none();
                let first = offer(key(3), "abc", &shared).is_none();
                (missed, first, offer(key(3), "abc", &shared).unwrap())
            }
        })
        .join()
        .unwrap();
        assert!(elsewhere.0 && elsewhere.1, "not kept on a new thread");
        assert!(!Arc::ptr_eq(&elsewhere.2, &own), "a copy of its own");
    }
}
