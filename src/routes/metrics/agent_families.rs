//! The per-agent families of `/metrics`, written straight into the text exposition format.
//!
//! With 10k agents these are 50k samples a scrape. Mirroring them into the `prometheus`
//! crate's vectors first (a hash lookup and a label allocation per sample), gathering
//! (cloning each into a proto message and sorting) and encoding took about 100 ms; writing
//! them from the agent list, which is already sorted by id, takes a few. The output is byte
//! for byte what the crate writes for the same values (the tests below compare family by
//! family), so Prometheus and promtool see no difference. Aggregate, process and histogram
//! families stay on the crate.

use std::fmt::Write as _;

use heartbeatd_actors::model::liveness::{AgentStatus, STATUS_COUNT};

/// One agent's per-agent samples. Rows are given sorted by id, as the crate sorts them.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow<'a> {
    pub id: &'a str,
    pub up: bool,
    /// Liveness says `down` (not `new`, `late`, `paused` or `stopped`).
    pub down: bool,
    /// Server receive time of the last heartbeat, Unix milliseconds (written as seconds).
    pub last_seen_ms: Option<i64>,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    /// Liveness transitions by the state entered, in `AgentStatus::ALL` order.
    pub transitions: Option<[u64; STATUS_COUNT]>,
}

/// A per-agent family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentFamily {
    Cpu,
    Down,
    LastSeen,
    Memory,
    Transitions,
    Up,
}

impl AgentFamily {
    /// In name order (the order the crate writes families in).
    pub const ALL: [AgentFamily; 6] = [
        Self::Cpu,
        Self::Down,
        Self::LastSeen,
        Self::Memory,
        Self::Transitions,
        Self::Up,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "heartbeatd_agent_cpu_percent",
            Self::Down => "heartbeatd_agent_down",
            Self::LastSeen => "heartbeatd_agent_last_seen_timestamp_seconds",
            Self::Memory => "heartbeatd_agent_memory_bytes",
            Self::Transitions => "heartbeatd_agent_transitions_total",
            Self::Up => "heartbeatd_agent_up",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Self::Cpu => "CPU percent in the agent's last heartbeat.",
            Self::Down => "1 when the agent is down (silent past interval + grace), 0 otherwise (new, up, late, paused, stopped).",
            Self::LastSeen => "Server receive time of the agent's last heartbeat, Unix seconds.",
            Self::Memory => "Memory bytes in the agent's last heartbeat.",
            Self::Transitions => "Liveness transitions of an agent since heartbeatd started, by the state entered (only states it entered).",
            Self::Up => "1 when the agent is up, 0 otherwise.",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Transitions => "counter",
            _ => "gauge",
        }
    }

    /// Writes the family (nothing when it has no sample, as the crate prunes empty families).
    pub fn encode(self, rows: &[AgentRow<'_>], out: &mut String) {
        let mut header = false;
        let mut sample = |out: &mut String, id: &str, extra: Option<(&str, &str)>, value: Value| {
            if !header {
                header = true;
                let _ = write!(
                    out,
                    "# HELP {} {}\n# TYPE {} {}\n",
                    self.name(),
                    self.help(),
                    self.name(),
                    self.kind()
                );
            }
            out.push_str(self.name());
            out.push_str("{agent_id=\"");
            push_label_value(out, id);
            out.push('"');
            if let Some((name, value)) = extra {
                out.push(',');
                out.push_str(name);
                out.push_str("=\"");
                push_label_value(out, value);
                out.push('"');
            }
            out.push_str("} ");
            value.push_to(out);
            out.push('\n');
        };
        for row in rows {
            match self {
                Self::Up => sample(out, row.id, None, Value::Float(if row.up { 1.0 } else { 0.0 })),
                Self::Down => sample(out, row.id, None, Value::Float(if row.down { 1.0 } else { 0.0 })),
                Self::LastSeen => {
                    if let Some(ms) = row.last_seen_ms {
                        sample(out, row.id, None, Value::Millis(ms))
                    }
                }
                Self::Cpu => {
                    if let Some(v) = row.cpu {
                        sample(out, row.id, None, Value::Float(v))
                    }
                }
                Self::Memory => {
                    if let Some(v) = row.memory {
                        sample(out, row.id, None, Value::Float(v))
                    }
                }
                Self::Transitions => {
                    if let Some(counts) = row.transitions {
                        for status in STATES_BY_NAME {
                            let count = counts[status as usize];
                            if count > 0 {
                                sample(out, row.id, Some(("to", status.name())), Value::Float(count as f64));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A sample's value, written as the crate writes an `f64` (its `Display`), but faster for the
/// common cases: whole numbers (states, counts, bytes) and millisecond timestamps.
#[derive(Clone, Copy)]
enum Value {
    Float(f64),
    /// Unix milliseconds, exported as seconds (`ms / 1000.0`).
    Millis(i64),
}

/// Below this a whole `f64` is exact and its `Display` is the integer's digits.
const EXACT: f64 = 1e15;

impl Value {
    fn push_to(self, out: &mut String) {
        match self {
            // -0.0 prints as "-0": left to Display.
            Self::Float(v) if v.fract() == 0.0 && v.abs() < EXACT && !(v == 0.0 && v.is_sign_negative()) => {
                push_integer(out, v as i64)
            }
            // ms / 1000 is the double nearest to the decimal S.mmm, and no shorter decimal
            // lies within its rounding interval (below 1e12 s neighbouring doubles are at most
            // 1.2e-4 apart, other 3-digit fractions 1e-3), so its shortest form is S.mmm
            // without trailing zeros: what Display prints.
            Self::Millis(ms) if (0..EXACT as i64).contains(&ms) => {
                push_integer(out, ms / 1000);
                let fraction = ms % 1000;
                if fraction != 0 {
                    let digits = [
                        b'0' + (fraction / 100) as u8,
                        b'0' + (fraction / 10 % 10) as u8,
                        b'0' + (fraction % 10) as u8,
                    ];
                    let keep = if digits[2] != b'0' {
                        3
                    } else if digits[1] != b'0' {
                        2
                    } else {
                        1
                    };
                    out.push('.');
                    out.push_str(std::str::from_utf8(&digits[..keep]).unwrap_or("0"));
                }
            }
            Self::Millis(ms) => {
                let _ = write!(out, "{}", ms as f64 / 1000.0);
            }
            Self::Float(v) => {
                let _ = write!(out, "{v}");
            }
        }
    }
}

fn push_integer(out: &mut String, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or("0"));
}

/// Liveness states sorted by name: the crate sorts an agent's samples by label value.
const STATES_BY_NAME: [AgentStatus; STATUS_COUNT] = [
    AgentStatus::Down,
    AgentStatus::Late,
    AgentStatus::New,
    AgentStatus::Paused,
    AgentStatus::Stopped,
    AgentStatus::Up,
];

/// A label value escaped as the text format wants (and as the crate does it): `\`, newline
/// and `"` get a backslash.
fn push_label_value(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'"')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

    /// What the `prometheus` crate writes for the same rows: the way `/metrics` used to do it.
    fn by_the_crate(rows: &[AgentRow<'_>]) -> Vec<(String, String)> {
        let registry = Registry::new();
        let gauge = |f: AgentFamily| GaugeVec::new(Opts::new(f.name(), f.help()), &["agent_id"]).unwrap();
        let up = IntGaugeVec::new(Opts::new(AgentFamily::Up.name(), AgentFamily::Up.help()), &["agent_id"]).unwrap();
        let down = IntGaugeVec::new(
            Opts::new(AgentFamily::Down.name(), AgentFamily::Down.help()),
            &["agent_id"],
        )
        .unwrap();
        let (seen, cpu, memory) = (
            gauge(AgentFamily::LastSeen),
            gauge(AgentFamily::Cpu),
            gauge(AgentFamily::Memory),
        );
        let transitions = IntCounterVec::new(
            Opts::new(AgentFamily::Transitions.name(), AgentFamily::Transitions.help()),
            &["agent_id", "to"],
        )
        .unwrap();
        registry.register(Box::new(up.clone())).unwrap();
        registry.register(Box::new(down.clone())).unwrap();
        registry.register(Box::new(seen.clone())).unwrap();
        registry.register(Box::new(cpu.clone())).unwrap();
        registry.register(Box::new(memory.clone())).unwrap();
        registry.register(Box::new(transitions.clone())).unwrap();
        for row in rows {
            let id = [row.id];
            up.with_label_values(&id).set(i64::from(row.up));
            down.with_label_values(&id).set(i64::from(row.down));
            if let Some(ms) = row.last_seen_ms {
                seen.with_label_values(&id).set(ms as f64 / 1000.0);
            }
            if let Some(v) = row.cpu {
                cpu.with_label_values(&id).set(v);
            }
            if let Some(v) = row.memory {
                memory.with_label_values(&id).set(v);
            }
            if let Some(counts) = row.transitions {
                for (status, count) in AgentStatus::ALL.iter().zip(counts) {
                    if count > 0 {
                        transitions.with_label_values(&[row.id, status.name()]).inc_by(count);
                    }
                }
            }
        }
        registry
            .gather()
            .iter()
            .map(|family| {
                let mut text = Vec::new();
                TextEncoder::new()
                    .encode(std::slice::from_ref(family), &mut text)
                    .unwrap();
                (family.name().to_owned(), String::from_utf8(text).unwrap())
            })
            .collect()
    }

    fn ours(rows: &[AgentRow<'_>]) -> Vec<(String, String)> {
        AgentFamily::ALL
            .iter()
            .map(|family| {
                let mut text = String::new();
                family.encode(rows, &mut text);
                (family.name().to_owned(), text)
            })
            .filter(|(_, text)| !text.is_empty())
            .collect()
    }

    fn row(id: &str) -> AgentRow<'_> {
        AgentRow {
            id,
            up: false,
            down: false,
            last_seen_ms: None,
            cpu: None,
            memory: None,
            transitions: None,
        }
    }

    /// Every kind of value an agent row can hold: integers and fractions, zero, huge and tiny
    /// floats, missing values, ids that need escaping, transitions into every state.
    fn varied_rows(ids: &[String]) -> Vec<AgentRow<'_>> {
        let mut rows: Vec<AgentRow> = (0..300)
            .map(|i| AgentRow {
                id: &ids[i as usize],
                up: i % 3 != 0,
                down: i % 3 == 0 && i % 2 == 0,
                // Milliseconds ending in 0, 00, 000 and neither; some far out of today's range.
                last_seen_ms: (i % 7 != 0).then(|| match i % 5 {
                    0 => 1_795_000_000_000 + i64::from(i) * 1000,
                    1 => 1_795_000_000_000 + i64::from(i) * 10,
                    2 => -i64::from(i) * 1_234_567,
                    3 => i64::MAX - i64::from(i),
                    _ => 1_795_000_000_000 + i64::from(i) * 7,
                }),
                cpu: (i % 5 != 0).then(|| match i % 3 {
                    0 => f64::from(i) / 7.0,
                    1 => f64::from(i),
                    _ => -f64::from(i) * 1e14,
                }),
                memory: (i % 4 != 0).then_some(match i % 3 {
                    0 => (i as f64) * 1e15 + 0.5,
                    1 => (i as f64) * 1e12,
                    _ => u64::MAX as f64 - i as f64,
                }),
                transitions: (i % 2 == 0).then(|| {
                    [
                        i as u64 % 3,
                        i as u64,
                        0,
                        i as u64 % 5,
                        u64::from(i % 11 == 0),
                        u64::from(i % 13 == 0),
                    ]
                }),
            })
            .collect();
        for (id, cpu) in [
            ("a\"quote", 0.0),
            ("back\\slash", 1e-300),
            ("new\nline", 1e300),
            ("ünïcode-☃", 99.99999999999999),
            ("z-max", f64::MAX),
            ("z-minus-zero", -0.0),
            ("z-nan", f64::NAN),
            ("z-inf", f64::INFINITY),
            ("z-exact", 999_999_999_999_999.0),
            ("z-past-exact", 1e15),
        ] {
            rows.push(AgentRow {
                up: true,
                cpu: Some(cpu),
                memory: Some(u64::MAX as f64),
                transitions: Some([1, 2, 3, 4, 5, 6]),
                ..row(id)
            });
        }
        rows.sort_by(|a, b| a.id.cmp(b.id));
        rows
    }

    fn ids() -> Vec<String> {
        (0..300).map(|i| format!("agent-{i:04}")).collect()
    }

    #[test]
    fn each_family_is_what_the_prometheus_crate_writes() {
        let ids = ids();
        let rows = varied_rows(&ids);
        let (expected, written) = (by_the_crate(&rows), ours(&rows));
        assert_eq!(
            written.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            expected.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            "the same families in the same order"
        );
        for ((name, ours), (_, crates)) in written.iter().zip(&expected) {
            assert_eq!(ours, crates, "family {name}");
        }
    }

    #[test]
    fn empty_families_are_left_out_as_the_crate_does() {
        let rows = vec![row("only")];
        assert_eq!(ours(&rows), by_the_crate(&rows));
        assert_eq!(ours(&rows).len(), 2, "only heartbeatd_agent_up and _down have a sample");
        assert!(ours(&[]).is_empty());
    }

    proptest::proptest! {
        /// Every value is written as f64's Display writes it (what the crate writes).
        #[test]
        fn values_are_written_as_display_writes_them(ms in proptest::num::i64::ANY, small_ms in 0i64..4_000_000_000_000, v in proptest::num::f64::ANY, whole in -1e16f64..1e16) {
            for (value, expected) in [
                (Value::Millis(ms), (ms as f64 / 1000.0).to_string()),
                (Value::Millis(small_ms), (small_ms as f64 / 1000.0).to_string()),
                (Value::Float(v), v.to_string()),
                (Value::Float(whole.trunc()), whole.trunc().to_string()),
            ] {
                let mut out = String::new();
                value.push_to(&mut out);
                proptest::prop_assert_eq!(out, expected);
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        AgentFamily::Up.encode(&[row("a\"b\\c\nd")], &mut out);
        assert!(
            out.ends_with("heartbeatd_agent_up{agent_id=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{out}"
        );
    }
}
