//! The policy in force as one serving thread holds it.
//!
//! Every request needs the policy for as long as it runs. Cloning the shared `Arc<Runtime>` for
//! each one would make every serving thread write the same reference count, a cache line that
//! then moves between cores on every request. Instead each thread keeps the policy it last saw
//! in a thread-local, wrapped in an `Arc` of its own, and hands requests clones of that: only
//! the thread serving them writes its count. A reload is seen by the next request, which finds
//! the shared pointer changed (one plain load, no write) and wraps the new policy.

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use super::SharedRuntime;
use crate::runtime::Runtime;

/// A request's hold on the policy in force: sendable, and counted by its own thread only.
#[expect(
    clippy::redundant_allocation,
    reason = "the outer Arc is the thread's own count"
)]
pub struct Snapshot<T = Runtime>(Arc<Arc<T>>);

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot(self.0.clone())
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a thread holds of one shared value: the value it last saw, and its own handle on it.
struct Held<T> {
    /// Follows the shared value with a pointer comparison while it is unchanged.
    seen: Cache<Arc<ArcSwap<T>>, Arc<T>>,
    /// The thread's handle on the value `seen` holds.
    local: Snapshot<T>,
}

impl<T> Held<T> {
    fn new(shared: &Arc<ArcSwap<T>>) -> Self {
        let mut seen = Cache::new(shared.clone());
        let local = Snapshot(Arc::new(seen.load().clone()));
        Held { seen, local }
    }

    /// Whether this follows `shared`.
    fn follows(&self, shared: &Arc<ArcSwap<T>>) -> bool {
        std::ptr::eq(self.seen.arc_swap(), &**shared)
    }

    /// Whether the shared value is no longer the one this thread's handle holds.
    fn replaced(&mut self) -> bool {
        !Arc::ptr_eq(self.seen.load(), &self.local.0)
    }

    /// The current value, as this thread's handle.
    fn current(&mut self) -> Snapshot<T> {
        let shared = self.seen.load();
        if !Arc::ptr_eq(shared, &self.local.0) {
            self.local = Snapshot(Arc::new(shared.clone()));
        }
        self.local.clone()
    }
}

thread_local! {
    static HELD: RefCell<Option<Held<Runtime>>> = const { RefCell::new(None) };
}

/// The policy in force in `serving`, for one request on this thread.
pub fn current(serving: &SharedRuntime) -> Snapshot {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        match &mut *held {
            Some(held) if held.follows(serving) => held.current(),
            // First use on this thread, or another sidecar's policy (tests serve several).
            slot => slot.insert(Held::new(serving)).current(),
        }
    })
}

/// Lets go of the policy this thread holds if a reload replaced it, so that it is freed (its
/// tasks stopped, its files closed) once the requests still using it end, even if this thread
/// serves no other request. A serving thread calls it now and then.
pub fn release_replaced() {
    let replaced = HELD.with(|held| {
        let mut held = held.borrow_mut();
        held.take_if(|held| held.replaced())
    });
    drop(replaced);
}

/// Lets go of the policy this thread holds. A serving thread calls it when it stops.
pub fn release() {
    let held = HELD.with(|held| held.borrow_mut().take());
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_its_own_handle_until_the_shared_value_changes() {
        let shared = Arc::new(ArcSwap::from_pointee(1));
        let mut held = Held::new(&shared);
        let (a, b) = (held.current(), held.current());
        assert!(Arc::ptr_eq(&a.0, &b.0), "clones of one handle");
        // Requests hold the thread's handle, not the shared value.
        assert_eq!(Arc::strong_count(&shared.load_full()), 4);
        shared.store(Arc::new(2));
        let c = held.current();
        assert_eq!((*a, *c), (1, 2), "the next request sees the change");
        assert!(!held.replaced());
        shared.store(Arc::new(3));
        assert!(held.replaced());
        assert!(held.follows(&shared));
        assert!(!held.follows(&Arc::new(ArcSwap::from_pointee(2))));
    }
}
