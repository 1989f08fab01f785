//! Supervision against three real peers: supervisord, s6 and runit (Debian's `supervisor`,
//! `s6` and `runit`, installed by `make bench-tools`). All four run the same 500 `sleep`
//! programs with their output logged, one supervisor after the other, in rounds whose order
//! rotates, and are measured the same way from `/proc` (see [`procs`]: every program carries
//! a marker in its environment).
//!
//! Each round, from a fresh start ([`round::at_rest`]):
//! - start: until all 500 programs have been exec'd, and until the supervisor says all run;
//! - memory once settled: PSS of the supervisor plus its per-service helpers (the parent of
//!   each program and each logger with its parent, found from the programs, not from the
//!   supervisor's children), and the private memory of each kind of helper;
//! - idle CPU of the same processes over a quiet window (utime + stime, and the exact run
//!   time from schedstat beside it);
//! - restart latency: SIGKILL of one program until its replacement has been exec'd, for
//!   several programs (heartbeatd with `restart_backoff_ms = 0`, the floor; the peers restart
//!   a program that ran for more than a second at once).
//!
//! In the first round only ([`round::restarts`]; they are counts, the same every round): a
//! graceful restart of the supervisor (SIGTERM, start again on the same tree), what its own
//! graceful stop leaves behind, and a kill -9 of the supervisor then a start again.
//!
//! Medians over the rounds; the kills of all rounds are pooled for p50/p99, and the idle
//! windows for the CPU (one clock tick over the pooled window is the resolution, printed).

mod ingest;
pub(crate) mod peers;
pub(crate) mod procs;
pub(crate) mod round;

pub(crate) use ingest::ingest_while_supervising;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::measure::clock_ticks;
use crate::{row, Phases, Row};
use peers::{Kind, PROGRAMS};
use procs::{median, quantile};
use round::{AtRest, Restarts};

/// Rounds of the at-rest measures (BENCH_QUICK: 1).
const ROUNDS: usize = 3;
/// Programs killed per round (BENCH_QUICK: 20).
const KILLS: usize = 50;
/// The quiet window per round, in seconds (BENCH_QUICK: 5): three pooled make 60 s, where
/// one clock tick (10 ms) is 0.017 % of a core.
const IDLE_S: f64 = 20.0;

/// One supervisor over all rounds.
struct Summary {
    kind: Kind,
    rest: Vec<AtRest>,
    restarts: Option<Restarts>,
    /// Processes of its trees still alive after the bench's own clean-up (SIGKILL of each).
    left_after_cleanup: usize,
}

impl Summary {
    fn median(&self, f: impl Fn(&AtRest) -> f64) -> f64 {
        median(&mut self.rest.iter().map(f).collect::<Vec<_>>())
    }

    fn latencies(&self) -> Vec<f64> {
        self.rest.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect()
    }

    fn latency(&self, q: f64) -> f64 {
        quantile(&mut self.latencies(), q)
    }

    /// Idle CPU in % of a core: (by utime + stime, exactly by schedstat), over the pooled
    /// windows.
    fn idle_percent(&self) -> (f64, f64) {
        let window: f64 = self.rest.iter().map(|r| r.idle_s).sum();
        let ticks: u64 = self.rest.iter().map(|r| r.idle.ticks).sum();
        let nanos: u64 = self.rest.iter().map(|r| r.idle.nanoseconds).sum();
        (
            ticks as f64 / clock_ticks() / window * 100.0,
            nanos as f64 / 1e9 / window * 100.0,
        )
    }

    /// Kind of helper → median over the rounds of its median private KiB, and how many.
    fn private(&self) -> BTreeMap<String, (usize, f64)> {
        let mut kinds: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
        for rest in &self.rest {
            for (kind, (count, kib)) in &rest.private {
                let entry = kinds.entry(kind.clone()).or_default();
                entry.0 = entry.0.max(*count);
                entry.1.push(*kib);
            }
        }
        kinds
            .into_iter()
            .map(|(kind, (count, mut kib))| (kind, (count, median(&mut kib))))
            .collect()
    }
}

/// Runs every installed supervisor for the rounds; the summaries in [`Kind::ALL`] order.
fn measure_all(phases: &Phases) -> Vec<Summary> {
    let quick = phases.idle_s < 30.0;
    let (rounds, kills, idle_s) = if quick { (1, 20, 5.0) } else { (ROUNDS, KILLS, IDLE_S) };
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.installed()).collect();
    let mut summaries: Vec<Summary> = kinds
        .iter()
        .map(|&kind| Summary {
            kind,
            rest: Vec::new(),
            restarts: None,
            left_after_cleanup: 0,
        })
        .collect();
    for round in 0..rounds {
        // Alternate: each supervisor goes first in some round.
        for i in 0..summaries.len() {
            let at = (i + round) % summaries.len();
            let summary = &mut summaries[at];
            let prefix = procs::prefix(&summary.kind.name()[..2], round);
            eprintln!(
                "supervise: round {} of {rounds}: {} with {PROGRAMS} programs …",
                round + 1,
                summary.kind.name()
            );
            let mut sup = summary.kind.prepare(&prefix);
            summary.rest.push(round::at_rest(sup.as_mut(), idle_s, kills));
            if round == 0 {
                summary.restarts = Some(round::restarts(sup.as_mut()));
            } else {
                sup.stop();
            }
            drop(sup);
            summary.left_after_cleanup += procs::tree(&prefix).len() + procs::marked(&prefix).len();
        }
    }
    summaries
}

pub(crate) fn supervise(phases: &Phases, rows: &mut Vec<Row>) {
    let stale = procs::sweep_stale();
    if stale > 0 {
        eprintln!("supervise: killed {stale} processes an earlier, interrupted run left behind");
    }
    let started = Instant::now();
    let summaries = measure_all(phases);
    eprintln!("supervise: measured in {:.0} s", started.elapsed().as_secs_f64());
    let Some(ours) = summaries.iter().find(|s| s.kind == Kind::Heartbeatd) else {
        return;
    };
    let peers: Vec<&Summary> = summaries.iter().filter(|s| s.kind != Kind::Heartbeatd).collect();
    for kind in Kind::ALL.into_iter().filter(|k| !k.installed()) {
        rows.push(row(
            "supervise",
            format!("{} comparison", kind.name()),
            "skipped: not installed (make bench-tools installs it)",
        ));
    }
    let peer = |kind: Kind| peers.iter().find(|s| s.kind == kind).copied();
    let ratio_to = |ours: f64, theirs: Option<f64>, name: &str| {
        theirs.map_or(String::new(), |t| format!(" ({:.2} × {name})", ours / t))
    };

    // PSS of supervisor + helpers.
    let pss = |s: &Summary| s.median(|r| r.pss_mib);
    let runit_pss = peer(Kind::Runit).map(pss);
    rows.push(
        row(
            "supervise",
            format!("PSS, supervisor + per-service helpers ({PROGRAMS} programs)"),
            format!("{:.1} MiB{}", pss(ours), ratio_to(pss(ours), runit_pss, "runit")),
        )
        .baseline(beside(&peers, |s| format!("{:.1}", pss(s))))
        .target(
            "≤ 60 MiB, < runit",
            pss(ours) <= 60.0 && runit_pss.is_none_or(|r| pss(ours) < r),
        ),
    );
    let helpers = |s: &Summary| format!("{}", s.rest.first().map_or(0, |r| r.helpers));
    rows.push(
        row("supervise", "  helpers counted beside the supervisor", helpers(ours))
            .baseline(beside(&peers, |s| helpers(s))),
    );
    // Private memory per helper, by kind.
    let kinds = |s: &Summary| {
        let private = s.private();
        if private.is_empty() {
            return "none".to_owned();
        }
        private
            .iter()
            .map(|(kind, (count, kib))| format!("{kind} {kib:.0} (×{count})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let worst_keeper = ours.private().values().map(|(_, kib)| *kib).fold(0.0, f64::max);
    let runsv = peer(Kind::Runit).and_then(|s| s.private().get("runsv").map(|(_, kib)| *kib));
    rows.push(
        row("supervise", "private memory per helper (KiB, median)", kinds(ours))
            .baseline(beside(&peers, kinds))
            .target(
                "≤ 90 KiB, < runsv",
                worst_keeper <= 90.0 && runsv.is_none_or(|r| worst_keeper < r),
            ),
    );
    let rss = |s: &Summary| s.median(|r| r.rss_mib);
    rows.push(
        row(
            "supervise",
            "  RSS of the supervisor process alone",
            format!("{:.1} MiB", rss(ours)),
        )
        .baseline(beside(&peers, |s| format!("{:.1}", rss(s)))),
    );

    // Restart latency of a killed program.
    let p50 = |s: &Summary| s.latency(0.5);
    let p99 = |s: &Summary| s.latency(0.99);
    let s6_p50 = peer(Kind::S6).map(p50);
    rows.push(
        row(
            "supervise",
            "kill -9 of a program → new pid exec'd, p50",
            format!("{:.1} ms{}", p50(ours), ratio_to(p50(ours), s6_p50, "s6")),
        )
        .baseline(beside(&peers, |s| format!("{:.1}", p50(s))))
        .target("≤ s6", s6_p50.is_none_or(|t| p50(ours) <= t)),
    );
    rows.push(
        row("supervise", "  p99", format!("{:.1} ms", p99(ours)))
            .baseline(beside(&peers, |s| format!("{:.1}", p99(s)))),
    );
    let measured = |s: &Summary| {
        format!(
            "{}/{}",
            s.latencies().len(),
            s.rest.iter().map(|r| r.kills).sum::<usize>()
        )
    };
    rows.push(row("supervise", "  replacements seen / kills", measured(ours)).baseline(beside(&peers, measured)));

    // Idle CPU.
    let (ticks, exact) = ours.idle_percent();
    let window: f64 = ours.rest.iter().map(|r| r.idle_s).sum();
    rows.push(
        row(
            "supervise",
            "idle CPU, supervisor + helpers (% of a core)",
            format!("{ticks:.3} % (exact {exact:.3} %)"),
        )
        .baseline(beside(&peers, |s| {
            let (t, e) = s.idle_percent();
            format!("{t:.3} ({e:.3})")
        }))
        .target("≤ 0.02 %", ticks <= 0.02 && exact <= 0.02),
    );
    rows.push(row(
        "supervise",
        "  quiet window pooled; one clock tick over it",
        format!("{window:.0} s; {:.3} %", 100.0 / clock_ticks() / window),
    ));

    // Start.
    let running = |s: &Summary| s.median(|r| r.says_running_s);
    let execd = |s: &Summary| s.median(|r| r.exec_all_s);
    let sd_running = peer(Kind::Supervisord).map(running);
    let sd_execd = peer(Kind::Supervisord).map(execd);
    rows.push(
        row(
            "supervise",
            format!("all {PROGRAMS} running by its own word"),
            format!("{:.2} s", running(ours)),
        )
        .baseline(beside(&peers, |s| format!("{:.2}", running(s))))
        .target("≤ supervisord", sd_running.is_none_or(|t| running(ours) <= t)),
    );
    rows.push(
        row(
            "supervise",
            format!("  all {PROGRAMS} exec'd"),
            format!("{:.2} s", execd(ours)),
        )
        .baseline(beside(&peers, |s| format!("{:.2}", execd(s))))
        .target("≤ supervisord", sd_execd.is_none_or(|t| execd(ours) <= t)),
    );

    let all_clean = summaries.iter().all(|s| s.left_after_cleanup == 0);
    restart_rows(ours, &peers, all_clean, rows);
}

/// `f` of each peer measured: "supervisord 1.0 · s6 2.0 · runit 3.0".
fn beside(peers: &[&Summary], f: impl Fn(&Summary) -> String) -> String {
    peers
        .iter()
        .map(|s| format!("{} {}", s.kind.name(), f(s)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The rows of the supervisor's own restarts (first round).
fn restart_rows(ours: &Summary, peers: &[&Summary], all_clean: bool, rows: &mut Vec<Row>) {
    let Some(our) = &ours.restarts else { return };
    let of = |s: &Summary, f: &dyn Fn(&Restarts) -> String| s.restarts.as_ref().map_or("-".to_owned(), f);
    let kill9 = |r: &Restarts| {
        format!(
            "{} / {}{}",
            r.kill9.restarted,
            r.kill9.duplicates(),
            if r.kill9.incomplete { " (not all up again)" } else { "" }
        )
    };
    rows.push(
        row(
            "supervise",
            "kill -9 of the supervisor, start again: restarted / duplicates",
            kill9(our),
        )
        .baseline(beside(peers, |s| of(s, &kill9)))
        .target("0 / 0", our.kill9.restarted == 0 && our.kill9.duplicates() == 0),
    );
    let graceful = |r: &Restarts| {
        let mut down = r.graceful.down_s.clone();
        if down.is_empty() {
            format!("{}", r.graceful.restarted)
        } else {
            format!(
                "{} (down {:.2} s, max {:.2})",
                r.graceful.restarted,
                median(&mut down),
                quantile(&mut down, 1.0)
            )
        }
    };
    rows.push(
        row(
            "supervise",
            "graceful restart (SIGTERM, start): programs restarted",
            graceful(our),
        )
        .baseline(beside(peers, |s| of(s, &graceful)))
        .target("0", our.graceful.restarted == 0),
    );
    let left = |r: &Restarts| r.left_after_stop.to_string();
    rows.push(
        row("supervise", "processes left behind by its own graceful stop", left(our))
            .baseline(beside(peers, |s| of(s, &left)))
            .target("0", our.left_after_stop == 0),
    );
    let took = |r: &Restarts| format!("{:.2} s", r.stop_s);
    rows.push(row("supervise", "  that stop took", took(our)).baseline(beside(peers, |s| of(s, &took))));
    let cleanup = |s: &Summary| s.left_after_cleanup.to_string();
    rows.push(
        row("supervise", "processes left after the bench's clean-up", cleanup(ours))
            .baseline(beside(peers, cleanup))
            .target("0", all_clean),
    );
}
