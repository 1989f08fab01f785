//! Big start: time to ready and memory with 100k agents and full histories on disk; and the
//! first start on files an older version left readable by others (tightened once).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use crate::measure::*;
use crate::{row, Phases, Row};

/// Writes `contents` to a new file 0600, as heartbeatd writes its own.
fn write_private(path: &Path, contents: &[u8]) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .unwrap();
}

/// Start-up with many agents whose full histories are on disk: state files are read, the
/// histories are not (each is audited with one `statx`: see data_dir).
pub(crate) fn big_start(phases: &Phases, rows: &mut Vec<Row>) {
    let agents = phases.big_start_agents;
    const HISTORY: usize = 1440;
    eprintln!("big start: writing {agents} agents with {HISTORY}-point histories …");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for sub in ["agents", "history"] {
        fs::create_dir_all(data.join(sub)).unwrap();
    }
    let mut history = String::with_capacity(HISTORY * 64);
    for n in 1..=HISTORY {
        let _ = writeln!(
            history,
            "{{\"n\":{n},\"t\":\"2026-11-24T06:00:00Z\",\"c\":12.5,\"m\":67108864}}"
        );
    }
    let written = Instant::now();
    for n in 1..=agents {
        let id = format!("load-{n:06}");
        let state = format!(
            "{{\"format_version\":2,\"id\":\"{id}\",\"name\":\"\",\"type\":\"load\",\"status\":\"running\",\"pid\":10001,\
             \"last_heartbeat\":\"2026-11-24T06:00:00Z\",\"last_seen\":\"2026-11-24T06:00:00Z\",\"heartbeat_count\":{HISTORY},\"history_records\":{HISTORY}}}"
        );
        write_private(&data.join("agents").join(format!("{id}.json")), state.as_bytes());
        write_private(&data.join("history").join(format!("{id}.log")), history.as_bytes());
    }
    eprintln!(
        "big start: {:.1} GB written in {:.0} s; starting …",
        (agents * history.len()) as f64 / 1e9,
        written.elapsed().as_secs_f64()
    );
    // Drop what writing the files left in the page cache? No: a restarting daemon finds its
    // files cached too; the figure is start-up work, not cold-disk reads.
    let started = Instant::now();
    let mut daemon = Daemon::start_in(dir.path(), &format!("log_level = \"warn\"\n{}", agents_config(agents)));
    let ready_s = started.elapsed().as_secs_f64();
    let rss = memory_mib(daemon.pid(), "VmRSS:");
    let peak = memory_mib(daemon.pid(), "VmHWM:");
    let agents_with_state = get_json(daemon.port, "/agents?limit=1")
        .map_or(0, |page| page["agents"][0]["heartbeat_count"].as_u64().unwrap_or(0));
    daemon.stop_with("TERM");

    // The same files as an older version left them (0644): tightened at this start, once.
    for sub in ["agents", "history"] {
        for entry in fs::read_dir(data.join(sub)).unwrap() {
            fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let started = Instant::now();
    let mut daemon = Daemon::start_in(dir.path(), &format!("log_level = \"warn\"\n{}", agents_config(agents)));
    let upgrade_s = started.elapsed().as_secs_f64();
    daemon.stop_with("TERM");
    let label = if agents == 100_000 { "100k" } else { "10k (quick)" };
    rows.push(
        row(
            "big start",
            format!("{label} agents, full histories: s to ready"),
            format!("{ready_s:.2}"),
        )
        .target("≤ 5 s", ready_s <= 5.0),
    );
    rows.push(
        row(
            "big start",
            "  RSS MiB once ready (peak)",
            format!("{rss:.0} ({peak:.0})"),
        )
        .target("≤ 512 MiB", rss <= 512.0),
    );
    rows.push(row(
        "big start",
        "  state loaded (heartbeat_count of the first)",
        agents_with_state.to_string(),
    ));
    rows.push(
        row(
            "big start",
            "  again, files 0644 as older versions left them (tightened once): s to ready",
            format!("{upgrade_s:.2}"),
        )
        .target("≤ 5 s", upgrade_s <= 5.0),
    );
}
