//! The queue from the request threads to an audit writer thread: a vector under a lock that the
//! writer takes whole, so a request costs a push and the writer moves nothing item by item (a
//! channel copies each item in and out of its blocks and counts permits for each). Bounded: a
//! push to a full queue is refused. The writer parks when there is nothing to do; a push wakes
//! it only when it is parked idle or when many items wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

/// How long an idle writer parks before it looks at the queue again.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The state shared by the senders and the writer.
pub struct Shared<T> {
    items: Mutex<Vec<T>>,
    /// Items refused beyond this many waiting.
    capacity: usize,
    /// Items waiting that wake a writer still gathering.
    wake_at: usize,
    /// Senders alive; none left: the writer writes the rest and stops.
    senders: AtomicUsize,
    /// The writer is parked with nothing to do: the next push wakes it.
    idle: AtomicBool,
    /// The writer's end is gone (it stopped): pushes are refused.
    gone: AtomicBool,
}

impl<T> Shared<T> {
    fn items(&self) -> MutexGuard<'_, Vec<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` whatever the capacity (a flush at shutdown).
    pub fn push_anyway(&self, item: T) {
        self.items().push(item);
    }
}

/// A queue with no writer yet: becomes its first [`Sender`] once the writer's thread runs.
pub struct Pending<T>(Arc<Shared<T>>);

/// A way to queue items for a writer, cloned for each user; the last one gone wakes the writer.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
    writer: Thread,
}

/// The writer's end.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue of at most `capacity` items whose writer is woken from gathering at `wake_at`.
pub fn channel<T>(capacity: usize, wake_at: usize) -> (Pending<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        items: Mutex::new(Vec::new()),
        capacity,
        wake_at,
        // The pending sender.
        senders: AtomicUsize::new(1),
        idle: AtomicBool::new(false),
        gone: AtomicBool::new(false),
    });
    (Pending(shared.clone()), Receiver { shared })
}

impl<T> Pending<T> {
    /// The first sender, waking `writer`.
    pub fn sender(self, writer: Thread) -> Sender<T> {
        let shared = self.0.clone();
        // The pending sender's count passes to the sender.
        std::mem::forget(self);
        Sender { shared, writer }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T> Sender<T> {
    /// Queues `item`, or gives it back when the queue is full. Wakes the writer when it is
    /// idle or once [`channel`]'s `wake_at` items wait (a system call only then).
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let mut items = self.shared.items();
        if items.len() >= self.shared.capacity || self.is_closed() {
            return Err(item);
        }
        items.push(item);
        let waiting = items.len();
        drop(items);
        // The writer marks itself idle before it looks at the queue a last time and parks.
        if waiting >= self.shared.wake_at || self.shared.idle.load(Ordering::SeqCst) {
            self.writer.unpark();
        }
        Ok(())
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared<T>> {
        &self.shared
    }

    /// Whether the writer is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        Sender {
            shared: self.shared.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    /// The writer learns at once that a sender is gone: once all are, it writes the rest
    /// without waiting for the end of its gathering time.
    fn drop(&mut self) {
        self.shared.senders.fetch_sub(1, Ordering::AcqRel);
        self.writer.unpark();
    }
}

impl<T> Receiver<T> {
    /// Moves every item waiting to the end of `into` (without moving them one by one when
    /// `into` is empty: the vectors are swapped).
    pub fn take(&self, into: &mut Vec<T>) {
        let mut items = self.shared.items();
        if into.is_empty() {
            std::mem::swap(&mut *items, into);
        } else {
            into.append(&mut items);
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.shared.items().len()
    }

    /// Whether every sender is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// Parks until an item waits; `false` once every sender is gone and nothing waits.
    pub fn wait(&self) -> bool {
        loop {
            if self.len() > 0 {
                return true;
            }
            if self.is_closed() {
                // A last look: a sender may have pushed before it went.
                return self.len() > 0;
            }
            self.shared.idle.store(true, Ordering::SeqCst);
            // Pushed since the look: not parked on.
            if self.len() == 0 && !self.is_closed() {
                // A second at most: a wake-up lost all the same would only delay a line.
                std::thread::park_timeout(IDLE);
            }
            self.shared.idle.store(false, Ordering::SeqCst);
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_order_and_a_full_queue_refuses() {
        let (pending, rx) = channel(3, 100);
        let tx = pending.sender(std::thread::current());
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(3), Err(3));
        let mut taken = Vec::new();
        rx.take(&mut taken);
        tx.try_send(4).unwrap();
        rx.take(&mut taken);
        assert_eq!(taken, [0, 1, 2, 4]);
        assert!(!rx.is_closed());
        let other = tx.clone();
        drop(tx);
        assert!(!rx.is_closed());
        drop(other);
        assert!(rx.is_closed());
    }

    #[test]
    fn a_parked_writer_is_woken_by_a_push_and_by_the_last_sender_going() {
        let (pending, rx) = channel::<u32>(100, 100);
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut taken = Vec::new();
            while rx.wait() {
                rx.take(&mut taken);
                seen_tx.send(std::mem::take(&mut taken)).unwrap();
            }
        });
        let tx = pending.sender(writer.thread().clone());
        let hang = Duration::from_secs(60);
        for round in 0..50 {
            tx.try_send(round).unwrap();
            assert_eq!(seen.recv_timeout(hang).unwrap(), [round]);
        }
        drop(tx);
        writer.join().unwrap();
    }

    #[test]
    fn a_pending_queue_dropped_is_closed() {
        let (pending, rx) = channel::<u32>(1, 1);
        assert!(!rx.is_closed());
        drop(pending);
        assert!(rx.is_closed());
        assert!(!rx.wait());
    }
}
