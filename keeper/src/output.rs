//! The keeper's copy of the agent's output: from the pipe the agent writes into, to its
//! [`OutputLog`], within a CPU budget.
//!
//! A program that writes as fast as it can (`yes`) would keep its keeper copying all the time:
//! however cheap each byte is, the pipe is never empty. So the keeper spends at most
//! [`CPU_SHARE`] of a core: in each [`BUDGET_WINDOW`], once it has used that much CPU, it stops
//! reading the pipe until the window ends. The program then waits on its full pipe, as it
//! would on a slow terminal; its output is not lost, only slowed to what the keeper copies
//! within its budget (hundreds of MB/s on current hardware).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::output_log::OutputLog;

/// The most of a core the keeper spends, measured over [`BUDGET_WINDOW`] (all of its CPU
/// counts, copying or not; the bench holds it to 20 %).
pub const CPU_SHARE: f64 = 0.15;
pub const BUDGET_WINDOW: Duration = Duration::from_millis(100);
/// Bytes read from the pipe at a time: a whole default pipe.
const READ_BYTES: usize = 64 * 1024;

/// The output pipe and where it goes.
pub struct OutputCopy {
    /// `None` once every writer has closed it.
    pipe: Option<File>,
    /// `None` when the file could not be opened: the output is read and dropped.
    log: Option<OutputLog>,
    /// What one read takes: [`READ_BYTES`] reserved, never zeroed, so a program that writes
    /// little (or nothing) costs its keeper only the pages the kernel actually filled.
    buffer: Vec<u8>,
    budget: CpuBudget,
}

impl OutputCopy {
    pub fn new(pipe: OwnedFd, log: Option<OutputLog>) -> Self {
        Self {
            pipe: Some(File::from(pipe)),
            log,
            buffer: Vec::with_capacity(READ_BYTES),
            budget: CpuBudget::new(Instant::now()),
        }
    }

    /// The pipe to wait on now: `None` once it is closed, or while the budget is spent.
    pub fn readable_fd(&mut self, now: Instant) -> Option<RawFd> {
        let pipe = self.pipe.as_ref()?;
        self.budget.allows(now).then(|| pipe.as_raw_fd())
    }

    /// The next time something is due: a flush of buffered lines, or the budget's next window.
    pub fn deadline(&self) -> Option<Instant> {
        let flush = self.log.as_ref().and_then(OutputLog::flush_due);
        let resume = self.pipe.as_ref().and(self.budget.paused_until);
        [flush, resume].into_iter().flatten().min()
    }

    /// Copies what the pipe holds (one read), then charges the budget.
    pub fn copy(&mut self) {
        let Some(pipe) = &self.pipe else { return };
        match read_pipe(pipe, &mut self.buffer) {
            Ok(0) => self.pipe = None,
            Ok(_) => {
                if let Some(log) = &mut self.log {
                    log.write(&self.buffer);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.pipe = None,
        }
        self.budget.charge(Instant::now());
    }

    /// Writes buffered lines whose time has come.
    pub fn flush_if_due(&mut self, now: Instant) {
        if let Some(log) = &mut self.log {
            if log.flush_due().is_some_and(|due| due <= now) {
                log.flush();
            }
        }
    }

    /// A line of heartbeatd's own in the output file (a start failure, say).
    pub fn note(&mut self, text: &str) {
        if let Some(log) = &mut self.log {
            log.note(text);
        }
    }

    /// The tree is gone: what is still in the pipe is the last of its output (no writer is
    /// left, so it ends); then everything is written.
    pub fn finish(mut self) {
        if let Some(pipe) = self.pipe.take() {
            let _ = set_nonblocking(&pipe);
            while let Ok(n) = read_pipe(&pipe, &mut self.buffer) {
                if n == 0 {
                    break;
                }
                if let Some(log) = &mut self.log {
                    log.write(&self.buffer);
                }
            }
        }
        if let Some(log) = &mut self.log {
            log.finish();
        }
    }
}

/// One read of the pipe into `buffer`'s reserved room (its length becomes what was read):
/// `File::read` would need the room zeroed first, touching all [`READ_BYTES`] of it in every
/// keeper (64 KiB of private memory each, for output most agents never write).
fn read_pipe(pipe: &File, buffer: &mut Vec<u8>) -> io::Result<usize> {
    buffer.clear();
    // SAFETY: the pointer is valid for `capacity` bytes; the kernel writes at most that many.
    let n = unsafe { libc::read(pipe.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.capacity()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first n bytes were written by read(2).
    unsafe { buffer.set_len(n as usize) };
    Ok(n as usize)
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// At most [`CPU_SHARE`] of [`BUDGET_WINDOW`] of the keeper's CPU per window.
#[derive(Debug)]
struct CpuBudget {
    window_start: Instant,
    cpu_at_start: Duration,
    /// Reading waits until then: the window's budget is spent.
    paused_until: Option<Instant>,
}

impl CpuBudget {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            cpu_at_start: own_cpu(),
            paused_until: None,
        }
    }

    /// Whether reading may go on at `now` (a new window starts when the last one is over).
    fn allows(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|until| now < until) {
            return false;
        }
        if self.paused_until.is_some() || now.saturating_duration_since(self.window_start) >= BUDGET_WINDOW {
            *self = Self::new(now);
        }
        true
    }

    /// After a read: once this window's CPU is spent, reading waits for the next window.
    fn charge(&mut self, now: Instant) {
        let spent = own_cpu().saturating_sub(self.cpu_at_start);
        if spent >= BUDGET_WINDOW.mul_f64(CPU_SHARE) {
            self.paused_until = Some(self.window_start + BUDGET_WINDOW);
        } else if now.saturating_duration_since(self.window_start) >= BUDGET_WINDOW {
            *self = Self::new(now);
        }
    }
}

/// The CPU this process has used (user and system).
fn own_cpu() -> Duration {
    // SAFETY: timespec is plain data that clock_gettime fills.
    let mut time: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(time.tv_sec.max(0) as u64, time.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn(cpu: Duration) {
        let start = own_cpu();
        let mut x = 0u64;
        while own_cpu().saturating_sub(start) < cpu {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn reading_pauses_once_the_window_s_cpu_is_spent_until_the_next_window() {
        let t0 = Instant::now();
        let mut budget = CpuBudget::new(t0);
        assert!(budget.allows(t0));
        budget.charge(t0);
        assert_eq!(budget.paused_until, None, "nothing spent yet");
        // Spend more than the share of the window (this test thread's CPU counts: the
        // process clock is the keeper's, single-threaded).
        burn(BUDGET_WINDOW.mul_f64(CPU_SHARE) + Duration::from_millis(5));
        budget.charge(t0);
        let until = budget.paused_until.expect("paused");
        assert_eq!(until, t0 + BUDGET_WINDOW);
        assert!(!budget.allows(t0 + BUDGET_WINDOW / 2));
        assert!(budget.allows(until), "a new window");
        assert_eq!(budget.paused_until, None);
        assert_eq!(budget.window_start, until);
    }
}
