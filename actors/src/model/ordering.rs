//! The orders a sorted agent listing can take (`GET /agents?sort=…`, the status page's
//! columns), and the one the person on call needs first: **worst first**, by [`severity`].
//!
//! Every order is total: ties are broken by id, so a page never shuffles between two
//! refreshes when nothing changed. An agent without a value for the key (never seen, not
//! supervised) comes after every agent with one, in either direction.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::AgentStatus;
use crate::model::process::ProcessState;

/// What a listing can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// [`severity`], then id.
    Worst,
    Id,
    /// `status_since`: the oldest change of liveness first.
    Since,
    /// `last_seen`: the longest silent first.
    LastSeen,
    /// A supervised agent's restarts since heartbeatd started: the fewest first.
    Restarts,
    /// CPU percent of the last heartbeat: the lowest first.
    Cpu,
    /// Memory of the last heartbeat: the lowest first.
    Memory,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        Self::Worst,
        Self::Id,
        Self::Since,
        Self::LastSeen,
        Self::Restarts,
        Self::Cpu,
        Self::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Worst => "worst",
            Self::Id => "id",
            Self::Since => "since",
            Self::LastSeen => "last_seen",
            Self::Restarts => "restarts",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        }
    }
}

/// A key and a direction: `cpu` (ascending) or `-cpu` (descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    pub const WORST_FIRST: Sort = Sort {
        key: SortKey::Worst,
        descending: false,
    };

    /// `key` or `-key`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (descending, name) = match text.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, text),
        };
        let key = SortKey::ALL.into_iter().find(|k| k.name() == name)?;
        Some(Self { key, descending })
    }

    /// The text [`Sort::parse`] reads.
    pub fn text(self) -> String {
        format!("{}{}", if self.descending { "-" } else { "" }, self.key.name())
    }
}

/// How bad an agent's state is; the lower, the worse. The first line that applies decides:
///
/// | rank | the agent |
/// |---|---|
/// | 0 | is `down` (its liveness) |
/// | 1 | has a `fatal` process (restarted too often; heartbeatd gave up) |
/// | 2 | is `late` |
/// | 3 | has a process in `backoff` (it ended and waits to be restarted) |
/// | 4 | reports `error` about itself |
/// | 5 | has a process that `exited` on its own and is not restarted |
/// | 6 | is `new` (never reported) |
/// | 7 | has a process `starting` or `stopping` |
/// | 8 | is `paused` |
/// | 9 | is `stopped`, or its process is |
/// | 10 | anything else: `up` and, if supervised, `running` |
pub fn severity(status: AgentStatus, process: Option<ProcessState>, reported: Option<ReportedStatus>) -> u8 {
    use AgentStatus as L;
    use ProcessState as P;
    match (status, process, reported) {
        (L::Down, _, _) => 0,
        (_, Some(P::Fatal), _) => 1,
        (L::Late, _, _) => 2,
        (_, Some(P::Backoff), _) => 3,
        (_, _, Some(ReportedStatus::Error)) => 4,
        (_, Some(P::Exited), _) => 5,
        (L::New, _, _) => 6,
        (_, Some(P::Starting | P::Stopping), _) => 7,
        (L::Paused, _, _) => 8,
        (L::Stopped, _, _) | (_, Some(P::Stopped), _) => 9,
        _ => 10,
    }
}

/// What an order is decided on, for one agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SortFacts {
    pub status: Option<AgentStatus>,
    pub since: Option<DateTime<Utc>>,
    pub process: Option<ProcessState>,
    pub restarts: Option<u64>,
    pub reported: Option<ReportedStatus>,
    pub last_seen: Option<DateTime<Utc>>,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
}

/// An agent's place in an order: compared by `missing` (agents without a value last), then
/// `value`, then `index` (its place by id).
#[derive(Debug, Clone, Copy)]
pub struct Place {
    missing: bool,
    value: f64,
    /// The agent's index among the registered ids (sorted): the tie-break, and how the
    /// listing finds the agent again.
    pub index: u32,
}

impl Place {
    pub fn of(sort: Sort, facts: &SortFacts, index: u32) -> Self {
        let value = match sort.key {
            SortKey::Worst => Some(f64::from(severity(
                facts.status.unwrap_or(AgentStatus::New),
                facts.process,
                facts.reported,
            ))),
            SortKey::Id => Some(f64::from(index)),
            SortKey::Since => facts.since.map(|t| t.timestamp_millis() as f64),
            SortKey::LastSeen => facts.last_seen.map(|t| t.timestamp_millis() as f64),
            SortKey::Restarts => facts.restarts.map(|r| r as f64),
            SortKey::Cpu => facts.cpu,
            SortKey::Memory => facts.memory.map(|m| m as f64),
        };
        match value {
            Some(v) => Place {
                missing: false,
                value: if sort.descending { -v } else { v },
                index,
            },
            None => Place {
                missing: true,
                value: 0.0,
                index,
            },
        }
    }
}

impl Ord for Place {
    fn cmp(&self, other: &Self) -> Ordering {
        self.missing
            .cmp(&other.missing)
            .then(self.value.total_cmp(&other.value))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Place {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Place {}

/// The first `keep` places of those pushed, in order, holding no more than `keep` at a time:
/// a listing of a large fleet sorts only what its page can reach.
#[derive(Debug)]
pub struct Leaders {
    keep: usize,
    heap: std::collections::BinaryHeap<Place>,
}

impl Leaders {
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            heap: std::collections::BinaryHeap::with_capacity(keep.min(1 << 16) + 1),
        }
    }

    pub fn push(&mut self, place: Place) {
        if self.keep == 0 {
            return;
        }
        if self.heap.len() < self.keep {
            self.heap.push(place);
        } else if self.heap.peek().is_some_and(|worst_kept| place < *worst_kept) {
            self.heap.pop();
            self.heap.push(place);
        }
    }

    /// The places kept, first first.
    pub fn into_sorted(self) -> Vec<Place> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_first_puts_down_then_fatal_then_late_then_the_rest() {
        use AgentStatus as L;
        use ProcessState as P;
        let cases = [
            (L::Down, Some(P::Running), None),
            (L::Stopped, Some(P::Fatal), None),
            (L::Late, None, None),
            (L::Up, Some(P::Backoff), None),
            (L::Up, None, Some(ReportedStatus::Error)),
            (L::Stopped, Some(P::Exited), None),
            (L::New, None, None),
            (L::Up, Some(P::Starting), None),
            (L::Paused, None, None),
            (L::Stopped, Some(P::Stopped), None),
            (L::Up, Some(P::Running), Some(ReportedStatus::Running)),
        ];
        let ranks: Vec<u8> = cases.iter().map(|(l, p, r)| severity(*l, *p, *r)).collect();
        assert_eq!(ranks, (0..=10).collect::<Vec<u8>>());
        // Down wins over everything else it may also be.
        assert_eq!(severity(L::Down, Some(P::Fatal), Some(ReportedStatus::Error)), 0);
        // An agent reporting error is never ranked with the healthy ones.
        assert!(severity(L::Up, Some(P::Running), Some(ReportedStatus::Error)) < severity(L::New, None, None));
    }

    #[test]
    fn sorts_parse_with_a_direction_and_refuse_anything_else() {
        assert_eq!(Sort::parse("worst"), Some(Sort::WORST_FIRST));
        let cpu = Sort::parse("-cpu").unwrap();
        assert_eq!((cpu.key, cpu.descending), (SortKey::Cpu, true));
        assert_eq!(cpu.text(), "-cpu");
        for bad in ["", "-", "--cpu", "CPU", "name", "worst ", "cpu,id"] {
            assert_eq!(Sort::parse(bad), None, "{bad:?}");
        }
    }

    fn facts(cpu: Option<f64>) -> SortFacts {
        SortFacts {
            cpu,
            ..Default::default()
        }
    }

    #[test]
    fn agents_without_a_value_come_last_in_both_directions_and_ties_go_by_id() {
        let agents = [facts(Some(5.0)), facts(None), facts(Some(1.0)), facts(Some(5.0))];
        for (text, expected) in [("cpu", [2, 0, 3, 1]), ("-cpu", [0, 3, 2, 1])] {
            let sort = Sort::parse(text).unwrap();
            let mut places: Vec<Place> = agents
                .iter()
                .enumerate()
                .map(|(i, f)| Place::of(sort, f, i as u32))
                .collect();
            places.sort();
            assert_eq!(places.iter().map(|p| p.index).collect::<Vec<_>>(), expected, "{text}");
        }
    }

    #[test]
    fn leaders_keep_only_the_first_places_in_order() {
        let sort = Sort::parse("-cpu").unwrap();
        let mut leaders = Leaders::new(3);
        let mut all = Vec::new();
        for i in 0..1000u32 {
            let place = Place::of(sort, &facts(Some(f64::from((i * 7919) % 1000))), i);
            leaders.push(place);
            all.push(place);
        }
        all.sort();
        let kept = leaders.into_sorted();
        assert_eq!(
            kept.iter().map(|p| p.index).collect::<Vec<_>>(),
            all[..3].iter().map(|p| p.index).collect::<Vec<_>>()
        );
        let mut none = Leaders::new(0);
        none.push(all[0]);
        assert!(none.into_sorted().is_empty());
    }
}
