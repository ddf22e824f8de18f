//! The way from the request threads to an audit writer thread: each request thread appends to
//! a batch of its own (its lane), and the writer swaps whole batches out every so often. A
//! request writes only memory that its thread alone writes between the writer's visits: no
//! queue, lock or counter is shared by the request threads (sharing one costs each request a
//! cache line moved between cores). Bounded: a lane refuses items once it holds `capacity`
//! lines or [`LANE_BYTES`] of them. The writer parks when there is nothing to do; an append
//! wakes it only when it is parked idle or when the lane fills up to `wake_at`.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

/// How long an idle writer parks before it looks at the lanes again.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes of lines a lane holds at most before it refuses more (besides its line count).
pub const LANE_BYTES: usize = 8 << 20;

/// What a request thread hands over: formatted lines, and items the writer finishes itself.
#[derive(Debug)]
pub struct Batch<T> {
    /// Lines, each ending with a newline.
    pub lines: Vec<u8>,
    /// Lines in `lines` and `items` (an item counts for one).
    pub count: usize,
    /// Items for the writer to turn into lines.
    pub items: Vec<T>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            lines: Vec::new(),
            count: 0,
            items: Vec::new(),
        }
    }
}

impl<T> Batch<T> {
    /// Whether nothing waits in it.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.items.is_empty()
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.items.clear();
        self.count = 0;
    }
}

/// One request thread's batch, and what that thread keeps from request to request (`S`,
/// untouched by the writer).
struct Lane<T, S> {
    inner: Mutex<(Batch<T>, S)>,
}

impl<T, S> Lane<T, S> {
    fn lock(&self) -> MutexGuard<'_, (Batch<T>, S)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Flags read by every append: on a cache line of their own, written only when the writer goes
/// idle, a lane fills up or the writer stops.
#[repr(align(128))]
struct Flags {
    /// The writer is parked with nothing to do: the next append wakes it.
    idle: AtomicBool,
    /// A lane reached `wake_at`: the writer stops gathering.
    urgent: AtomicBool,
    /// The writer is gone (it stopped): appends are refused.
    gone: AtomicBool,
}

/// The state shared by the senders and the writer.
pub struct Hub<T, S> {
    flags: Flags,
    /// Tells the lanes of this hub from those of others in a thread's list.
    id: u64,
    /// Lines a lane holds at most.
    capacity: usize,
    /// Lines in a lane that wake a writer still gathering.
    wake_at: usize,
    /// Every thread's lane.
    lanes: Mutex<Vec<Arc<Lane<T, S>>>>,
    /// Senders alive; none left: the writer writes the rest and stops.
    senders: AtomicUsize,
}

impl<T, S> Hub<T, S> {
    fn lanes(&self) -> MutexGuard<'_, Vec<Arc<Lane<T, S>>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tells hubs apart.
static HUBS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's lanes, by hub.
    static LANES: RefCell<Vec<(u64, Arc<dyn Any + Send + Sync>)>> = const { RefCell::new(Vec::new()) };
}

/// A hub with no writer yet: becomes its first [`Sender`] once the writer's thread runs.
pub struct Pending<T, S>(Arc<Hub<T, S>>);

/// A way to append to a writer's lanes, cloned for each user; the last one gone wakes the
/// writer.
pub struct Sender<T, S> {
    hub: Arc<Hub<T, S>>,
    writer: Thread,
}

/// The writer's end.
pub struct Receiver<T, S> {
    hub: Arc<Hub<T, S>>,
}

/// Lanes of at most `capacity` lines each, whose writer is woken from gathering when one holds
/// `wake_at`.
pub fn channel<T, S>(capacity: usize, wake_at: usize) -> (Pending<T, S>, Receiver<T, S>) {
    let hub = Arc::new(Hub {
        flags: Flags {
            idle: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        },
        id: HUBS.fetch_add(1, Ordering::Relaxed),
        capacity,
        wake_at,
        lanes: Mutex::new(Vec::new()),
        // The pending sender.
        senders: AtomicUsize::new(1),
    });
    (Pending(hub.clone()), Receiver { hub })
}

impl<T, S> Pending<T, S> {
    /// The first sender, waking `writer`.
    pub fn sender(self, writer: Thread) -> Sender<T, S> {
        let hub = self.0.clone();
        // The pending sender's count passes to the sender.
        std::mem::forget(self);
        Sender { hub, writer }
    }
}

impl<T, S> Drop for Pending<T, S> {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T: Send + 'static, S: Default + Send + 'static> Sender<T, S> {
    /// Appends to this thread's lane with `append`, which gets the lane's batch and the thread's
    /// state and returns how many lines it added. `false` (and `append` not called) when the
    /// lane is full or the writer gone. Wakes the writer when it is idle or once the lane holds
    /// [`channel`]'s `wake_at` lines (a system call only then).
    pub fn append(&self, append: impl FnOnce(&mut Batch<T>, &mut S) -> usize) -> bool {
        let hub = &*self.hub;
        if hub.flags.gone.load(Ordering::Acquire) {
            return false;
        }
        let count = LANES.with_borrow_mut(|lanes| {
            let lane = match lanes.iter().position(|(id, _)| *id == hub.id) {
                Some(at) => &lanes[at].1,
                None => self.register(lanes),
            };
            let lane = lane
                .downcast_ref::<Lane<T, S>>()
                .expect("a hub's lanes are of its type");
            let mut inner = lane.lock();
            let (batch, state) = &mut *inner;
            if batch.count >= hub.capacity || batch.lines.len() >= LANE_BYTES {
                return None;
            }
            batch.count += append(batch, state);
            Some(batch.count)
        });
        let Some(count) = count else { return false };
        // The writer marks itself idle before it looks at the lanes a last time and parks; the
        // lane's lock orders that look and this append.
        if count >= hub.wake_at {
            // Looked at first: once set, the flag's line is not written again by every append.
            if !hub.flags.urgent.load(Ordering::Acquire)
                && !hub.flags.urgent.swap(true, Ordering::AcqRel)
            {
                self.writer.unpark();
            }
        } else if hub.flags.idle.load(Ordering::SeqCst) {
            self.writer.unpark();
        }
        true
    }

    /// A new lane for this thread, registered with the hub; lanes of stopped writers go.
    #[cold]
    fn register<'l>(
        &self,
        lanes: &'l mut Vec<(u64, Arc<dyn Any + Send + Sync>)>,
    ) -> &'l Arc<dyn Any + Send + Sync> {
        // A stopped writer let go of its lanes: this thread holds the last reference.
        lanes.retain(|(_, lane)| Arc::strong_count(lane) > 1);
        let lane = Arc::new(Lane {
            inner: Mutex::new((Batch::<T>::default(), S::default())),
        });
        self.hub.lanes().push(lane.clone());
        lanes.push((self.hub.id, lane));
        &lanes.last().expect("just pushed").1
    }

    /// The shared state.
    pub fn hub(&self) -> &Arc<Hub<T, S>> {
        &self.hub
    }

    /// Whether the writer is gone.
    pub fn is_closed(&self) -> bool {
        self.hub.flags.gone.load(Ordering::Acquire)
    }
}

impl<T, S> Clone for Sender<T, S> {
    fn clone(&self) -> Self {
        self.hub.senders.fetch_add(1, Ordering::AcqRel);
        Sender {
            hub: self.hub.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<T, S> Drop for Sender<T, S> {
    /// The writer learns at once that a sender is gone: once all are, it writes the rest
    /// without waiting for the end of its gathering time.
    fn drop(&mut self) {
        self.hub.senders.fetch_sub(1, Ordering::AcqRel);
        self.writer.unpark();
    }
}

impl<T, S> Receiver<T, S> {
    /// Swaps every lane's batch that holds something with an empty one of `spare` (grown to
    /// as many as there are lanes; the batches taken are left there, the others empty). Lanes
    /// of threads gone are let go of once empty.
    pub fn take(&self, spare: &mut Vec<Batch<T>>) {
        // Taken before the lanes: a lane that fills up from now on wakes the writer again.
        self.hub.flags.urgent.store(false, Ordering::Release);
        let mut lanes = self.hub.lanes();
        lanes.retain(|lane| Arc::strong_count(lane) > 1 || !lane.lock().0.is_empty());
        if spare.len() < lanes.len() {
            spare.resize_with(lanes.len(), Batch::default);
        }
        for (lane, into) in lanes.iter().zip(spare.iter_mut()) {
            let mut inner = lane.lock();
            if !inner.0.is_empty() {
                std::mem::swap(&mut inner.0, into);
            }
        }
    }

    /// Whether any lane holds something.
    pub fn has_any(&self) -> bool {
        self.hub
            .lanes()
            .iter()
            .any(|lane| !lane.lock().0.is_empty())
    }

    /// Whether a lane reached `wake_at` since the last [`Receiver::take`].
    pub fn is_urgent(&self) -> bool {
        self.hub.flags.urgent.load(Ordering::Acquire)
    }

    /// Whether every sender is gone.
    pub fn is_closed(&self) -> bool {
        self.hub.senders.load(Ordering::Acquire) == 0
    }

    /// Parks until a lane holds something or `wanted` (looked at each time the writer is
    /// woken); `false` once every sender is gone and nothing waits.
    pub fn wait(&self, wanted: impl Fn() -> bool) -> bool {
        loop {
            if self.has_any() || wanted() {
                return true;
            }
            if self.is_closed() {
                // A last look: a sender may have appended before it went.
                return self.has_any();
            }
            self.hub.flags.idle.store(true, Ordering::SeqCst);
            // Appended since the look: not parked on.
            if !self.has_any() && !self.is_closed() {
                // A second at most: a wake-up lost all the same would only delay a line.
                std::thread::park_timeout(IDLE);
            }
            self.hub.flags.idle.store(false, Ordering::SeqCst);
        }
    }
}

impl<T, S> Drop for Receiver<T, S> {
    /// Appends are refused from now on, and the lanes go with their threads.
    fn drop(&mut self) {
        self.hub.flags.gone.store(true, Ordering::Release);
        self.hub.lanes().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Appends `n` as a line; the state counts this thread's appends.
    fn push(tx: &Sender<u32, usize>, n: u32) -> bool {
        tx.append(|batch, appended| {
            *appended += 1;
            batch.lines.extend_from_slice(format!("{n}\n").as_bytes());
            1
        })
    }

    fn text(batch: &Batch<u32>) -> String {
        String::from_utf8(batch.lines.clone()).unwrap()
    }

    #[test]
    fn each_thread_appends_to_its_own_lane_taken_whole() {
        let (pending, rx) = channel::<u32, usize>(100, 100);
        let tx = pending.sender(std::thread::current());
        assert!(push(&tx, 1) && push(&tx, 2));
        let other = tx.clone();
        std::thread::spawn(move || {
            assert!(push(&other, 10));
            assert!(other.append(|batch, _| {
                batch.items.push(11);
                1
            }));
        })
        .join()
        .unwrap();
        let mut spare = Vec::new();
        rx.take(&mut spare);
        assert_eq!(spare.len(), 2);
        assert_eq!((text(&spare[0]), spare[0].count), ("1\n2\n".into(), 2));
        assert_eq!((text(&spare[1]), spare[1].count), ("10\n".into(), 2));
        assert_eq!(spare[1].items, [11]);
        assert!(!rx.has_any(), "the lanes were left empty");
        // The thread's state stays with the lane; the other thread's lane went once emptied.
        spare.iter_mut().for_each(Batch::clear);
        assert!(push(&tx, 3));
        rx.take(&mut spare);
        assert_eq!(text(&spare[0]), "3\n");
        let lanes = rx.hub.lanes();
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].lock().1, 3);
    }

    #[test]
    fn a_full_lane_refuses_and_others_still_take() {
        let (pending, rx) = channel::<u32, usize>(3, 100);
        let tx = pending.sender(std::thread::current());
        for i in 0..3 {
            assert!(push(&tx, i));
        }
        assert!(!push(&tx, 3), "full");
        let other = tx.clone();
        std::thread::spawn(move || assert!(push(&other, 20), "another thread's lane has room"))
            .join()
            .unwrap();
        let mut spare = Vec::new();
        rx.take(&mut spare);
        assert_eq!(text(&spare[0]), "0\n1\n2\n");
        assert_eq!(text(&spare[1]), "20\n");
        assert!(push(&tx, 4), "room again once taken");
        // A writer gone refuses.
        drop(rx);
        assert!(!push(&tx, 5));
        assert!(tx.is_closed());
    }

    #[test]
    fn a_lane_refuses_beyond_its_bytes() {
        let (pending, rx) = channel::<u32, ()>(100, 100);
        let tx = pending.sender(std::thread::current());
        let large = |batch: &mut Batch<u32>, _: &mut ()| {
            batch.lines.resize(batch.lines.len() + LANE_BYTES / 2, b'x');
            1
        };
        assert!(tx.append(large) && tx.append(large));
        assert!(!tx.append(large));
        drop(rx);
    }

    #[test]
    fn a_parked_writer_is_woken_by_an_append_and_by_the_last_sender_going() {
        let (pending, rx) = channel::<u32, usize>(100, 100);
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut spare = Vec::new();
            while rx.wait(|| false) {
                rx.take(&mut spare);
                let taken: String = spare.iter().map(text).collect();
                spare.iter_mut().for_each(Batch::clear);
                seen_tx.send(taken).unwrap();
            }
        });
        let tx = pending.sender(writer.thread().clone());
        let hang = Duration::from_secs(60);
        for round in 0..50 {
            assert!(push(&tx, round));
            assert_eq!(seen.recv_timeout(hang).unwrap(), format!("{round}\n"));
        }
        drop(tx);
        writer.join().unwrap();
    }

    #[test]
    fn a_lane_reaching_wake_at_is_urgent_until_taken() {
        let (pending, rx) = channel::<u32, usize>(100, 3);
        let tx = pending.sender(std::thread::current());
        assert!(push(&tx, 0) && push(&tx, 1));
        assert!(!rx.is_urgent());
        assert!(push(&tx, 2));
        assert!(rx.is_urgent());
        rx.take(&mut Vec::new());
        assert!(!rx.is_urgent());
    }

    #[test]
    fn a_pending_hub_dropped_is_closed() {
        let (pending, rx) = channel::<u32, ()>(1, 1);
        assert!(!rx.is_closed());
        drop(pending);
        assert!(rx.is_closed());
        assert!(!rx.wait(|| false));
    }
}
