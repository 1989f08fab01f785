//! Saturation: 64 connections as fast as they go, heartbeatd on its built-in defaults against the ceiling measured in the same run (and wrk as a check of the load tool).

use crate::measure::*;
use crate::{row, Phases, Row};

pub(crate) fn saturation(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!("saturation: ceiling …");
    let (mut ceiling, ceiling_port) = start_ceiling(AGENTS);
    let ceiling_url = format!("http://127.0.0.1:{ceiling_port}/heartbeat");
    let base = load(&ceiling_url, AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let base_wrk = wrk(&ceiling_url, AGENTS, phases.saturation_s);
    let _ = ceiling.kill();
    let _ = ceiling.wait();

    eprintln!("saturation: heartbeatd …");
    // The built-in defaults (workers, queue_capacity, flush interval ...): what a user who
    // never tunes gets. Only the agents are configured.
    let daemon = start_daemon(&agents_config(AGENTS));
    let ours = load(&daemon.url(), AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let stats = wait_quiet(&daemon);
    let ours_wrk = wrk(&daemon.url(), AGENTS, phases.saturation_s);
    let after_wrk = wait_quiet(&daemon);
    drop(daemon);

    let ok_rate = ours["ok_per_s"].as_f64().unwrap_or(0.0);
    let base_rate = base["ok_per_s"].as_f64().unwrap_or(f64::NAN);
    let ratio = ok_rate / base_rate;
    rows.push(
        row(
            "saturation",
            "heartbeats/s answered 200 (heartbeatd-load)",
            format!("{ok_rate:.0}"),
        )
        .baseline(format!("{base_rate:.0}"))
        .target("≥ 0.85 × ceiling (built-in defaults)", ratio >= 0.85),
    );
    rows.push(row("saturation", "  ratio to the ceiling", format!("{ratio:.2}")));
    rows.push(
        row(
            "saturation",
            "p99 latency ms (baseline: ceiling)",
            format!("{:.2}", p99(&ours)),
        )
        .baseline(format!("{:.2}", p99(&base)))
        .target("≤ 2 ms", p99(&ours) <= 2.0),
    );
    let errors_other_than_503: u64 = ours["by_status"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "200" && *k != "503")
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
        + ours["transport_errors"].as_u64().unwrap_or(0);
    rows.push(
        row(
            "saturation",
            "answers other than 200/503",
            errors_other_than_503.to_string(),
        )
        .target("0", errors_other_than_503 == 0),
    );
    let share_503 = 100.0 * status_share(&ours, "503");
    rows.push(
        row("saturation", "  share answered 503", format!("{share_503:.3} %")).target("< 0.1 %", share_503 < 0.1),
    );
    let accepted = all_ok(&ours);
    let processed = stats["total_processed"].as_u64().unwrap_or(0);
    rows.push(
        row(
            "saturation",
            "processed == accepted (200s incl. warm-up)",
            format!("{processed} == {accepted}"),
        )
        .target(
            "equal",
            processed == accepted && stats["total_received"].as_u64() == Some(accepted),
        ),
    );
    match (ours_wrk, base_wrk) {
        (Some(ours), Some(base)) => {
            let wrk_processed = after_wrk["total_processed"].as_u64().unwrap_or(0) - processed;
            let (rps, base_rps) = (ours.requests_per_s, base.requests_per_s);
            rows.push(
                row("saturation", "wrk -t1 -c64: requests/s", format!("{rps:.0}")).baseline(format!("{base_rps:.0}")),
            );
            rows.push(row(
                "saturation",
                "  wrk ratio to the ceiling",
                format!("{:.2}", rps / base_rps),
            ));
            rows.push(
                row("saturation", "  wrk p99 ms", format!("{:.2}", ours.p99_ms))
                    .baseline(format!("{:.2}", base.p99_ms)),
            );
            rows.push(
                row("saturation", "  wrk non-2xx answers", ours.non_2xx.to_string())
                    .baseline(base.non_2xx.to_string())
                    .target("0", ours.non_2xx == 0 && base.non_2xx == 0),
            );
            rows.push(row(
                "saturation",
                "  heartbeats processed during wrk",
                wrk_processed.to_string(),
            ));
        }
        _ => rows.push(row(
            "saturation",
            "wrk comparison",
            "skipped: wrk not installed (make bench installs it)",
        )),
    }
}
