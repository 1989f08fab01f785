//! The keeper's hold on its tree: signalling every process of it, reaping every child that
//! ends (and adding up the CPU they used), and counting its processes.

use std::fs;
use std::time::Duration;

use crate::procfs;

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

/// `max_processes`, checked often and cheaply. Walking the tree's `/proc` entries costs a few
/// system calls per process (2 % of a core for a tree of 100, every 50 ms); a tree only grows
/// by processes that get new pids, and the kernel says which pid it handed out last
/// (`/proc/loadavg`). So the tree is walked only when enough pids were handed out, on the
/// whole host, since the last walk for it to have passed `max`: on a quiet host, rarely; in
/// a fork bomb, at every check.
#[derive(Debug)]
pub struct ProcessLimit {
    max: usize,
    /// The tree's processes at the last walk, and the last pid handed out just before it.
    counted: usize,
    last_pid_then: Option<u64>,
    pid_max: u64,
}

impl ProcessLimit {
    pub fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            counted: 0,
            last_pid_then: None,
            pid_max: fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(1 << 22),
        }
    }

    /// The tree's process count under `me` when it has more than `max`.
    pub fn over(&mut self, me: i32) -> Option<usize> {
        let last_pid = last_pid();
        if !self.may_be_over(last_pid) {
            return None;
        }
        let count = procfs::count_descendants(me, self.max + 1);
        self.counted = count;
        self.last_pid_then = last_pid;
        (count > self.max).then_some(count)
    }

    /// Whether the tree may have more than `max` processes now, `last_pid` being the last
    /// pid the kernel handed out: it has at most what it had, plus a process per pid handed
    /// out since (pids go up, wrapping at `pid_max`, and skip pids in use: an overcount).
    fn may_be_over(&self, last_pid: Option<u64>) -> bool {
        let (Some(then), Some(now)) = (self.last_pid_then, last_pid) else {
            return true;
        };
        let handed_out = (now % self.pid_max + self.pid_max - then % self.pid_max) % self.pid_max;
        self.counted.saturating_add(handed_out as usize) > self.max
    }
}

/// The last pid the kernel handed out in this pid namespace (the 5th field of `/proc/loadavg`).
fn last_pid() -> Option<u64> {
    parse_last_pid(&fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_last_pid(loadavg: &str) -> Option<u64> {
    loadavg.split_ascii_whitespace().nth(4)?.parse().ok()
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
    fn the_tree_is_walked_only_when_enough_pids_were_handed_out_to_pass_max() {
        assert_eq!(parse_last_pid("0.52 0.58 0.59 2/377 12345\n"), Some(12345));
        assert_eq!(parse_last_pid("0.52 0.58"), None);
        let mut limit = ProcessLimit {
            max: 10,
            counted: 0,
            last_pid_then: None,
            pid_max: 32768,
        };
        assert!(limit.may_be_over(Some(100)), "never walked");
        (limit.counted, limit.last_pid_then) = (4, Some(100));
        assert!(!limit.may_be_over(Some(100)));
        assert!(!limit.may_be_over(Some(106)), "4 + 6 is not over 10");
        assert!(limit.may_be_over(Some(107)));
        // Across the wrap of pid_max.
        limit.last_pid_then = Some(32765);
        assert!(!limit.may_be_over(Some(3)), "32766, 32767, (0), 1, 2, 3: 6");
        assert!(limit.may_be_over(Some(4)));
        assert!(limit.may_be_over(None), "unknown: walk");
    }

    #[test]
    fn this_process_s_children_are_counted() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut limit = ProcessLimit::new(100_000);
        assert_eq!(limit.over(me), None);
        assert!(limit.counted >= 1);
        let mut strict = ProcessLimit::new(1);
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(strict.over(me), Some(2), "counted up to max + 1");
        for c in [&mut child, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

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
