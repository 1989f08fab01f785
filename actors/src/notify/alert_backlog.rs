//! What is still to reach Alertmanager, bounded by the number of alerts, not by how long
//! Alertmanager has been away.
//!
//! The backlog keeps the newest state of each alert (firing, or resolved and not yet told to
//! every Alertmanager) and, per Alertmanager URL (a *lane*), the set of alerts that URL has
//! yet to be told. A change of an alert only marks it in each lane's set; what is sent is
//! read from the newest state when a request is built. So a newer fire or resolve supersedes
//! an older one still waiting, a resend of every firing alert costs nothing when the alerts
//! are already waiting, and however long an Alertmanager blackholes its requests the backlog
//! holds at most one entry per alert per lane, plus one request per lane in flight (whose
//! bytes the caller bounds).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::notify::alerter::Alert;

/// An alert's key: `<alertname>/<agent id>`.
pub(crate) type Key = Arc<str>;

/// The newest state of one alert.
enum State {
    Firing(Alert),
    /// Resolved at `at`; kept until every lane has been told (then forgotten).
    Resolved {
        alert: Alert,
        at: DateTime<Utc>,
    },
}

/// One Alertmanager URL's share of the backlog.
#[derive(Default)]
struct Lane {
    /// Alerts this URL has yet to be told the newest state of.
    waiting: BTreeSet<Key>,
    /// The alerts of the request in flight, sorted; empty when the lane is idle. At most one
    /// request per lane is in flight.
    in_flight: Vec<Key>,
    /// The last alert taken: the next request goes on after it, round the key order, so that
    /// resends that come faster than a large backlog drains cannot starve the alerts at the
    /// end of the order.
    cursor: Option<Key>,
    /// The size of that request's body.
    in_flight_bytes: usize,
}

/// What the backlog holds now (for tests and bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BacklogFigures {
    /// Alerts whose state is kept: firing, or resolved and not yet told everywhere.
    pub alerts_kept: usize,
    /// Of these, firing.
    pub firing: usize,
    /// Alerts waiting in the fullest lane.
    pub most_waiting: usize,
    /// Bytes of the request bodies in flight, all lanes together.
    pub bytes_in_flight: usize,
    /// Requests in flight, all lanes together (at most one per lane).
    pub requests_in_flight: usize,
    /// Fired alerts no request has carried yet.
    pub untold: usize,
}

/// The newest state of every alert and, per lane, what is still to be told.
pub(crate) struct Backlog {
    states: BTreeMap<Key, State>,
    lanes: Vec<Lane>,
    /// Fired alerts not yet put in any request: resolving one forgets it, as Alertmanager
    /// never heard of it.
    untold: HashSet<Key>,
}

/// One alert as Alertmanager's API takes it.
#[derive(serde::Serialize)]
struct Posted<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: DateTime<Utc>,
    #[serde(rename = "endsAt")]
    ends_at: DateTime<Utc>,
}

impl Backlog {
    /// A backlog for `lanes` URLs, starting from the alerts still `firing` when heartbeatd
    /// last stopped; they wait in every lane (to be sent again at once).
    pub(crate) fn new(lanes: usize, firing: impl IntoIterator<Item = (String, Alert)>) -> Self {
        let mut backlog = Self {
            states: firing
                .into_iter()
                .map(|(key, alert)| (Key::from(key), State::Firing(alert)))
                .collect(),
            lanes: (0..lanes).map(|_| Lane::default()).collect(),
            untold: HashSet::new(),
        };
        backlog.resend();
        backlog
    }

    pub(crate) fn is_firing(&self, key: &str) -> bool {
        matches!(self.states.get(key), Some(State::Firing(_)))
    }

    /// The firing alerts, by key.
    pub(crate) fn firing(&self) -> impl Iterator<Item = (&str, &Alert)> {
        self.states.iter().filter_map(|(key, state)| match state {
            State::Firing(alert) => Some((&**key, alert)),
            State::Resolved { .. } => None,
        })
    }

    /// Fires `key`; false (nothing changes) when it is firing already.
    pub(crate) fn fire(&mut self, key: &str, alert: Alert) -> bool {
        let key: Key = match self.states.get_key_value(key) {
            Some((_, State::Firing(_))) => return false,
            // Resolved and maybe not yet told everywhere: the fire supersedes the resolve.
            Some((existing, State::Resolved { .. })) => Arc::clone(existing),
            None => {
                let key = Key::from(key);
                self.untold.insert(Arc::clone(&key));
                key
            }
        };
        self.states.insert(Arc::clone(&key), State::Firing(alert));
        self.mark(&key);
        true
    }

    /// Resolves `key` at `at`; false when it is not firing.
    pub(crate) fn resolve(&mut self, key: &str, at: DateTime<Utc>) -> bool {
        let Some((key, State::Firing(_))) = self.states.get_key_value(key) else {
            return false;
        };
        let key = Arc::clone(key);
        if self.untold.remove(&key) {
            // Fired and resolved before any request carried it: nobody needs to know.
            self.states.remove(&key);
            for lane in &mut self.lanes {
                lane.waiting.remove(&key);
            }
            return true;
        }
        let Some(State::Firing(alert)) = self.states.remove(&key) else {
            unreachable!("checked above")
        };
        self.states.insert(Arc::clone(&key), State::Resolved { alert, at });
        self.mark(&key);
        true
    }

    /// Every firing alert waits again in every lane (the periodic resend). Alerts already
    /// waiting stay one entry each.
    pub(crate) fn resend(&mut self) {
        for (key, state) in &self.states {
            if let State::Firing(_) = state {
                for lane in &mut self.lanes {
                    if !lane.waiting.contains(key) {
                        lane.waiting.insert(Arc::clone(key));
                    }
                }
            }
        }
    }

    fn mark(&mut self, key: &Key) {
        for lane in &mut self.lanes {
            lane.waiting.insert(Arc::clone(key));
        }
    }

    pub(crate) fn has_waiting(&self, lane: usize) -> bool {
        !self.lanes[lane].waiting.is_empty()
    }

    pub(crate) fn waiting(&self, lane: usize) -> usize {
        self.lanes[lane].waiting.len()
    }

    pub(crate) fn is_busy(&self, lane: usize) -> bool {
        !self.lanes[lane].in_flight.is_empty()
    }

    /// The body of the lane's next request: the newest state of up to `max_alerts` waiting
    /// alerts, at most `max_bytes` long (but at least one alert); firing ones end at
    /// `firing_ends_at`, resolved ones when they were resolved. None when the lane is busy
    /// or has nothing waiting. The alerts stay in flight until [`Backlog::delivered`] or
    /// [`Backlog::failed`].
    pub(crate) fn take(
        &mut self,
        lane: usize,
        firing_ends_at: DateTime<Utc>,
        max_alerts: usize,
        max_bytes: usize,
    ) -> Option<Vec<u8>> {
        let Self { states, lanes, untold } = self;
        let lane = &mut lanes[lane];
        if !lane.in_flight.is_empty() {
            return None;
        }
        let mut body = vec![b'['];
        let mut item = Vec::new();
        while lane.in_flight.len() < max_alerts {
            let Some(key) = lane.next() else { break };
            let Some(state) = states.get(&key) else {
                // Forgotten since it was marked (fired and resolved untold).
                lane.waiting.remove(&key);
                continue;
            };
            let (alert, ends_at) = match state {
                State::Firing(alert) => (alert, firing_ends_at),
                State::Resolved { alert, at } => (alert, *at),
            };
            item.clear();
            let posted = Posted {
                labels: &alert.labels,
                annotations: &alert.annotations,
                starts_at: alert.starts_at,
                ends_at,
            };
            if serde_json::to_writer(&mut item, &posted).is_err() {
                lane.waiting.remove(&key);
                continue;
            }
            if !lane.in_flight.is_empty() && body.len() + 1 + item.len() + 1 > max_bytes {
                break;
            }
            if !lane.in_flight.is_empty() {
                body.push(b',');
            }
            body.extend_from_slice(&item);
            lane.waiting.remove(&key);
            untold.remove(&key);
            lane.cursor = Some(Arc::clone(&key));
            lane.in_flight.push(key);
        }
        if lane.in_flight.is_empty() {
            return None;
        }
        lane.in_flight.sort_unstable();
        body.push(b']');
        lane.in_flight_bytes = body.len();
        Some(body)
    }

    /// The lane's request was answered 2xx: its alerts are told. A resolved alert every lane
    /// has been told is forgotten.
    pub(crate) fn delivered(&mut self, lane: usize) {
        let told = std::mem::take(&mut self.lanes[lane].in_flight);
        self.lanes[lane].in_flight_bytes = 0;
        for key in told {
            let resolved = matches!(self.states.get(&key), Some(State::Resolved { .. }));
            if resolved && !self.lanes.iter().any(|l| l.holds(&key)) {
                self.states.remove(&key);
            }
        }
    }

    /// The lane's request failed: its alerts wait again (their newest state goes next time).
    pub(crate) fn failed(&mut self, lane: usize) {
        let lane = &mut self.lanes[lane];
        lane.in_flight_bytes = 0;
        for key in std::mem::take(&mut lane.in_flight) {
            lane.waiting.insert(key);
        }
    }

    pub(crate) fn figures(&self) -> BacklogFigures {
        BacklogFigures {
            alerts_kept: self.states.len(),
            firing: self.firing().count(),
            most_waiting: self.lanes.iter().map(|l| l.waiting.len()).max().unwrap_or(0),
            bytes_in_flight: self.lanes.iter().map(|l| l.in_flight_bytes).sum(),
            requests_in_flight: self.lanes.iter().filter(|l| !l.in_flight.is_empty()).count(),
            untold: self.untold.len(),
        }
    }
}

impl Lane {
    /// The waiting alert after the cursor, else the first one.
    fn next(&self) -> Option<Key> {
        let after = match &self.cursor {
            Some(cursor) => self
                .waiting
                .range::<str, _>((Bound::Excluded(&**cursor), Bound::Unbounded))
                .next(),
            None => None,
        };
        after.or_else(|| self.waiting.first()).cloned()
    }

    /// Still to be told `key`, or being told it.
    fn holds(&self, key: &Key) -> bool {
        self.waiting.contains(key) || self.in_flight.binary_search(key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> Alert {
        Alert {
            labels: [("agent_id".to_owned(), id.to_owned())].into_iter().collect(),
            annotations: BTreeMap::new(),
            starts_at: Utc::now(),
        }
    }

    /// The agent ids in a body, with whether each is firing (ends in the future).
    fn sent(body: &[u8]) -> Vec<(String, bool)> {
        let alerts: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        alerts
            .iter()
            .map(|a| {
                let ends: DateTime<Utc> = a["endsAt"].as_str().unwrap().parse().unwrap();
                (a["labels"]["agent_id"].as_str().unwrap().to_owned(), ends > Utc::now())
            })
            .collect()
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(1)
    }

    #[test]
    fn a_lane_that_never_answers_holds_one_entry_per_alert_however_many_resends() {
        let mut backlog = Backlog::new(2, []);
        for n in 0..100 {
            backlog.fire(&format!("a/{n}"), alert(&n.to_string()));
        }
        // Lane 0 fails forever while 50 resends pass; lane 1 is told.
        for _ in 0..50 {
            let body = backlog.take(0, later(), 10, usize::MAX).unwrap();
            assert_eq!(sent(&body).len(), 10);
            assert!(
                backlog.take(0, later(), 10, usize::MAX).is_none(),
                "one request in flight"
            );
            backlog.failed(0);
            backlog.resend();
        }
        while backlog.take(1, later(), 1000, usize::MAX).is_some() {
            backlog.delivered(1);
        }
        let figures = backlog.figures();
        assert_eq!(figures.alerts_kept, 100);
        assert_eq!(figures.most_waiting, 100, "lane 0: each alert once");
        assert_eq!(figures.requests_in_flight, 0);
        assert!(!backlog.has_waiting(1));
    }

    #[test]
    fn the_newest_state_supersedes_older_ones_waiting_and_reaches_a_lane_that_comes_back() {
        let mut backlog = Backlog::new(1, []);
        backlog.fire("a/up-again", alert("up-again"));
        backlog.fire("a/down", alert("down"));
        backlog.fire("a/flapping", alert("flapping"));
        // The first request fails (the lane is away); meanwhile states change.
        let body = backlog.take(0, later(), 100, usize::MAX).unwrap();
        assert_eq!(sent(&body).len(), 3);
        backlog.failed(0);
        let now = Utc::now();
        assert!(backlog.resolve("a/up-again", now));
        assert!(backlog.resolve("a/flapping", now));
        assert!(backlog.fire("a/flapping", alert("flapping")));
        assert!(!backlog.fire("a/down", alert("down")), "already firing");

        // The lane comes back: one request with each alert's newest state, once.
        let mut told = sent(&backlog.take(0, later(), 100, usize::MAX).unwrap());
        told.sort();
        assert_eq!(
            told,
            [
                ("down".to_owned(), true),
                ("flapping".to_owned(), true),
                ("up-again".to_owned(), false)
            ]
        );
        backlog.delivered(0);
        assert!(backlog.take(0, later(), 100, usize::MAX).is_none());
        assert_eq!(backlog.figures().alerts_kept, 2, "the told resolve is forgotten");
    }

    #[test]
    fn a_resolve_is_kept_until_every_lane_is_told_and_an_untold_fire_is_forgotten() {
        let mut backlog = Backlog::new(2, []);
        backlog.fire("a/x", alert("x"));
        backlog.take(0, later(), 10, usize::MAX).unwrap();
        backlog.delivered(0);
        backlog.resolve("a/x", Utc::now());
        backlog.take(0, later(), 10, usize::MAX).unwrap();
        backlog.delivered(0);
        assert_eq!(backlog.figures().alerts_kept, 1, "lane 1 has not been told");
        assert_eq!(
            sent(&backlog.take(1, later(), 10, usize::MAX).unwrap()),
            [("x".to_owned(), false)]
        );
        backlog.delivered(1);
        assert_eq!(backlog.figures().alerts_kept, 0);

        // Fired and resolved before any request: nothing to send.
        backlog.fire("a/blip", alert("blip"));
        backlog.resolve("a/blip", Utc::now());
        assert!(backlog.take(0, later(), 10, usize::MAX).is_none());
        assert!(backlog.take(1, later(), 10, usize::MAX).is_none());
        assert_eq!(backlog.figures().alerts_kept, 0);
    }

    #[test]
    fn resends_faster_than_the_backlog_drains_starve_no_alert() {
        let mut backlog = Backlog::new(1, []);
        for n in 0..30 {
            backlog.fire(&format!("a/{n:02}"), alert(&format!("{n:02}")));
        }
        let mut told = std::collections::BTreeSet::new();
        // Every request of 10 is followed by a resend of all 30.
        for _ in 0..3 {
            for (id, _) in sent(&backlog.take(0, later(), 10, usize::MAX).unwrap()) {
                told.insert(id);
            }
            backlog.delivered(0);
            backlog.resend();
        }
        assert_eq!(told.len(), 30, "every alert within one round: {told:?}");
    }

    #[test]
    fn a_request_is_bounded_in_bytes_and_in_alerts_but_carries_at_least_one() {
        let mut backlog = Backlog::new(1, []);
        for n in 0..50 {
            backlog.fire(&format!("a/{n:02}"), alert(&format!("{n:02}")));
        }
        let one = backlog.take(0, later(), 10, 1).unwrap();
        assert_eq!(sent(&one).len(), 1, "at least one alert");
        backlog.delivered(0);
        let body = backlog.take(0, later(), 10, 500).unwrap();
        assert!(body.len() <= 500, "{}", body.len());
        assert!(sent(&body).len() > 1);
        assert_eq!(backlog.figures().bytes_in_flight, body.len());
        backlog.delivered(0);
        assert_eq!(sent(&backlog.take(0, later(), 10, usize::MAX).unwrap()).len(), 10);
        assert!(backlog.figures().bytes_in_flight > 0);
    }
}
