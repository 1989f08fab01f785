//! The root logger: slog-term lines or JSON lines on stderr, filtered by `log_level`, written
//! by a background thread (slog-async) so logging never blocks a request.
//!
//! Keep the returned [`LogGuard`] alive until the end of `main`: dropping it flushes what is
//! still queued, so the last lines (the drain report) are not lost.

use slog::{o, Drain, Level, Logger};

use crate::settings::{LogFormat, LogLevel};

/// Records queued for the logging thread before new ones are dropped (and the drop reported).
const LOG_QUEUE_LEN: usize = 8192;

/// Flushes the logging thread when dropped.
pub struct LogGuard(#[allow(dead_code)] slog_async::AsyncGuard);

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

/// Builds the root logger; every record carries the crate version.
pub fn build_logger(level: LogLevel, format: LogFormat) -> (Logger, LogGuard) {
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
    // heartbeat path costs one comparison instead of a copy to the logging thread.
    let logger = Logger::root(drain.filter_level(slog_level(level)).fuse(), o!());
    (logger, LogGuard(guard))
}
