//! `heartbeatd ctl status [ID]`: every agent in one aligned row each, or one agent in detail
//! (as `systemctl status` shows a unit): its process, its liveness, how it last ended, what
//! it uses, and its last lines of output.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::transport::Target;
use super::CtlError;

/// Lines of output `status ID` shows.
const DETAIL_LINES: usize = 10;

pub fn list(target: &Target) -> Result<(), CtlError> {
    let mut agents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/agents?limit=10000&after={id}"),
            None => "/agents?limit=10000".to_owned(),
        };
        let page = target.call_ok("GET", &path)?;
        let items = page["agents"].as_array().cloned().unwrap_or_default();
        agents.extend(items);
        match page["next_after"].as_str() {
            Some(next) if !next.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    print!("{}", super::printable(&status_table(&agents, Utc::now())));
    Ok(())
}

/// One agent in detail.
pub fn detail(target: &Target, id: &str) -> Result<(), CtlError> {
    let agent = target.call_ok("GET", &format!("/agents/{id}"))?;
    let output = if agent.get("command").is_some() {
        let (status, body) = target.call("GET", &format!("/agents/{id}/log?lines={DETAIL_LINES}"), None)?;
        (status == 200).then(|| body["log"]["data"].as_str().unwrap_or_default().to_owned())
    } else {
        None
    };
    print!(
        "{}",
        super::printable(&detail_text(&agent, output.as_deref(), Utc::now()))
    );
    Ok(())
}

/// The text of `status ID`.
pub fn detail_text(agent: &Value, output: Option<&str>, now: DateTime<Utc>) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let ago = |at: &Value| {
        at.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human((now - t.with_timezone(&Utc)).num_seconds().max(0) as u64))
    };
    let mut lines = vec![format!(
        "{}{}",
        agent["id"].as_str().unwrap_or("?"),
        text(&agent["name"])
            .filter(|n| !n.is_empty())
            .map(|n| format!(" - {n}"))
            .unwrap_or_default()
    )];
    let mut row = |label: &str, value: String| lines.push(format!("  {label:<14}{value}"));
    if let Some(command) = agent["command"].as_array() {
        let argv: Vec<String> = command.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        row("command:", argv.join(" "));
        let process = &agent["process"];
        let state = process["state"].as_str().unwrap_or("-");
        let since = match state {
            "running" | "starting" => ago(&process["started_at"])
                .map(|a| format!(" since {a}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let pid = process["pid"]
            .as_i64()
            .map(|p| format!(", pid {p}"))
            .unwrap_or_default();
        row("process:", format!("{state}{pid}{since}"));
        row(
            "restarts:",
            process["restarts"].as_u64().map_or("-".into(), |r| r.to_string()),
        );
        if let Some(exit) = process["last_exit"].as_object() {
            let how = match (
                exit.get("code").and_then(Value::as_i64),
                exit.get("signal").and_then(Value::as_str),
            ) {
                (Some(code), _) => format!("code {code}"),
                (None, Some(signal)) => signal.to_owned(),
                _ => "unknown".to_owned(),
            };
            let reason = exit.get("reason").and_then(Value::as_str).unwrap_or("-");
            let when = exit
                .get("at")
                .and_then(ago)
                .map(|a| format!(", {a} ago"))
                .unwrap_or_default();
            row("last exit:", format!("{how} ({reason}){when}"));
        }
        let usage = &process["usage"];
        let measured = ago(&usage["at"])
            .map(|a| format!(" (measured {a} ago)"))
            .unwrap_or_default();
        if let Some(cpu) = usage["cpu_ratio"].as_f64() {
            row("cpu:", format!("{} of a core{measured}", percent(cpu)));
        }
        if let (Some(memory), Some(processes)) = (usage["memory_bytes"].as_u64(), usage["processes"].as_u64()) {
            let plural = if processes == 1 { "" } else { "es" };
            row(
                "memory:",
                format!("{} (PSS), {processes} process{plural}", bytes(memory)),
            );
        }
    }
    let liveness = agent["status"].as_str().unwrap_or("-");
    let since = ago(&agent["status_since"])
        .map(|a| format!(" for {a}"))
        .unwrap_or_default();
    row("liveness:", format!("{liveness}{since}"));
    row(
        "last seen:",
        ago(&agent["last_seen"]).map_or_else(|| "never".to_owned(), |a| format!("{a} ago")),
    );
    if let Some(reported) = agent["reported_status"].as_str() {
        row("reported:", reported.to_owned());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    if let Some(output) = output {
        out.push_str("\n  last output:\n");
        for line in output.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// A CPU ratio (1.0: one core) as a percent of one core: `98.5 %`, `250.0 %`.
fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

/// `1.5 GiB`, `12.0 MiB`, `512 KiB`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{} KiB", n / 1024),
    }
}

/// The columns of `ctl status`.
const COLUMNS: usize = 10;

/// The rows of `ctl status`, aligned.
pub fn status_table(agents: &[Value], now: DateTime<Utc>) -> String {
    let ago = |at: Option<&str>| -> String {
        at.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human((now - t.with_timezone(&Utc)).num_seconds().max(0) as u64))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows: Vec<[String; COLUMNS]> = vec![[
        "ID".to_owned(),
        "PROCESS".into(),
        "PID".into(),
        "UPTIME".into(),
        "CPU".into(),
        "MEM".into(),
        "LIVENESS".into(),
        "LAST HEARTBEAT".into(),
        "RESTARTS".into(),
        "REASON".into(),
    ]];
    for agent in agents {
        let process = &agent["process"];
        let running = matches!(process["state"].as_str(), Some("running" | "starting"));
        let usage = &process["usage"];
        rows.push([
            agent["id"].as_str().unwrap_or("?").to_owned(),
            process["state"].as_str().unwrap_or("-").to_owned(),
            process["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
            if running {
                ago(process["started_at"].as_str())
            } else {
                "-".into()
            },
            usage["cpu_ratio"]
                .as_f64()
                .map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
            usage["memory_bytes"].as_u64().map_or("-".into(), bytes),
            agent["status"].as_str().unwrap_or("-").to_owned(),
            match agent["last_seen"].as_str() {
                Some(_) => format!("{} ago", ago(agent["last_seen"].as_str())),
                None => "never".into(),
            },
            process["restarts"].as_u64().map_or("-".into(), |r| r.to_string()),
            process["last_exit"]["reason"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
pub fn human(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_says_what_an_operator_asks_first() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let agent = serde_json::json!({"id": "web", "name": "Web", "status": "up", "status_since": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:09:58Z", "command": ["/usr/bin/web", "--port", "80"],
            "process": {"state": "running", "pid": 77, "started_at": "2026-01-01T00:09:30Z", "restarts": 3,
                "usage": {"cpu_ratio": 0.125, "memory_bytes": 52428800, "processes": 3, "at": "2026-01-01T00:09:57Z"},
                "last_exit": {"code": 3, "reason": "exited", "at": "2026-01-01T00:09:00Z"}}});
        let text = detail_text(&agent, Some("boom\nexit 3\n"), now);
        for wanted in [
            "web - Web",
            "command:      /usr/bin/web --port 80",
            "process:      running, pid 77 since 30s",
            "restarts:     3",
            "last exit:    code 3 (exited), 1m0s ago",
            "cpu:          12.5 % of a core (measured 3s ago)",
            "memory:       50.0 MiB (PSS), 3 processes",
            "liveness:     up for 10m0s",
            "last seen:    2s ago",
            "    boom",
            "    exit 3",
        ] {
            assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
        }
    }

    #[test]
    fn status_rows_are_aligned_and_say_dash_for_what_is_not_there() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let agents = vec![
            serde_json::json!({"id": "web", "status": "up", "last_seen": "2026-01-01T00:09:58Z",
                "process": {"state": "running", "pid": 4242, "started_at": "2026-01-01T00:00:00Z", "restarts": 3,
                    "usage": {"cpu_ratio": 0.985, "memory_bytes": 12582912, "processes": 1, "at": "2026-01-01T00:09:59Z"}}}),
            serde_json::json!({"id": "passive-agent-1", "status": "new", "last_seen": null}),
        ];
        let table = status_table(&agents, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("web              running  4242  10m0s   98.5%  12.0 MiB  up"),
            "{table}"
        );
        assert!(lines[1].ends_with("2s ago          3         -"), "{table}");
        assert!(lines[2].contains("never"), "{table}");
        let column = lines[0].find("PROCESS").unwrap();
        assert_eq!(&lines[2][column..column + 1], "-");
        for header in ["CPU", "MEM"] {
            let column = lines[0].find(header).unwrap();
            assert_eq!(&lines[2][column..column + 1], "-", "{header}: {table}");
        }
    }
}
