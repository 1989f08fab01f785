//! The bounded worker queue: an in-flight count in front of the SyncArbiter's mailbox.
//!
//! actix's SyncArbiter mailbox is unbounded and `try_send` never reports Full for it, so the
//! bound lives here. A [`QueuePermit`] is taken before a heartbeat is sent to the pool and
//! travels with it; the worker drops it once the heartbeat is processed (and on disk). The
//! count is therefore "accepted but not yet processed", which is also what the drain at
//! shutdown waits on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the HTTP layer learns when it asks for room in the queue.
#[derive(Debug)]
pub enum Admission {
    /// Room was taken; send the permit along with the heartbeat.
    Admitted(QueuePermit),
    /// The queue is full. `first_of_episode` is true for the first rejection since the queue
    /// last had room, so the caller logs one WARNING per episode instead of one per request.
    Full { first_of_episode: bool },
}

/// The in-flight count shared by the HTTP layer (acquire) and the workers (release).
#[derive(Debug)]
pub struct IngressQueue {
    /// Heartbeats accepted and not yet processed may never exceed this.
    capacity: usize,
    in_flight: AtomicUsize,
    /// Set while the queue is rejecting; cleared by the next admission.
    full: AtomicBool,
    /// Rejections in the current or last full episode, reported when it ends.
    rejected_in_episode: AtomicU64,
}

impl IngressQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            in_flight: AtomicUsize::new(0),
            full: AtomicBool::new(false),
            rejected_in_episode: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heartbeats accepted and not yet processed.
    pub fn depth(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes one slot if there is room. Never blocks.
    ///
    /// When this admission ends a full episode, the returned permit says how many requests that
    /// episode rejected ([`QueuePermit::ended_full_episode`]).
    pub fn try_acquire(self: &Arc<Self>) -> Admission {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.rejected_in_episode.fetch_add(1, Ordering::Relaxed);
            let first_of_episode = !self.full.swap(true, Ordering::AcqRel);
            return Admission::Full { first_of_episode };
        }
        let ended_full_episode =
            if self.full.load(Ordering::Relaxed) && self.full.swap(false, Ordering::AcqRel) {
                Some(self.rejected_in_episode.swap(0, Ordering::Relaxed))
            } else {
                None
            };
        Admission::Admitted(QueuePermit {
            queue: Arc::clone(self),
            ended_full_episode,
        })
    }
}

/// One slot of the queue; dropping it frees the slot.
#[derive(Debug)]
pub struct QueuePermit {
    queue: Arc<IngressQueue>,
    ended_full_episode: Option<u64>,
}

impl QueuePermit {
    /// `Some(rejected)` when this admission was the first after a full episode.
    pub fn ended_full_episode(&self) -> Option<u64> {
        self.ended_full_episode
    }
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        self.queue.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> QueuePermit {
        match a {
            Admission::Admitted(p) => p,
            Admission::Full { .. } => panic!("expected room in the queue"),
        }
    }

    #[test]
    fn admits_up_to_capacity_then_rejects_until_a_permit_is_dropped() {
        let q = IngressQueue::new(2);
        let p1 = admitted(q.try_acquire());
        let _p2 = admitted(q.try_acquire());
        assert_eq!(q.depth(), 2);
        assert!(matches!(
            q.try_acquire(),
            Admission::Full {
                first_of_episode: true
            }
        ));
        assert!(matches!(
            q.try_acquire(),
            Admission::Full {
                first_of_episode: false
            }
        ));
        drop(p1);
        assert_eq!(q.depth(), 1);
        let p3 = admitted(q.try_acquire());
        assert_eq!(
            p3.ended_full_episode(),
            Some(2),
            "the episode rejected two requests"
        );
        drop(p3);
        let p4 = admitted(q.try_acquire());
        assert_eq!(p4.ended_full_episode(), None);
    }

    #[test]
    fn concurrent_acquires_never_exceed_capacity() {
        let q = IngressQueue::new(8);
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter_map(|_| match q.try_acquire() {
                                Admission::Admitted(p) => Some(p),
                                Admission::Full { .. } => None,
                            })
                            .collect::<Vec<_>>()
                    })
                })
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
