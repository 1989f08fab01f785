//! The sorted agent listing (`GET /agents?sort=…`, and its process and reported-status
//! filters): the status page's worst-first view of the whole fleet, one page at a time.
//!
//! Its cost is bounded whatever the fleet: the registry is walked in chunks of
//! [`CHUNK`] agents (one Liveness round trip each, no id copied; other messages run between
//! two chunks, so heartbeats are not held up), and only the first `offset + limit` places are
//! kept while walking ([`Leaders`]), never a copy of the fleet.

use std::sync::Arc;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;

use super::Manager;
use crate::liveness::StatusesAt;
use crate::model::agent::AgentView;
use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::AgentStatus;
use crate::model::ordering::{Leaders, Place, Sort, SortFacts};
use crate::model::process::ProcessState;
use crate::registry::AgentSet;

/// Agents ranked per Liveness round trip.
const CHUNK: usize = 4096;

/// Which agents a listing keeps; an empty list keeps any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only agents of this `type`.
    pub agent_type: Option<String>,
    /// Only ids that start with this.
    pub prefix: Option<String>,
    /// Only agents in one of these liveness states.
    pub statuses: Vec<AgentStatus>,
    /// Only supervised agents whose process is in one of these states.
    pub processes: Vec<ProcessState>,
    /// Only agents whose last reported status is one of these.
    pub reported: Vec<ReportedStatus>,
}

/// The agents of `filter` in `sort` order, from the `offset`-th, at most `limit`.
#[derive(Message)]
#[rtype(result = "SortedPage")]
pub struct ListSorted {
    pub filter: ListFilter,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a sorted listing.
#[derive(Debug)]
pub struct SortedPage {
    pub agents: Vec<AgentView>,
    /// How many agents the filter kept, on every page.
    pub total: usize,
}

/// A listing under way: what it keeps and what it has counted.
struct Ranking {
    msg: ListSorted,
    agents: Arc<AgentSet>,
    /// The registry indexes the filter's prefix allows: `[start, end)`.
    end: usize,
    leaders: Leaders,
    total: usize,
}

impl Handler<ListSorted> for Manager {
    type Result = ResponseActFuture<Self, SortedPage>;

    fn handle(&mut self, msg: ListSorted, _: &mut Context<Self>) -> Self::Result {
        let agents = self.registry_view.load();
        // Ids are sorted, so those with the prefix are one run starting at the prefix itself.
        let ids = agents.ids_after(None);
        let prefix = msg.filter.prefix.as_deref().unwrap_or("");
        let start = ids.partition_point(|id| id.as_str() < prefix);
        let end = start + ids[start..].partition_point(|id| id.starts_with(prefix));
        let keep = msg.offset.saturating_add(msg.limit);
        let ranking = Ranking {
            msg,
            agents,
            end,
            leaders: Leaders::new(keep),
            total: 0,
        };
        Box::pin(rank_from(ranking, start).then(|ranking, act: &mut Manager, _| {
            let Ranking {
                msg,
                agents,
                leaders,
                total,
                ..
            } = ranking;
            let ids: Vec<String> = leaders
                .into_sorted()
                .into_iter()
                .skip(msg.offset)
                .take(msg.limit)
                .filter_map(|place| agents.ids_after(None).get(place.index as usize).cloned())
                .collect();
            fut::wrap_future(act.views(ids)).map(move |agents: Vec<AgentView>, _, _| SortedPage { agents, total })
        }))
    }
}

/// Ranks the agents from index `from` on, a chunk at a time.
fn rank_from(mut ranking: Ranking, from: usize) -> LocalBoxActorFuture<Manager, Ranking> {
    if from >= ranking.end {
        return Box::pin(fut::ready(ranking));
    }
    let count = CHUNK.min(ranking.end - from);
    Box::pin(
        fut::ready(())
            .then(move |(), act: &mut Manager, _| {
                let request = act.liveness.as_ref().map(|l| {
                    l.send(StatusesAt {
                        agents: Arc::clone(&ranking.agents),
                        from,
                        count,
                    })
                });
                fut::wrap_future(async move {
                    match request {
                        Some(request) => request.await.ok(),
                        None => None,
                    }
                })
                .map(move |statuses, act: &mut Manager, _| {
                    act.rank_chunk(&mut ranking, from, count, statuses.unwrap_or_default());
                    ranking
                })
            })
            .then(move |ranking, _, _| rank_from(ranking, from + count)),
    )
}

impl Manager {
    /// Filters and places the `count` agents from index `from`. `statuses` is Liveness's
    /// answer for them (empty without Liveness: every agent is then `new`).
    fn rank_chunk(
        &self,
        ranking: &mut Ranking,
        from: usize,
        count: usize,
        statuses: Vec<(AgentStatus, Option<chrono::DateTime<chrono::Utc>>)>,
    ) {
        let ids = &ranking.agents.ids_after(None)[from..from + count];
        let processes = match &self.supervision {
            Some(cx) => cx.board.states_of(ids.iter().map(String::as_str)),
            None => vec![None; count],
        };
        let filter = &ranking.msg.filter;
        for (i, id) in ids.iter().enumerate() {
            let Some(info) = ranking.agents.get(id) else { continue };
            if filter.agent_type.as_ref().is_some_and(|t| &info.agent_type != t) {
                continue;
            }
            let (status, since) = statuses.get(i).copied().unwrap_or((AgentStatus::New, None));
            // Only a supervised agent has a process (as in its view).
            let process = processes[i].filter(|_| info.is_supervised());
            let state = self.agents.get(id).map(|e| &e.state);
            let reported = state.and_then(|s| s.status);
            if !(filter.statuses.is_empty() || filter.statuses.contains(&status))
                || !(filter.processes.is_empty() || process.is_some_and(|(p, _)| filter.processes.contains(&p)))
                || !(filter.reported.is_empty() || reported.is_some_and(|r| filter.reported.contains(&r)))
            {
                continue;
            }
            let facts = SortFacts {
                status: Some(status),
                since,
                process: process.map(|(p, _)| p),
                restarts: process.map(|(_, r)| r),
                reported,
                last_seen: state.and_then(|s| s.last_seen),
                cpu: state.and_then(|s| s.last_cpu),
                memory: state.and_then(|s| s.last_memory),
            };
            ranking.total += 1;
            ranking
                .leaders
                .push(Place::of(ranking.msg.sort, &facts, (from + i) as u32));
        }
    }
}
