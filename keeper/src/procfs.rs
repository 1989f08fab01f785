//! What heartbeatd reads about processes from `/proc`: parent, process group, CPU ticks and
//! memory of each process, and the trees they form.
//!
//! `/proc/<pid>/stat` is read for the trees: one short file per process, parsed from the last
//! `)` on (a command name may itself hold spaces and parentheses). `/proc/<pid>/smaps_rollup`
//! is read for proportional memory ([`read_pss`]) only where a limit needs it: the kernel
//! walks the whole address space to write it. A process that ends while it is read is simply
//! left out.

use std::collections::HashMap;
use std::fs;

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// User plus system CPU time of its children that have ended and that it has waited for
    /// (`cutime` + `cstime`), in clock ticks: a shell's short-lived commands show up here.
    pub children_cpu_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once(' ')?.0.trim().parse().ok()?;
    // After the name: state(3) ppid(4) pgrp(5) … utime(14) stime(15) cutime(16) cstime(17)
    // … rss(24).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let ticks = |n: usize| -> Option<u64> { Some(field(n)?.parse::<i64>().ok()?.max(0) as u64) };
    Some(ProcStat {
        pid,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: ticks(14)?.saturating_add(ticks(15)?),
        children_cpu_ticks: ticks(16)?.saturating_add(ticks(17)?),
        rss_pages: ticks(24)?,
    })
}

/// `/proc/<pid>/stat` of one process; `None` once it is gone.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is `root` or one of its descendants, walking parents up from `pid`.
pub fn is_in_tree(pid: i32, root: i32) -> bool {
    let mut current = pid;
    // Bounded: a tree deeper than this is not one a supervised agent makes.
    for _ in 0..64 {
        if current == root {
            return true;
        }
        match read_stat(current) {
            Some(stat) if stat.ppid > 0 => current = stat.ppid,
            _ => return false,
        }
    }
    false
}

/// The most processes a walk of a tree visits: a fork bomb inside the tree cannot make it
/// loop for ever.
pub const MAX_WALK: usize = 100_000;

/// The descendants of `root` (not `root` itself), found by walking the kernel's
/// `/proc/<pid>/task/<tid>/children` lists down from `root`: it reads only the tree, not every
/// process of the host (what a keeper does while stopping, many times a second). Falls back
/// to a full scan where the kernel has no `children` files.
pub fn descendants(root: i32) -> Vec<i32> {
    descendants_up_to(root, MAX_WALK)
}

/// How many descendants `root` has, counting no further than `at_most` (a keeper checking
/// `max_processes` reads no more of a fork bomb than it needs to).
pub fn count_descendants(root: i32, at_most: usize) -> usize {
    descendants_up_to(root, at_most.min(MAX_WALK)).len()
}

fn descendants_up_to(root: i32, at_most: usize) -> Vec<i32> {
    if !std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        let mut all: Vec<i32> = ProcessTable::scan()
            .descendants(root)
            .into_iter()
            .map(|p| p.pid)
            .collect();
        all.truncate(at_most);
        return all;
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        if found.len() >= at_most {
            break;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_ascii_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found.truncate(at_most);
    found
}

/// The proportional set size of `pid` in bytes (`Pss:` of `/proc/<pid>/smaps_rollup`): each
/// page it maps counted as a share of the processes mapping it, so a tree's shared pages add
/// up to one copy. `None` when it cannot be read (gone, or not ours to read).
pub fn read_pss(pid: i32) -> Option<u64> {
    parse_pss(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// The `Pss:` figure of a `smaps_rollup` text, in bytes.
pub fn parse_pss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let mut words = line.split_ascii_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kib.saturating_mul(1024))
}

/// Every process at one instant.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<i32, ProcStat>,
    children: HashMap<i32, Vec<i32>>,
}

impl ProcessTable {
    /// Reads every `/proc/<pid>/stat`.
    pub fn scan() -> Self {
        let mut table = ProcessTable::default();
        let Ok(entries) = fs::read_dir("/proc") else {
            return table;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(stat) = read_stat(pid) {
                table.insert(stat);
            }
        }
        table
    }

    fn insert(&mut self, stat: ProcStat) {
        self.children.entry(stat.ppid).or_default().push(stat.pid);
        self.processes.insert(stat.pid, stat);
    }

    /// The descendants of `root` (not `root` itself).
    pub fn descendants(&self, root: i32) -> Vec<ProcStat> {
        let mut found = Vec::new();
        let mut next = vec![root];
        while let Some(pid) = next.pop() {
            for child in self.children.get(&pid).into_iter().flatten() {
                if let Some(stat) = self.processes.get(child) {
                    found.push(*stat);
                    next.push(*child);
                }
            }
        }
        found
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// The page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_is_skipped_whole() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 25 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.pid, stat.ppid, stat.pgrp), (4242, 1, 4242));
        assert_eq!((stat.cpu_ticks, stat.children_cpu_ticks, stat.rss_pages), (10, 0, 25));
        let waited = "7 (sh) S 1 7 7 0 -1 0 0 0 0 0 2 1 40 9 20 0 1 0 100 1000 3 0";
        assert_eq!(parse_stat(waited).unwrap().children_cpu_ticks, 49);
        assert_eq!(parse_stat("12 (cut"), None);
    }

    #[test]
    fn this_process_is_in_its_own_tree_and_found_by_a_scan() {
        let me = std::process::id() as i32;
        let parent = read_stat(me).unwrap().ppid;
        assert!(is_in_tree(me, me));
        assert!(is_in_tree(me, parent));
        assert!(!is_in_tree(parent, me));
        let table = ProcessTable::scan();
        assert!(table.descendants(parent).iter().any(|p| p.pid == me));
        assert!(descendants(parent).contains(&me));
        assert!(!descendants(me).contains(&parent));
        assert_eq!(count_descendants(parent, 0), 0);
        assert_eq!(count_descendants(parent, 1), 1);
    }

    #[test]
    fn pss_is_read_in_bytes_from_smaps_rollup() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  4200 kB\nPss:  1234 kB\nPss_Anon: 1000 kB\n";
        assert_eq!(parse_pss(text), Some(1234 * 1024));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
        assert_eq!(parse_pss("Pss: 12 pages\n"), None);
        // This process's own, where the kernel has the file.
        if std::path::Path::new("/proc/self/smaps_rollup").exists() {
            assert!(read_pss(std::process::id() as i32).is_some_and(|b| b > 0));
        }
    }
}
