//! The JournalWriter actor: owns the journal segment being appended to, on a thread of its own.
//!
//! Why a thread of its own: the journal is what keeps the durability promise (every heartbeat
//! counted as synced is on disk after a kill -9; on an idle machine that is all but the last
//! `flush_interval_ms` of processed heartbeats). When it shared the Store's
//! thread, every flush waited behind a running checkpoint (seconds of history appends and a
//! syncfs at 20k heartbeats/s), the Manager held the heartbeats of that whole time in memory,
//! and a kill -9 during a checkpoint lost tens of thousands of them. Here a flush waits for
//! nothing but the previous flush.
//!
//! How it stays consistent with checkpoints: the Manager takes a checkpoint's snapshot and
//! sends [`RotateJournal`] in the same step. Everything appended before the rotation was
//! processed before the snapshot, so the checkpoint covers every segment below the one the
//! rotation returns; the Store removes those only once the checkpoint is durable.

use actix::prelude::*;

use crate::store::journal::{Journal, JournalRecord};
use crate::store::StoreError;

/// Appends processed heartbeats to the journal, one write and one `fdatasync` per message.
pub struct JournalWriter {
    journal: Journal,
}

impl JournalWriter {
    pub fn new(journal: Journal) -> Self {
        Self { journal }
    }

    /// Starts the writer on its own thread (a one-thread SyncArbiter).
    pub fn start(self) -> Addr<Self> {
        crate::single_thread::start_on_own_thread(self)
    }
}

impl Actor for JournalWriter {
    type Context = SyncContext<Self>;
}

/// Appends processed heartbeats to the journal. Answered once they are synced, with how many
/// records were written (all but any that could not be encoded); on failure the records come
/// back so the Manager can keep them and try again (into a new segment).
#[derive(Message)]
#[rtype(result = "Result<usize, (StoreError, Vec<JournalRecord>)>")]
pub struct AppendJournal(pub Vec<JournalRecord>);

impl Handler<AppendJournal> for JournalWriter {
    type Result = Result<usize, (StoreError, Vec<JournalRecord>)>;

    fn handle(&mut self, AppendJournal(records): AppendJournal, _: &mut SyncContext<Self>) -> Self::Result {
        let dir = self.journal.dir().to_owned();
        self.journal
            .append(&records)
            .map_err(|e| (StoreError::new("append to the journal in", dir, e), records))
    }
}

/// Starts a new segment for the appends that follow and answers its number: a checkpoint
/// whose snapshot was taken when this was sent covers every segment below it.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct RotateJournal;

impl Handler<RotateJournal> for JournalWriter {
    type Result = u64;

    fn handle(&mut self, _: RotateJournal, _: &mut SyncContext<Self>) -> u64 {
        self.journal.rotate()
    }
}
