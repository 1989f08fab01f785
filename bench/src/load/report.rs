//! What a run found: counts by status, throughput, latency percentiles; as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::histogram::{Latencies, Percentiles};

/// Answers counted by HTTP status, plus requests that got no answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    by_status: BTreeMap<u16, u64>,
    /// Connection failures, resets, timeouts: requests with no HTTP answer.
    pub transport_errors: u64,
}

impl StatusCounts {
    pub fn add(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
    }

    pub fn merge(&mut self, other: &StatusCounts) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }

    pub fn get(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Every request sent: answered or not.
    pub fn sent(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport_errors
    }

    pub fn non_200(&self) -> u64 {
        self.sent() - self.get(200)
    }

    pub fn by_status(&self) -> &BTreeMap<u16, u64> {
        &self.by_status
    }
}

/// The whole report; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub agents: usize,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// `null` for as fast as possible.
    pub requested_rate: Option<f64>,
    pub sent: u64,
    /// HTTP status → answers, as strings for JSON keys.
    pub by_status: BTreeMap<String, u64>,
    pub transport_errors: u64,
    /// Answers during the warm-up, by status (not in any other figure).
    pub warmup_by_status: BTreeMap<String, u64>,
    /// Answers 200 per second of measurement.
    pub ok_per_s: f64,
    pub sent_per_s: f64,
    /// Measured from each request's scheduled time when `--rate` is given.
    pub latency: Percentiles,
    /// The target could not keep up with `--rate`.
    pub fell_behind: bool,
}

impl Report {
    pub fn new(
        args: &super::args::LoadArgs,
        counts: &StatusCounts,
        warmup: &StatusCounts,
        latencies: &Latencies,
        fell_behind: bool,
    ) -> Self {
        let by_status = |c: &StatusCounts| c.by_status().iter().map(|(s, n)| (s.to_string(), *n)).collect();
        let secs = args.duration().as_secs_f64();
        Self {
            url: args.url.clone(),
            agents: args.agents,
            connections: args.connections,
            threads: args.threads,
            duration_s: secs,
            warmup_s: args.warmup().as_secs_f64(),
            requested_rate: args.rate,
            sent: counts.sent(),
            by_status: by_status(counts),
            transport_errors: counts.transport_errors,
            warmup_by_status: by_status(warmup),
            ok_per_s: counts.get(200) as f64 / secs,
            sent_per_s: counts.sent() as f64 / secs,
            latency: latencies.percentiles(),
            fell_behind,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rate = self
            .requested_rate
            .map_or("as fast as possible".to_owned(), |r| format!("{r} heartbeats/s"));
        let _ = writeln!(out, "target          {}", self.url);
        let _ = writeln!(
            out,
            "load            {} agents, {} connections, {} thread(s), {rate}",
            self.agents, self.connections, self.threads
        );
        let _ = writeln!(
            out,
            "measured        {:.1} s after {:.1} s warm-up",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(out, "requests sent   {}", self.sent);
        for (status, n) in &self.by_status {
            let _ = writeln!(out, "  status {status}      {n}");
        }
        if self.transport_errors > 0 {
            let _ = writeln!(out, "  no answer       {}", self.transport_errors);
        }
        let _ = writeln!(
            out,
            "heartbeats/s    {:.0} answered 200 ({:.0} sent/s)",
            self.ok_per_s, self.sent_per_s
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "latency (ms)    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if self.fell_behind {
            let _ = writeln!(
                out,
                "WARNING         the target fell behind --rate: it was sent {:.0}/s of the {:.0}/s asked. \
                 Latencies count from each request's scheduled time, so they include that wait \
                 (corrected for coordinated omission).",
                self.sent_per_s,
                self.requested_rate.unwrap_or_default()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_and_merges() {
        let mut a = StatusCounts::default();
        a.add(200);
        a.add(200);
        a.add(503);
        let mut b = StatusCounts::default();
        b.add(400);
        b.transport_errors = 2;
        a.merge(&b);
        assert_eq!(a.get(200), 2);
        assert_eq!(a.get(503), 1);
        assert_eq!(a.get(404), 0);
        assert_eq!(a.sent(), 6);
        assert_eq!(a.non_200(), 4);
    }
}
