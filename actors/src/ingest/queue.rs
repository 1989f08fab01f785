//! The bounded worker queue: an in-flight count in front of the SyncArbiter's mailbox.
//!
//! actix's SyncArbiter mailbox is unbounded and `try_send` never reports Full for it, so the
//! bound lives here. A [`QueuePermit`] is taken for each heartbeat before it is answered 200;
//! permits of a batch are merged and travel with it; the worker marks it
//! [`QueuePermit::processed`] once the Manager has applied it. The count is therefore
//! "accepted but not yet processed", which is also what the drain at shutdown waits on.
//!
//! A permit dropped without being marked processed means accepted heartbeats were lost on the
//! way (which must never happen); [`IngressQueue::lost`] counts them so the drain can say so.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The in-flight count shared by the HTTP layer (acquire) and the workers (release).
#[derive(Debug)]
pub struct IngressQueue {
    /// Heartbeats accepted and not yet processed may never exceed this.
    capacity: usize,
    in_flight: AtomicUsize,
    lost: AtomicU64,
}

impl IngressQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            in_flight: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heartbeats accepted and not yet processed.
    pub fn depth(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Heartbeats whose permit was dropped unprocessed: accepted, then lost. Must stay 0.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Acquire)
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
                slots: 1,
                processed: false,
            })
    }
}

/// One slot of the queue; dropping it frees the slot.
#[derive(Debug)]
pub struct QueuePermit {
    queue: Arc<IngressQueue>,
    /// Heartbeats this permit stands for.
    slots: usize,
    processed: bool,
}

impl QueuePermit {
    /// Takes over `other`'s slots, so a batch holds one permit.
    pub fn merge(&mut self, mut other: QueuePermit) {
        self.slots += std::mem::take(&mut other.slots);
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Releases the slots of heartbeats that were processed.
    pub fn processed(mut self) {
        self.processed = true;
    }

    /// Releases the slot of a heartbeat that was refused after all (never answered 200), so
    /// it is not counted as lost.
    pub fn cancel(self) {
        self.processed();
    }
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        if !self.processed {
            self.queue.lost.fetch_add(self.slots as u64, Ordering::AcqRel);
        }
        self.queue.in_flight.fetch_sub(self.slots, Ordering::AcqRel);
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
        p1.processed();
        assert_eq!(q.depth(), 1);
        assert!(q.try_acquire().is_some_and(|p| {
            p.processed();
            true
        }));
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn merged_permits_release_together_and_unprocessed_ones_count_as_lost() {
        let q = IngressQueue::new(10);
        let mut batch = q.try_acquire().unwrap();
        batch.merge(q.try_acquire().unwrap());
        batch.merge(q.try_acquire().unwrap());
        assert_eq!((batch.slots(), q.depth()), (3, 3));
        batch.processed();
        assert_eq!((q.depth(), q.lost()), (0, 0));

        let dropped = q.try_acquire().unwrap();
        drop(dropped);
        assert_eq!((q.depth(), q.lost()), (0, 1));
    }

    #[test]
    fn concurrent_acquires_never_exceed_capacity() {
        let q = IngressQueue::new(8);
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).filter_map(|_| q.try_acquire()).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 8);
        assert_eq!(q.depth(), 8);
        held.into_iter().for_each(QueuePermit::processed);
        assert_eq!(q.depth(), 0);
    }
}
