//! The keeper's hold on its tree: signalling every process of it, reaping every child that
//! ends (and adding up the CPU they used), and counting its processes.

use std::time::Duration;

use crate::supervision::procfs;

/// Sends `signal` to every descendant of the keeper `me`, the agent's group first; returns
/// how many processes were found in the tree.
pub fn signal_tree(me: i32, agent_pgid: i32, signal: i32) -> usize {
    // The group first, in one call: a process of the group that forks while it is signalled
    // cannot leave a child behind (a fork with a fatal signal pending fails).
    // SAFETY: kill has no memory preconditions; a gone group is ESRCH.
    unsafe { libc::kill(-agent_pgid, signal) };
    let tree = procfs::descendants(me);
    for pid in &tree {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, signal) };
    }
    tree.len()
}

/// How many processes the tree under `me` has, counting no further than `at_most`.
pub fn count(me: i32, at_most: usize) -> usize {
    procfs::count_descendants(me, at_most)
}

/// Reaps the keeper's children: the agent, and every process of the tree re-parented to the
/// keeper (its subreaper). The CPU each used, with what it had reaped itself, is added up:
/// once a process is reaped, `/proc` no longer shows what it used.
#[derive(Debug)]
pub struct Reaper {
    agent: i32,
    /// User plus system CPU of every reaped child and what it had reaped.
    cpu: Duration,
}

impl Reaper {
    pub fn new(agent: i32) -> Self {
        Self {
            agent,
            cpu: Duration::ZERO,
        }
    }

    /// Reaps every child that has ended; returns the agent's wait status if it was among them.
    pub fn reap(&mut self) -> Option<i32> {
        let mut agent_status = None;
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain data that wait4 fills.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: status and usage are valid out-pointers.
            let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
            if pid <= 0 {
                return agent_status;
            }
            self.cpu += cpu_of(&usage);
            if pid == self.agent {
                agent_status = Some(status);
            }
        }
    }

    /// The CPU of every reaped child so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        ticks(self.cpu, procfs::clock_ticks_per_second())
    }
}

/// User plus system time of a reaped child (wait4 adds what it reaped into its own rusage).
fn cpu_of(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `cpu` in clock ticks of `hz` a second, rounded down.
fn ticks(cpu: Duration, hz: u64) -> u64 {
    (cpu.as_micros().saturating_mul(u128::from(hz)) / 1_000_000).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_counted_in_clock_ticks_rounded_down() {
        assert_eq!(ticks(Duration::from_millis(1234), 100), 123);
        assert_eq!(ticks(Duration::from_micros(9_999), 100), 0);
        assert_eq!(ticks(Duration::from_secs(2), 250), 500);
        let usage = libc::rusage {
            ru_utime: libc::timeval {
                tv_sec: 1,
                tv_usec: 500_000,
            },
            ru_stime: libc::timeval {
                tv_sec: 0,
                tv_usec: 250_000,
            },
            // SAFETY: the rest of rusage is plain counters; zero is a valid value for each.
            ..unsafe { std::mem::zeroed() }
        };
        assert_eq!(cpu_of(&usage), Duration::from_millis(1750));
    }
}
