//! `make bench`: heartbeatd's performance scenarios, printed as one table.
//!
//! Every figure comes from the real binaries started here: `heartbeatd` (through the shared
//! harness), the ceiling server `heartbeatd-ceiling` (actix-web, the same parse and checks,
//! nothing else) and the load generator `heartbeatd-load`; `wrk` checks the load generator.
//! Speed is reported as a ratio to the ceiling measured in the same run, because absolute
//! numbers drift between machines and runs. Targets are printed beside the figures; nothing
//! here asserts a time.
//!
//! `BENCH_QUICK=1` shortens every phase (for a smoke run); the figures in docs/performance.md
//! come from a full run. Arguments name scenarios to run (`saturation fleet idle drain history
//! scrape steady big-start supervise output-flood status-page slow-readers alert-backlog
//! kill-9 upgrade`); none runs them all.
//!
//! | file | what |
//! |---|---|
//! | `measure.rs` | the measuring tools shared by the scenarios |
//! | `saturation.rs`, `fleet.rs`, `idle.rs`, `drain.rs`, `history.rs`, `steady.rs`, `big_start.rs` | one scenario each |
//! | `supervise/` | 500 supervised programs, heartbeatd against supervisord, s6 and runit (`ingest.rs`: heartbeats while supervising) |
//! | `upgrade.rs` | `heartbeatd ctl upgrade` with 500 supervised programs under steady load: programs restarted, heartbeats refused, time to serve |
//! | `output_flood.rs` | `yes` under supervision: its keeper's CPU, and ingest beside it against without |
//! | `scrape.rs` | `/metrics` with 10k per-agent series at rest, against 10 agents |
//! | `status_page.rs` | first paint of the status page in headless Chromium, 10k agents under a steady load against 10 |
//! | `slow_readers.rs` | 200 clients that never read and 16 log followers beside 10k heartbeats/s, against none |
//! | `kill_loss.rs` | the time a `kill -9` loses under load, against `flush_interval_ms` |
//! | `alert_backlog.rs` | heartbeats while 10k agents are down and every `alertmanager_url` blackholes, against no Alertmanager |

mod alert_backlog;
mod big_start;
mod drain;
mod fleet;
mod history;
mod idle;
mod kill_loss;
mod measure;
mod output_flood;
mod saturation;
mod scrape;
mod slow_readers;
mod status_page;
mod steady;
mod supervise;
mod upgrade;

use std::fmt::Write as _;
use std::fs;
use std::thread;
use std::time::Instant;

/// Phase lengths and sizes; shortened by `BENCH_QUICK=1`.
pub(crate) struct Phases {
    pub(crate) warmup_s: f64,
    pub(crate) saturation_s: f64,
    pub(crate) fleet_s: f64,
    pub(crate) idle_s: f64,
    /// Agents with full histories on disk for the start-up scenario.
    pub(crate) big_start_agents: usize,
}

impl Phases {
    pub(crate) fn from_env() -> Self {
        if std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self {
                warmup_s: 1.0,
                saturation_s: 3.0,
                fleet_s: 10.0,
                idle_s: 10.0,
                big_start_agents: 10_000,
            }
        } else {
            Self {
                warmup_s: 3.0,
                saturation_s: 10.0,
                fleet_s: 60.0,
                idle_s: 30.0,
                big_start_agents: 100_000,
            }
        }
    }
}

/// One row of the final table.
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) metric: String,
    pub(crate) heartbeatd: String,
    pub(crate) baseline: String,
    pub(crate) target: &'static str,
    pub(crate) verdict: &'static str,
}

impl Row {
    pub(crate) fn baseline(mut self, value: impl Into<String>) -> Self {
        self.baseline = value.into();
        self
    }

    pub(crate) fn target(mut self, target: &'static str, met: bool) -> Self {
        self.target = target;
        self.verdict = if met { "met" } else { "MISSED" };
        self
    }
}

pub(crate) fn row(scenario: &'static str, metric: impl Into<String>, heartbeatd: impl Into<String>) -> Row {
    Row {
        scenario,
        metric: metric.into(),
        heartbeatd: heartbeatd.into(),
        baseline: String::new(),
        target: "",
        verdict: "",
    }
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {model}")
}

fn print(rows: &[Row]) -> String {
    let widths = [12, 46, 18, 12, 18];
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 6]| {
        let _ = writeln!(
            out,
            "| {:w0$} | {:w1$} | {:w2$} | {:w3$} | {:w4$} | {} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
    };
    line(
        &mut out,
        ["scenario", "metric", "heartbeatd", "baseline", "target", "verdict"],
    );
    let _ = writeln!(
        out,
        "|{}|",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|") + "|---------"
    );
    for r in rows {
        line(
            &mut out,
            [r.scenario, &r.metric, &r.heartbeatd, &r.baseline, r.target, r.verdict],
        );
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; any other argument selects scenarios by name.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let phases = Phases::from_env();
    let mut rows = Vec::new();
    let started = Instant::now();
    if run("saturation") {
        saturation::saturation(&phases, &mut rows);
    }
    if run("fleet") {
        fleet::fleet(&phases, &mut rows);
    }
    if run("idle") {
        idle::idle(&phases, &mut rows);
    }
    if run("drain") {
        drain::drain(&mut rows);
    }
    if run("history") {
        history::history_cost(&phases, &mut rows);
    }
    if run("scrape") {
        scrape::scrape_at_rest(&mut rows);
    }
    if run("steady") {
        steady::steady_fleet(&phases, &mut rows);
    }
    if run("big-start") {
        big_start::big_start(&phases, &mut rows);
    }
    if run("slow-readers") {
        slow_readers::slow_readers(&phases, &mut rows);
    }
    if run("status-page") {
        status_page::status_page(&mut rows);
    }
    if run("kill-9") {
        kill_loss::kill_loss(&mut rows);
    }
    if run("alert-backlog") {
        alert_backlog::alert_backlog(&phases, &mut rows);
    }
    if run("supervise") {
        supervise::supervise(&phases, &mut rows);
        supervise::ingest_while_supervising(&phases, &mut rows);
    }
    if run("upgrade") {
        upgrade::upgrade(&phases, &mut rows);
    }
    if run("output-flood") {
        output_flood::output_flood(&phases, &mut rows);
    }
    println!();
    println!(
        "heartbeatd bench on {} ({:.0} s)",
        machine(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", print(&rows));
}
