//! Hands accepted heartbeats to the worker pool in batches, one batch per HTTP thread.
//!
//! A message per heartbeat would wake the pool's forwarding task, a worker, the Manager and
//! Stats for every request: on two cores those wake-ups, not the work, set the ceiling. Here
//! the first heartbeat of a batch schedules a flush that first yields once, so every handler
//! that is ready in the same turn of the thread's event loop adds to the same batch. Under
//! load batches grow on their own; when idle a heartbeat waits one yield, and nothing runs on a
//! timer. A batch is sent at once when it reaches [`MAX_BATCH`].
//!
//! The batch's merged [`QueuePermit`] keeps the queue depth honest meanwhile, and the drain at
//! shutdown waits for it like for any other queued heartbeat.

use std::cell::RefCell;

use super::queue::QueuePermit;
use super::worker::{HeartbeatWorker, ProcessHeartbeats};
use crate::model::heartbeat::Heartbeat;
use actix::WeakAddr;

/// The most heartbeats one batch carries.
pub const MAX_BATCH: usize = 256;

#[derive(Default)]
struct Pending {
    heartbeats: Vec<Heartbeat>,
    permit: Option<QueuePermit>,
    flush_scheduled: bool,
    /// Where the batch goes if the thread ends before its scheduled flush ran.
    workers: Option<WeakAddr<HeartbeatWorker>>,
}

impl Drop for Pending {
    /// A graceful stop can end an HTTP thread between a heartbeat's 200 and the flush it
    /// scheduled (the stop drops the thread's tasks): the batch is sent from here instead of
    /// being dropped, so an answered heartbeat is never lost (the drain waits for its permit).
    fn drop(&mut self) {
        if let (Some(batch), Some(workers)) = (self.take(), self.workers.take()) {
            send(&workers, batch);
        }
    }
}

impl Pending {
    fn take(&mut self) -> Option<ProcessHeartbeats> {
        let permit = self.permit.take()?;
        Some(ProcessHeartbeats {
            heartbeats: std::mem::take(&mut self.heartbeats),
            permit,
        })
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// The pool is gone: heartbeatd is stopping.
#[derive(Debug)]
pub struct PoolClosed;

/// Adds an accepted heartbeat to this thread's batch. Fails (and frees the slot) only when the
/// pool is already closed, in which case the caller answers 503 "stopped".
pub fn hand_off(
    workers: &WeakAddr<HeartbeatWorker>,
    heartbeat: Heartbeat,
    permit: QueuePermit,
) -> Result<(), PoolClosed> {
    if workers.upgrade().is_none() {
        permit.cancel();
        return Err(PoolClosed);
    }
    let (full, schedule) = PENDING.with_borrow_mut(|pending| {
        pending.heartbeats.push(heartbeat);
        if pending.workers.is_none() {
            pending.workers = Some(workers.clone());
        }
        match pending.permit.as_mut() {
            Some(batch) => batch.merge(permit),
            None => pending.permit = Some(permit),
        }
        let full = (pending.heartbeats.len() >= MAX_BATCH)
            .then(|| pending.take())
            .flatten();
        let schedule = !pending.flush_scheduled;
        pending.flush_scheduled = true;
        (full, schedule)
    });
    if let Some(batch) = full {
        send(workers, batch);
    }
    if schedule {
        let workers = workers.clone();
        actix_rt::spawn(async move {
            actix_rt::task::yield_now().await;
            let batch = PENDING.with_borrow_mut(|pending| {
                pending.flush_scheduled = false;
                pending.take()
            });
            if let Some(batch) = batch {
                send(&workers, batch);
            }
        });
    }
    Ok(())
}

fn send(workers: &WeakAddr<HeartbeatWorker>, batch: ProcessHeartbeats) {
    // The pool is closed only after the HTTP server has stopped, so this does not fail; if it
    // ever did, the permit dropped with the batch counts the heartbeats as lost and the drain
    // reports them.
    if let Some(pool) = workers.upgrade() {
        let _ = pool.try_send(batch);
    }
}
