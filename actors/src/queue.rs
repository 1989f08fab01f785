//! The bounded worker queue: an in-flight count in front of the SyncArbiter's mailbox.
//!
//! actix's SyncArbiter mailbox is unbounded and `try_send` never reports Full for it, so the
//! bound lives here. A [`QueuePermit`] is taken before a heartbeat is sent to the pool and
//! travels with it; the worker drops it once the heartbeat is processed (and on disk). The
//! count is therefore "accepted but not yet processed", which is also what the drain at
//! shutdown waits on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The in-flight count shared by the HTTP layer (acquire) and the workers (release).
#[derive(Debug)]
pub struct IngressQueue {
    /// Heartbeats accepted and not yet processed may never exceed this.
    capacity: usize,
    in_flight: AtomicUsize,
}

impl IngressQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            in_flight: AtomicUsize::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heartbeats accepted and not yet processed.
    pub fn depth(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes one slot if there is room; `None` when the queue is full. Never blocks.
    pub fn try_acquire(self: &Arc<Self>) -> Option<QueuePermit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| QueuePermit {
                queue: Arc::clone(self),
            })
    }
}

/// One slot of the queue; dropping it frees the slot.
#[derive(Debug)]
pub struct QueuePermit {
    queue: Arc<IngressQueue>,
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        self.queue.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_capacity_then_rejects_until_a_permit_is_dropped() {
        let q = IngressQueue::new(2);
        let p1 = q.try_acquire().expect("room");
        let _p2 = q.try_acquire().expect("room");
        assert_eq!(q.depth(), 2);
        assert!(q.try_acquire().is_none());
        drop(p1);
        assert_eq!(q.depth(), 1);
        assert!(q.try_acquire().is_some());
    }

    #[test]
    fn concurrent_acquires_never_exceed_capacity() {
        let q = IngressQueue::new(8);
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).filter_map(|_| q.try_acquire()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(held.len(), 8);
        assert_eq!(q.depth(), 8);
        drop(held);
        assert_eq!(q.depth(), 0);
    }
}
