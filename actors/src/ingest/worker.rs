//! The worker pool: `workers` threads of a SyncArbiter, each running a [`HeartbeatWorker`].
//!
//! A worker takes a [`ProcessHeartbeats`] batch, asks the Manager to apply it and blocks until
//! the Manager answers (in write-through mode the batch is on disk by then), reports the
//! outcome to Stats in one message, and only then releases the batch's [`QueuePermit`]. So the
//! queue depth counts every heartbeat answered 200 and not yet applied, and the shutdown drain
//! can wait on it.
//!
//! A SyncArbiter thread ends only when every `Addr` of the pool is dropped and its queue is
//! empty (`ctx.stop()` merely restarts the actor), so [`WorkerPool::close`] drops the pool's
//! address and [`ClosingPool::wait`] counts the threads that have stopped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakAddr;
use slog::{debug, Logger};

use crate::ingest::pipeline_metrics::PipelineMetrics;
use crate::ingest::queue::QueuePermit;
use crate::manager::{Manager, UpdateHeartbeats};
use crate::model::heartbeat::Heartbeat;
use crate::stats::{HeartbeatsProcessed, Stats};

/// A batch of heartbeats for the pool, with the queue slots it holds until processed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProcessHeartbeats {
    pub heartbeats: Vec<Heartbeat>,
    /// One slot per heartbeat (merged).
    pub permit: QueuePermit,
}

/// One worker thread's actor.
pub struct HeartbeatWorker {
    manager: Addr<Manager>,
    stats: Addr<Stats>,
    metrics: Arc<PipelineMetrics>,
    stopped_workers: Arc<AtomicUsize>,
    log: Logger,
}

impl Actor for HeartbeatWorker {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _: &mut SyncContext<Self>) {
        self.stopped_workers.fetch_add(1, Ordering::AcqRel);
    }
}

impl Handler<ProcessHeartbeats> for HeartbeatWorker {
    type Result = ();

    fn handle(&mut self, msg: ProcessHeartbeats, _: &mut SyncContext<Self>) {
        let ProcessHeartbeats { heartbeats, permit } = msg;
        let count = heartbeats.len() as u64;
        let picked_up = chrono::Utc::now();
        for hb in &heartbeats {
            let waited = (picked_up - hb.received_at).to_std().unwrap_or_default();
            self.metrics.queue_wait.observe(waited.as_secs_f64());
        }
        let started = Instant::now();
        // Blocking is what this thread is for: the Manager and Store run elsewhere.
        let outcome = futures::executor::block_on(self.manager.send(UpdateHeartbeats(heartbeats)));
        let latency = started.elapsed();
        let processed = match outcome {
            Ok(Ok(outcome)) => {
                if !outcome.unknown_agents.is_empty() {
                    debug!(self.log, "heartbeats of agents unregistered meanwhile were dropped";
                        "agents" => ?outcome.unknown_agents);
                }
                HeartbeatsProcessed {
                    succeeded: outcome.applied as u64,
                    failed: count - outcome.applied as u64,
                    latency,
                }
            }
            Ok(Err(e)) => {
                debug!(self.log, "heartbeat processing failed"; "heartbeats" => count, "error" => %e);
                HeartbeatsProcessed {
                    succeeded: 0,
                    failed: count,
                    latency,
                }
            }
            Err(e) => {
                debug!(self.log, "manager unreachable"; "heartbeats" => count, "error" => %e);
                HeartbeatsProcessed {
                    succeeded: 0,
                    failed: count,
                    latency,
                }
            }
        };
        for _ in 0..processed.succeeded {
            self.metrics.processing.observe(latency.as_secs_f64());
        }
        self.stats.do_send(processed);
        // Processed here means: applied, or failed and counted in total_errors; either way
        // the worker is done with them.
        permit.processed();
    }
}

/// The running pool.
pub struct WorkerPool {
    addr: Addr<HeartbeatWorker>,
    size: usize,
    stopped_workers: Arc<AtomicUsize>,
}

impl WorkerPool {
    /// Starts `size` worker threads.
    pub fn start(
        size: usize,
        manager: Addr<Manager>,
        stats: Addr<Stats>,
        metrics: Arc<PipelineMetrics>,
        log: Logger,
    ) -> Self {
        let stopped_workers = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&stopped_workers);
        let addr = SyncArbiter::start(size, move || HeartbeatWorker {
            manager: manager.clone(),
            stats: stats.clone(),
            metrics: Arc::clone(&metrics),
            stopped_workers: Arc::clone(&counter),
            log: log.clone(),
        });
        Self {
            addr,
            size,
            stopped_workers,
        }
    }

    /// The address to send heartbeats to. Every strong clone must be dropped before the pool
    /// can stop; long-lived holders should keep [`WorkerPool::weak_addr`] instead.
    pub fn addr(&self) -> Addr<HeartbeatWorker> {
        self.addr.clone()
    }

    /// An address that does not keep the pool alive.
    pub fn weak_addr(&self) -> WeakAddr<HeartbeatWorker> {
        self.addr.downgrade()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Drops the pool's own address. The threads finish the queue, then stop (once any other
    /// strong clone is gone too).
    pub fn close(self) -> ClosingPool {
        ClosingPool {
            size: self.size,
            stopped_workers: self.stopped_workers,
        }
    }
}

/// A pool whose address was dropped.
pub struct ClosingPool {
    size: usize,
    stopped_workers: Arc<AtomicUsize>,
}

impl ClosingPool {
    /// Waits until every worker thread has stopped, or `deadline` passes. Returns how many
    /// threads are still running (0 on success).
    ///
    /// It polls rather than blocks: the SyncArbiter's forwarding task runs on the calling
    /// thread's arbiter, and blocking it would stall the very queue being drained.
    pub async fn wait(&self, deadline: Instant) -> usize {
        loop {
            let running = self.size - self.stopped_workers.load(Ordering::Acquire);
            if running == 0 || Instant::now() >= deadline {
                return running;
            }
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::GetStats;
    use chrono::Utc;

    #[actix_rt::test]
    async fn pool_processes_the_queue_and_stops_when_closed() {
        let crate::testkit::TestActors {
            store,
            queue,
            stats,
            manager,
            pool,
            dir: _dir,
            ..
        } = crate::testkit::start(2, 100);

        let addr = pool.addr();
        for batch in 0..10u64 {
            let mut permit = queue.try_acquire().expect("room in the queue");
            for _ in 1..5 {
                permit.merge(queue.try_acquire().expect("room in the queue"));
            }
            let heartbeats = (0..5)
                .map(|n| Heartbeat {
                    agent_id: "a".into(),
                    timestamp: Utc::now(),
                    received_at: Utc::now(),
                    pid: 1,
                    cpu: 0.0,
                    memory: batch * 5 + n,
                    status: None,
                })
                .collect();
            addr.try_send(ProcessHeartbeats { heartbeats, permit }).unwrap();
        }
        drop(addr);
        let closing = pool.close();
        let still_running = closing.wait(Instant::now() + Duration::from_secs(10)).await;

        assert_eq!(still_running, 0);
        assert_eq!(
            (queue.depth(), queue.lost()),
            (0, 0),
            "every permit released as processed"
        );
        let report = stats.send(GetStats).await.unwrap();
        assert_eq!(report.total_processed, 50);
        // History reaches the agent's file at a checkpoint; Flush forces one.
        assert_eq!(manager.send(crate::manager::Flush).await.unwrap().unwrap(), 0);
        let history = store
            .send(crate::store::ReadHistory {
                id: "a".into(),
                limit: 1440,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.samples.len(), 50, "every heartbeat is on disk");
    }
}
