//! The root logger: slog-term lines or JSON lines on stderr, filtered by `log_level`, written
//! by a background thread (slog-async) so logging never blocks a request.
//!
//! Keep the returned [`LogGuard`] alive until the end of `main`: dropping it flushes what is
//! still queued, so the last lines (the drain report) are not lost.
//!
//! The level can change while running (SIGHUP reloads `log_level`) through [`LevelHandle`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::settings::{LogFormat, LogLevel};

/// Records queued for the logging thread before new ones are dropped (and the drop reported).
const LOG_QUEUE_LEN: usize = 8192;

/// Flushes the logging thread when dropped.
pub struct LogGuard(#[allow(dead_code)] slog_async::AsyncGuard);

/// Changes the level of a running logger.
#[derive(Debug, Clone)]
pub struct LevelHandle(Arc<AtomicUsize>);

impl LevelHandle {
    pub fn set(&self, level: LogLevel) {
        self.0.store(slog_level(level).as_usize(), Ordering::Relaxed);
    }
}

/// Passes records at or above the handle's level.
struct DynamicLevel<D> {
    drain: D,
    level: Arc<AtomicUsize>,
}

impl<D: Drain> Drain for DynamicLevel<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<Self::Ok, Self::Err> {
        // Level numbers grow with verbosity: Critical is 1, Trace 6.
        if record.level().as_usize() <= self.level.load(Ordering::Relaxed) {
            self.drain.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn slog_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warning,
        LogLevel::Error => Level::Error,
        LogLevel::Critical => Level::Critical,
    }
}

/// Builds the root logger, and the handle that changes its level.
pub fn build_logger(level: LogLevel, format: LogFormat) -> (Logger, LogGuard, LevelHandle) {
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match format {
        LogFormat::Term => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            Box::new(slog_term::FullFormat::new(decorator).use_utc_timestamp().build().fuse())
        }
        LogFormat::Json => Box::new(
            slog_json::Json::new(std::io::stderr())
                .set_newlines(true)
                .add_default_keys()
                .build()
                .fuse(),
        ),
    };
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(LOG_QUEUE_LEN)
        .thread_name("heartbeatd-log".into())
        .build_with_guard();
    // The level filter sits in front of the async queue, so a disabled debug line on the
    // heartbeat path costs one atomic load and a comparison instead of a copy to the logging
    // thread.
    let handle = LevelHandle(Arc::new(AtomicUsize::new(slog_level(level).as_usize())));
    let filtered = DynamicLevel {
        drain,
        level: Arc::clone(&handle.0),
    };
    let logger = Logger::root(filtered.fuse(), o!());
    (logger, LogGuard(guard), handle)
}
