//! The `POST /heartbeat` body: parsing and the seed's validation rules, as pure functions.
//!
//! Compatibility with agents written against the original (Go's `encoding/json`):
//! unknown fields are ignored; a missing or `null` field takes its zero value (`""`, `0`);
//! a wrong type, or a negative `memory` (a Go `uint64`), is "invalid JSON format"; an
//! unparseable `timestamp` is not an error (server time is used).

use chrono::{DateTime, Utc};
use heartbeatd_actors::model::heartbeat::{Heartbeat, ReportedStatus};
use serde::Deserialize;

/// The body as sent. Every field is optional here; the rules below decide.
///
/// Keys are matched as Go's `encoding/json` matches them: case-insensitively, and a key given
/// twice takes its last value. (serde's derive refuses duplicates, and agents of the original
/// send bodies a Go decoder accepts.)
#[derive(Debug, Default)]
struct HeartbeatRequest {
    agent_id: Option<String>,
    pid: Option<i64>,
    status: Option<String>,
    cpu: Option<f64>,
    memory: Option<u64>,
    timestamp: Option<String>,
}

/// The known keys, and the rest (ignored, as Go ignores unknown fields).
enum Field {
    AgentId,
    Pid,
    Status,
    Cpu,
    Memory,
    Timestamp,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl serde::de::Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Field, E> {
                let is = |name: &str| key.eq_ignore_ascii_case(name);
                Ok(if is("agent_id") {
                    Field::AgentId
                } else if is("pid") {
                    Field::Pid
                } else if is("status") {
                    Field::Status
                } else if is("cpu") {
                    Field::Cpu
                } else if is("memory") {
                    Field::Memory
                } else if is("timestamp") {
                    Field::Timestamp
                } else {
                    Field::Other
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for HeartbeatRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> serde::de::Visitor<'de> for RequestVisitor {
            type Value = HeartbeatRequest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<HeartbeatRequest, A::Error> {
                let mut req = HeartbeatRequest::default();
                while let Some(field) = map.next_key::<Field>()? {
                    // Each assignment replaces what an earlier duplicate set: the last wins.
                    match field {
                        Field::AgentId => req.agent_id = map.next_value()?,
                        Field::Pid => req.pid = map.next_value()?,
                        Field::Status => req.status = map.next_value()?,
                        Field::Cpu => req.cpu = map.next_value()?,
                        Field::Memory => req.memory = map.next_value()?,
                        Field::Timestamp => req.timestamp = map.next_value()?,
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(req)
            }
        }
        deserializer.deserialize_map(RequestVisitor)
    }
}

/// Why a body was refused; both are 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid JSON format: {0}")]
    InvalidJson(String),
    #[error("validation failed: {field}: {reason}")]
    Validation { field: &'static str, reason: String },
    /// The seed's validation failure for `agent_id`, kept apart for the metrics' reason label.
    #[error("validation failed: agent_id: agent {0:?} is not registered")]
    UnknownAgent(String),
}

/// What happened to the agent's `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampSource {
    /// The agent's own, parsed.
    Agent,
    /// None was sent; the server's receive time is used.
    Missing,
    /// This text did not parse as RFC 3339; the server's receive time is used.
    Unparseable(String),
    /// This text is valid RFC 3339 but outside what heartbeatd stores (nanoseconds since
    /// 1970 in 64 bits: 1677-09-21 to 2262-04-11), e.g. Go's zero time
    /// `0001-01-01T00:00:00Z` from an agent whose clock is unset; the server's receive time is
    /// used, as for an unparseable one.
    OutOfRange(String),
}

/// A body that passed every rule.
#[derive(Debug)]
pub struct ValidHeartbeat {
    pub heartbeat: Heartbeat,
    pub timestamp_source: TimestampSource,
}

/// Parses and validates `body`, received at `now`. `is_registered` answers whether an agent id
/// may report.
pub fn parse(
    body: &[u8],
    is_registered: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<ValidHeartbeat, RequestError> {
    let req: HeartbeatRequest = serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let invalid = |field, reason: String| RequestError::Validation { field, reason };

    let agent_id = req.agent_id.unwrap_or_default();
    if agent_id.is_empty() {
        return Err(invalid("agent_id", "is required".into()));
    }
    if !is_registered(&agent_id) {
        return Err(RequestError::UnknownAgent(agent_id));
    }
    let pid = req.pid.unwrap_or(0);
    if pid <= 0 {
        return Err(invalid("pid", format!("must be greater than 0, got {pid}")));
    }
    let cpu = req.cpu.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&cpu) {
        return Err(invalid("cpu", format!("must be between 0 and 100, got {cpu}")));
    }
    let status = match req.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(ReportedStatus::from_wire(text).ok_or_else(|| {
            invalid(
                "status",
                format!(
                    "must be one of {}, got {text:?}",
                    ReportedStatus::WIRE_VALUES.join(", ")
                ),
            )
        })?),
    };
    let (timestamp, timestamp_source) = match req.timestamp.as_deref() {
        None | Some("") => (now, TimestampSource::Missing),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) if t.timestamp_nanos_opt().is_some() => (t.to_utc(), TimestampSource::Agent),
            Ok(_) => (now, TimestampSource::OutOfRange(text.to_owned())),
            Err(_) => (now, TimestampSource::Unparseable(text.to_owned())),
        },
    };
    Ok(ValidHeartbeat {
        heartbeat: Heartbeat {
            agent_id,
            timestamp,
            received_at: now,
            pid,
            cpu,
            memory: req.memory.unwrap_or(0),
            status,
        },
        timestamp_source,
    })
}

/// The `agent_id` of a body that failed, for the warning log; `None` if there is none to find.
pub fn agent_id_hint(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct JustTheId {
        agent_id: String,
    }
    serde_json::from_slice::<JustTheId>(body).ok().map(|r| r.agent_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z").unwrap().to_utc()
    }

    fn registered(id: &str) -> bool {
        id == "agent-1"
    }

    fn valid_body() -> serde_json::Value {
        json!({"agent_id": "agent-1", "pid": 1234, "status": "running", "cpu": 12.5,
               "memory": 1048576, "timestamp": "2026-11-24T05:59:58Z"})
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut body = valid_body();
        if value.is_null() && field.starts_with('-') {
            body.as_object_mut().unwrap().remove(&field[1..]);
        } else {
            body[field] = value;
        }
        serde_json::to_vec(&body).unwrap()
    }

    fn check(body: &[u8]) -> Result<ValidHeartbeat, RequestError> {
        parse(body, registered, now())
    }

    #[test]
    fn a_valid_heartbeat_is_taken_field_by_field() {
        let valid = check(&serde_json::to_vec(&valid_body()).unwrap()).unwrap();
        let hb = valid.heartbeat;
        assert_eq!(hb.agent_id, "agent-1");
        assert_eq!(hb.pid, 1234);
        assert_eq!(hb.cpu, 12.5);
        assert_eq!(hb.memory, 1_048_576);
        assert_eq!(hb.status, Some(ReportedStatus::Running));
        assert_eq!(hb.timestamp.to_rfc3339(), "2026-11-24T05:59:58+00:00");
        assert_eq!(hb.received_at, now());
        assert_eq!(valid.timestamp_source, TimestampSource::Agent);
    }

    #[test]
    fn validation_table() {
        // (case, body, expected: Ok or the exact error message)
        let cases: Vec<(&str, Vec<u8>, Result<(), &str>)> = vec![
            ("cpu 0", with("cpu", json!(0)), Ok(())),
            ("cpu 100", with("cpu", json!(100)), Ok(())),
            (
                "cpu 100.000001",
                with("cpu", json!(100.000001)),
                Err("validation failed: cpu: must be between 0 and 100, got 100.000001"),
            ),
            (
                "cpu -0.1",
                with("cpu", json!(-0.1)),
                Err("validation failed: cpu: must be between 0 and 100, got -0.1"),
            ),
            ("cpu missing", with("-cpu", json!(null)), Ok(())),
            ("pid 1", with("pid", json!(1)), Ok(())),
            (
                "pid 0",
                with("pid", json!(0)),
                Err("validation failed: pid: must be greater than 0, got 0"),
            ),
            (
                "pid -1",
                with("pid", json!(-1)),
                Err("validation failed: pid: must be greater than 0, got -1"),
            ),
            (
                "pid missing",
                with("-pid", json!(null)),
                Err("validation failed: pid: must be greater than 0, got 0"),
            ),
            ("memory 0", with("memory", json!(0)), Ok(())),
            ("memory max u64", with("memory", json!(u64::MAX)), Ok(())),
            (
                "agent_id empty",
                with("agent_id", json!("")),
                Err("validation failed: agent_id: is required"),
            ),
            (
                "agent_id missing",
                with("-agent_id", json!(null)),
                Err("validation failed: agent_id: is required"),
            ),
            (
                "agent_id unknown",
                with("agent_id", json!("ghost")),
                Err("validation failed: agent_id: agent \"ghost\" is not registered"),
            ),
            ("status stopped", with("status", json!("stopped")), Ok(())),
            ("status error", with("status", json!("error")), Ok(())),
            ("status empty", with("status", json!("")), Ok(())),
            ("status missing", with("-status", json!(null)), Ok(())),
            (
                "status unknown",
                with("status", json!("dancing")),
                Err("validation failed: status: must be one of running, stopped, error, got \"dancing\""),
            ),
            ("unknown fields are ignored", with("version", json!("1.2.3")), Ok(())),
            (
                "a duplicate key takes the last value, as Go does",
                br#"{"agent_id":"ghost","pid":1,"agent_id":"agent-1"}"#.to_vec(),
                Ok(()),
            ),
            (
                "keys match case-insensitively, as Go does",
                br#"{"Agent_ID":"agent-1","PID":7}"#.to_vec(),
                Ok(()),
            ),
            (
                "the last of two pids is checked",
                br#"{"agent_id":"agent-1","pid":5,"pid":0}"#.to_vec(),
                Err("validation failed: pid: must be greater than 0, got 0"),
            ),
        ];
        for (case, body, expected) in cases {
            let got = check(&body).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "case: {case}");
        }
    }

    #[test]
    fn malformed_bodies_are_invalid_json() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("negative memory", with("memory", json!(-1))),
            ("fractional pid", with("pid", json!(1.5))),
            ("pid as string", with("pid", json!("1234"))),
            ("cpu as string", with("cpu", json!("high"))),
            ("timestamp as number", with("timestamp", json!(12))),
            ("empty body", Vec::new()),
            ("array", b"[]".to_vec()),
            ("positional array", b"[\"agent-1\", 1234]".to_vec()),
            ("null", b"null".to_vec()),
            ("truncated", b"{\"agent_id\": \"agent-1\"".to_vec()),
            ("not JSON", b"agent_id=agent-1".to_vec()),
        ];
        for (case, body) in cases {
            match check(&body) {
                Err(RequestError::InvalidJson(detail)) => {
                    assert!(!detail.is_empty(), "case: {case}")
                }
                other => panic!("case {case}: expected invalid JSON, got {other:?}"),
            }
        }
        let message = check(&with("memory", json!(-1))).unwrap_err().to_string();
        assert!(message.starts_with("invalid JSON format: "), "{message}");
    }

    #[test]
    fn a_bad_or_missing_timestamp_falls_back_to_server_time() {
        let bad = check(&with("timestamp", json!("yesterday"))).unwrap();
        assert_eq!(bad.heartbeat.timestamp, now());
        assert_eq!(bad.timestamp_source, TimestampSource::Unparseable("yesterday".into()));

        let missing = check(&with("-timestamp", json!(null))).unwrap();
        assert_eq!(missing.heartbeat.timestamp, now());
        assert_eq!(missing.timestamp_source, TimestampSource::Missing);

        // Valid RFC 3339, but outside what the journal stores: server time, never an error.
        for text in [
            "0001-01-01T00:00:00Z",
            "1677-09-21T00:12:43Z",
            "2262-04-12T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let out = check(&with("timestamp", json!(text))).unwrap();
            assert_eq!(out.heartbeat.timestamp, now(), "{text}");
            assert_eq!(out.timestamp_source, TimestampSource::OutOfRange(text.into()));
        }
        let edge = check(&with("timestamp", json!("1677-09-21T00:12:44Z"))).unwrap();
        assert_eq!(edge.timestamp_source, TimestampSource::Agent);

        let offset = check(&with("timestamp", json!("2026-11-24T08:00:00.5+02:00"))).unwrap();
        assert_eq!(offset.heartbeat.timestamp.to_rfc3339(), "2026-11-24T06:00:00.500+00:00");
    }

    use proptest::prelude::*;

    /// The validation table as a model: what a body with these fields must get.
    fn expected(id: &str, pid: i64, cpu: f64, status: &str) -> Result<(), &'static str> {
        if id.is_empty() {
            Err("agent_id")
        } else if !registered(id) {
            Err("unknown")
        } else if pid <= 0 {
            Err("pid")
        } else if !(0.0..=100.0).contains(&cpu) {
            Err("cpu")
        } else if !matches!(status, "" | "running" | "stopped" | "error") {
            Err("status")
        } else {
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = check(&body);
            let _ = agent_id_hint(&body);
        }

        #[test]
        fn arbitrary_json_text_never_panics(body in "[{}\\[\\]\":,0-9a-z_ .eE+-]{0,120}") {
            let _ = check(body.as_bytes());
        }

        #[test]
        fn accepts_exactly_what_the_validation_table_says(
            id in prop_oneof![Just(String::new()), Just("agent-1".to_owned()), "[a-z0-9-]{1,12}"],
            pid in prop_oneof![Just(0i64), Just(1), Just(-1), any::<i64>()],
            cpu in prop_oneof![Just(0.0f64), Just(100.0), -1.0e3f64..1.0e3],
            memory in any::<u64>(),
            status in prop_oneof![Just(""), Just("running"), Just("stopped"), Just("error"), Just("Running"), Just("x")],
            timestamp in prop_oneof![Just(String::new()), Just("2026-11-24T05:59:58Z".to_owned()), Just("0001-01-01T00:00:00Z".to_owned()), "[0-9TZ:.-]{0,30}"],
        ) {
            let body = json!({"agent_id": id, "pid": pid, "cpu": cpu, "memory": memory,
                              "status": status, "timestamp": timestamp});
            let got = check(&serde_json::to_vec(&body).unwrap());
            match (expected(&id, pid, cpu, status), got) {
                (Ok(()), Ok(valid)) => {
                    prop_assert_eq!(valid.heartbeat.pid, pid);
                    prop_assert_eq!(valid.heartbeat.memory, memory);
                    prop_assert_eq!(valid.heartbeat.cpu, cpu);
                    // Whatever the timestamp, it is one the journal can store.
                    prop_assert!(valid.heartbeat.timestamp.timestamp_nanos_opt().is_some());
                }
                (Err("unknown"), Err(RequestError::UnknownAgent(_))) => {}
                (Err(field), Err(RequestError::Validation { field: got, .. })) => prop_assert_eq!(field, got),
                (want, got) => prop_assert!(false, "wanted {:?}, got {:?}", want, got.map(|_| ())),
            }
        }
    }

    #[test]
    fn the_agent_id_of_a_refused_body_is_found_for_the_log() {
        assert_eq!(agent_id_hint(&with("pid", json!(-1))), Some("agent-1".into()));
        assert_eq!(agent_id_hint(b"nonsense"), None);
    }
}
