//! The Manager's persistence engine: the two pipelines to disk, and their retries.
//!
//! - **flush** (`flush_interval` after the first record waits): the pending journal records go to the JournalWriter,
//!   one append and one sync; once it is synced they count in `total_synced`. A tick that
//!   finds the previous flush still syncing starts the next one as soon as it is done, rather
//!   than a whole interval later. With `flush_interval = 0` (write-through) an update is
//!   answered only once a flush holding it is synced; updates that arrive meanwhile share the
//!   next flush (group commit).
//! - **checkpoint** (`checkpoint_interval` after the first change, when too many samples
//!   wait, and at shutdown): every changed agent's state and new history samples go to the Store, with the
//!   journal rotated in the same step, so the segments before it can go once it is durable.
//!
//! A failed write keeps everything in memory and is retried with backoff (doubling up to
//! 30 s), from memory, never by re-syncing a file whose fsync failed; errors are logged at
//! most once per 10 s. [`Flush`] (shutdown) flushes and checkpoints now.
//!
//! The timers are armed only while something waits ([`PersistTimers`]): a heartbeatd at rest
//! (no heartbeat, no change) arms none and never wakes up for them, and what a kill -9 can
//! lose is still at most one `flush_interval` of heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::channel::oneshot;
use slog::{error, info, warn};

use super::{Manager, PendingSample};
use crate::store::journal_writer::{AppendJournal, RotateJournal};
use crate::store::{self, AgentDelta, PersistReport, StoreError};

/// At most one store-error log line per this long; the others are counted in it.
pub(super) const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First wait before retrying a failed write; doubles up to [`MAX_RETRY_BACKOFF`].
pub(super) const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// A checkpoint starts early once this many history samples wait in memory (bounds memory
/// at high rates: about 40 bytes each).
pub(super) const MAX_SAMPLES_BETWEEN_CHECKPOINTS: usize = 1_000_000;

/// Why a flush or checkpoint did not make it to disk. Cheap to clone: every update waiting
/// for the same flush gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// The write failed (disk full, read-only, vanished): the data stays in memory and the
    /// write is retried.
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("the store is not running")]
    StoreStopped,
    #[error("the journal writer is not running")]
    JournalStopped,
    /// The Manager stopped before the write was answered.
    #[error("the write was abandoned")]
    Abandoned,
}

/// The flush and checkpoint timers: each is armed when work arrives and none is armed, and
/// fires once.
#[derive(Debug, Default)]
pub(super) struct PersistTimers {
    flush: Option<SpawnHandle>,
    checkpoint: Option<SpawnHandle>,
}

impl Manager {
    /// Arms the timers for what waits: journal records (flush) and changed agents
    /// (checkpoint), each not before the retry backoff allows. Call it after anything that
    /// may have added work.
    pub(super) fn arm_timers(&mut self, ctx: &mut Context<Self>) {
        let backoff = self
            .retry_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(Instant::now()));
        if self.timers.flush.is_none() && !self.write_through() && !self.journal_pending.is_empty() {
            let after = self.policy.flush_interval.max(backoff);
            self.timers.flush = Some(ctx.run_later(after, |act, ctx| {
                act.timers.flush = None;
                if act.may_retry() {
                    act.start_flush(ctx);
                }
                act.arm_timers(ctx);
            }));
        }
        if self.timers.checkpoint.is_none() && !self.dirty.is_empty() {
            let after = self.policy.checkpoint_interval.max(backoff);
            self.timers.checkpoint = Some(ctx.run_later(after, |act, ctx| {
                act.timers.checkpoint = None;
                if act.may_retry() {
                    act.start_checkpoint(ctx);
                }
                act.arm_timers(ctx);
            }));
        }
    }

    /// Tells `/readyz`, `/metrics` and the heartbeat endpoint how many heartbeats are held
    /// in memory, not yet synced (see [`crate::counters::ManagerCounters::backlog_full`]).
    pub(super) fn publish_unsynced(&self) {
        self.health
            .set_unsynced((self.journal_pending.len() + self.flush_in_flight_records) as u64);
    }

    pub(super) fn write_through(&self) -> bool {
        self.policy.flush_interval.is_zero()
    }

    pub(super) fn may_retry(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Sends the pending journal records, unless a flush is running (the next one starts when
    /// it completes).
    pub(super) fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight {
            // Remembered: the records waiting now go as soon as this flush is synced.
            self.flush_overdue = true;
            return;
        }
        self.flush_overdue = false;
        if self.journal_pending.is_empty() && self.flush_waiters.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.journal_pending);
        let waiters = std::mem::take(&mut self.flush_waiters);
        self.flush_in_flight = true;
        self.flush_in_flight_records = records.len();
        self.journal
            .send(AppendJournal(records))
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.flush_in_flight = false;
                act.flush_in_flight_records = 0;
                let outcome = match result {
                    Ok(Ok(written)) => {
                        // After the sync: what `total_synced` promises is on disk.
                        act.health.synced(written as u64);
                        Ok(())
                    }
                    Ok(Err((e, mut records))) => {
                        records.append(&mut act.journal_pending);
                        act.journal_pending = records;
                        Err(act.note_store_error(PersistError::Store(Arc::new(e))))
                    }
                    Err(_) => Err(act.note_store_error(PersistError::JournalStopped)),
                };
                if outcome.is_ok() {
                    act.note_store_ok();
                }
                act.publish_unsynced();
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
                let again = !act.flush_waiters.is_empty()
                    || ((act.write_through() || act.flush_overdue) && !act.journal_pending.is_empty());
                if again && act.may_retry() {
                    act.start_flush(ctx);
                }
                act.arm_timers(ctx);
            })
            .spawn(ctx);
    }

    /// Sends every changed agent's state and samples, unless a checkpoint is running.
    pub(super) fn start_checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpoint_in_flight || (self.dirty.is_empty() && self.checkpoint_waiters.is_empty()) {
            return;
        }
        let history_len = self.policy.history_len as u64;
        let mut deltas = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.agents.get_mut(&id) else {
                continue;
            };
            entry.dirty = false;
            let samples: Vec<_> = std::mem::take(&mut entry.since_checkpoint)
                .into_iter()
                .map(|p| p.sample)
                .collect();
            // Counted when the checkpoint starts: if it fails, the samples are sent again and
            // counted twice, which only brings the next compaction forward.
            let records = entry.state.history_records + samples.len() as u64;
            let compact = records > 2 * history_len;
            entry.state.history_records = if compact { records.min(history_len) } else { records };
            deltas.push(AgentDelta {
                state: entry.state.clone(),
                samples,
                compact_to: compact.then_some(self.policy.history_len),
            });
        }
        self.samples_since_checkpoint = 0;
        let waiters = std::mem::take(&mut self.checkpoint_waiters);
        self.checkpoint_in_flight = true;
        // The rotation is sent in the same step as the snapshot: every record appended before
        // it was processed before the snapshot, so the checkpoint covers the segments below.
        let rotated = self.journal.send(RotateJournal);
        let store = self.store.clone();
        async move {
            match rotated.await {
                Ok(journal_from) => store.send(store::Checkpoint { deltas, journal_from }).await,
                Err(_) => {
                    let gone = std::io::Error::other("the journal writer is not running");
                    Ok(Err((StoreError::new("rotate", "journal", gone), deltas)))
                }
            }
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            act.checkpoint_in_flight = false;
            let outcome = act.checkpoint_done(result);
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
            if !act.checkpoint_waiters.is_empty() {
                act.start_checkpoint(ctx);
            }
            act.arm_timers(ctx);
        })
        .spawn(ctx);
    }

    pub(super) fn checkpoint_done(
        &mut self,
        result: Result<Result<PersistReport, (StoreError, Vec<AgentDelta>)>, MailboxError>,
    ) -> Result<(), PersistError> {
        match result {
            Ok(Ok(report)) => {
                self.note_store_ok();
                self.health.damaged(report.damaged_records_set_aside as u64);
                if report.damaged_records_set_aside > 0 {
                    error!(self.log, "damaged history records were set aside during compaction";
                        "records" => report.damaged_records_set_aside);
                }
                Ok(())
            }
            Ok(Err((e, deltas))) => {
                self.keep_unpersisted(deltas);
                Err(self.note_store_error(PersistError::Store(Arc::new(e))))
            }
            Err(_) => Err(self.note_store_error(PersistError::StoreStopped)),
        }
    }

    /// Puts a failed checkpoint back: its samples go before anything that arrived since.
    pub(super) fn keep_unpersisted(&mut self, deltas: Vec<AgentDelta>) {
        for delta in deltas {
            let Some(entry) = self.agents.get_mut(&delta.state.id) else {
                continue;
            };
            self.samples_since_checkpoint += delta.samples.len();
            // Their receive times are gone; they were received before everything waiting now
            // (their numbers are lower), and a heartbeat overtaken across a checkpoint goes
            // after them, as it would after a checkpoint that worked.
            let put_back = delta.samples.into_iter().map(|sample| PendingSample {
                received_at: DateTime::<Utc>::MIN_UTC,
                sample,
            });
            entry.since_checkpoint.splice(0..0, put_back);
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(delta.state.id);
            }
        }
    }

    pub(super) fn note_store_ok(&mut self) {
        self.health.store_ok();
        if self.retry_at.take().is_some() {
            info!(self.log, "writing to data_dir works again"; "store_errors_so_far" => self.health.store_errors());
        }
        self.retry_backoff = FIRST_RETRY_BACKOFF;
    }

    /// Counts and (at most once per 10 s) logs a failed write, and schedules the retry.
    pub(super) fn note_store_error(&mut self, e: PersistError) -> PersistError {
        self.health.store_error();
        self.retry_at = Some(Instant::now() + self.retry_backoff);
        if let Some(not_logged) = self.store_error_gate.check(Instant::now()) {
            error!(self.log, "could not persist agent state; it is kept in memory and written when the disk works again";
                "error" => %e, "retry_in_ms" => self.retry_backoff.as_millis() as u64,
                "similar_errors_not_logged" => not_logged, "store_errors" => self.health.store_errors(),
                "what_to_do" => "check free space and permissions of data_dir");
        }
        self.retry_backoff = (self.retry_backoff * 2).min(MAX_RETRY_BACKOFF);
        e
    }
}

/// Shutdown's last step: flush the journal and checkpoint now, ignoring any retry backoff.
/// Answers how many agents still have changes not in their files (0 when everything is), or
/// the store's error.
#[derive(Message)]
#[rtype(result = "Result<usize, PersistError>")]
pub struct Flush;

impl Handler<Flush> for Manager {
    type Result = ResponseActFuture<Self, Result<usize, PersistError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (flushed_tx, flushed) = oneshot::channel();
        let (checkpointed_tx, checkpointed) = oneshot::channel();
        self.flush_waiters.push(flushed_tx);
        self.checkpoint_waiters.push(checkpointed_tx);
        self.retry_at = None;
        self.start_flush(ctx);
        self.start_checkpoint(ctx);
        let abandoned = || Err(PersistError::Abandoned);
        Box::pin(
            fut::wrap_future(async move {
                flushed.await.unwrap_or_else(|_| abandoned())?;
                checkpointed.await.unwrap_or_else(|_| abandoned())
            })
            .map(|result: Result<(), PersistError>, act: &mut Manager, _| {
                if !act.journal_pending.is_empty() {
                    warn!(act.log, "heartbeats arrived during the final flush"; "records" => act.journal_pending.len());
                }
                result.map(|()| act.dirty.len() + usize::from(act.checkpoint_in_flight))
            }),
        )
    }
}
