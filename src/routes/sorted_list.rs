//! `GET /agents?sort=…` (or with `process=`, `reported=`, `offset=`, or several `status`
//! values): the agents in an order other than by id, or filtered by more than liveness, paged
//! by offset. The status page's table is this listing, worst first by default (the order is
//! [`heartbeatd_actors::model::ordering::severity`]).
//!
//! Every value of the query is bounded here before the Manager sees it; the answer is a page
//! of at most [`PAGE_BYTES`], like the id-ordered listing.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use heartbeatd_actors::manager::sorted_list::{ListFilter, ListSorted, SortedPage};
use heartbeatd_actors::model::heartbeat::ReportedStatus;
use heartbeatd_actors::model::liveness::AgentStatus;
use heartbeatd_actors::model::ordering::{Place, Sort, SortKey};
use heartbeatd_actors::model::process::ProcessState;
use serde::Serialize;

use super::agents::{unavailable, AdminApi, AgentsError, PAGE_BYTES};

/// The deepest a sorted listing reaches: `offset` at most this. Past it, page by id (`after`):
/// the listing keeps `offset + limit` places while it walks the fleet.
pub const MAX_OFFSET: usize = 100_000;
/// The most values one filter (`status`, `process`, `reported`) may list.
const MAX_FILTER_VALUES: usize = 16;

/// The query of a sorted listing, as the handler of `GET /agents` received it.
pub struct SortedQuery {
    pub agent_type: Option<String>,
    pub prefix: Option<String>,
    pub status: Option<String>,
    pub process: Option<String>,
    pub reported: Option<String>,
    pub sort: Option<String>,
    pub offset: Option<usize>,
    /// Already checked (1 to `MAX_PAGE`) and capped to what a page's bytes can hold.
    pub limit: usize,
}

impl SortedQuery {
    /// Whether the query asks for this listing rather than the id-ordered one.
    pub fn wanted(&self) -> bool {
        self.sort.is_some()
            || self.process.is_some()
            || self.reported.is_some()
            || self.offset.is_some()
            || self.status.as_deref().is_some_and(|s| s.contains(','))
    }
}

/// `a,b,c` → each parsed by `parse`; the message names the key and what it takes.
fn parse_list<T>(
    key: &str,
    text: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    takes: &str,
) -> Result<Vec<T>, AgentsError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > MAX_FILTER_VALUES {
        return Err(AgentsError::BadRequest(format!(
            "{key}: at most {MAX_FILTER_VALUES} values, got {}",
            parts.len()
        )));
    }
    parts
        .into_iter()
        .map(|part| {
            parse(part).ok_or_else(|| {
                let shown: String = part.chars().take(64).collect();
                AgentsError::BadRequest(format!("{key}: {shown:?} is not one of {takes}"))
            })
        })
        .collect()
}

/// The listing's page as JSON.
#[derive(Serialize)]
struct Frame<'a> {
    total: usize,
    offset: usize,
    next_offset: Option<usize>,
    sort: &'a str,
}

/// `{"agents": [...], "total", "offset", "next_offset", "sort"}`, ended early when the next
/// agent would take the page past `max_bytes` (then `next_offset` is where the next page
/// starts).
pub fn encode_sorted_page(
    page: SortedPage,
    offset: usize,
    sort: Sort,
    max_bytes: usize,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(max_bytes.min(64 << 10));
    out.extend_from_slice(b"{\"agents\":[");
    let mut shown = 0;
    for (i, agent) in page.agents.iter().enumerate() {
        let json = serde_json::to_vec(agent)?;
        // Room for the frame after the list (well under 200 bytes).
        if i > 0 && out.len() + json.len() + 256 > max_bytes {
            break;
        }
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json);
        shown += 1;
    }
    let next = offset + shown;
    let frame = serde_json::to_vec(&Frame {
        total: page.total,
        offset,
        next_offset: (next < page.total).then_some(next),
        sort: &sort.text(),
    })?;
    out.extend_from_slice(b"],");
    // The frame's fields follow the list: `{"total":…}` without its opening brace.
    out.extend_from_slice(&frame[1..]);
    Ok(out)
}

/// Answers a sorted listing.
pub async fn list_sorted(api: web::Data<AdminApi>, query: SortedQuery) -> Result<HttpResponse, AgentsError> {
    let sort = match query.sort.as_deref() {
        None => Sort::WORST_FIRST,
        Some(text) => Sort::parse(text).ok_or_else(|| {
            let names: Vec<&str> = SortKey::ALL.iter().map(|k| k.name()).collect();
            let shown: String = text.chars().take(64).collect();
            AgentsError::BadRequest(format!(
                "sort: {shown:?} is not one of {} (a leading - reverses it)",
                names.join(", ")
            ))
        })?,
    };
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(AgentsError::BadRequest(format!(
            "offset: at most {MAX_OFFSET} in a sorted listing, got {offset}; page through more by id (after=)"
        )));
    }
    let filter = ListFilter {
        agent_type: query.agent_type,
        prefix: query.prefix.filter(|p| !p.is_empty()),
        statuses: parse_list(
            "status",
            query.status.as_deref(),
            AgentStatus::parse,
            "new, up, late, down, paused, stopped",
        )?,
        processes: parse_list(
            "process",
            query.process.as_deref(),
            |t| ProcessState::ALL.into_iter().find(|s| s.name() == t),
            "stopped, starting, running, backoff, stopping, exited, fatal",
        )?,
        reported: parse_list(
            "reported",
            query.reported.as_deref(),
            ReportedStatus::from_wire,
            "running, stopped, error",
        )?,
    };
    // The page, and the places kept while walking the fleet.
    let keeps = (offset + query.limit) * std::mem::size_of::<Place>();
    let reservation = api.costly.reserve(2 * PAGE_BYTES + keeps + 1024)?;
    let page = api
        .manager
        .send(ListSorted {
            filter,
            sort,
            offset,
            limit: query.limit,
        })
        .await
        .map_err(unavailable)?;
    let json = web::block(move || encode_sorted_page(page, offset, sort, PAGE_BYTES))
        .await
        .map_err(|_| AgentsError::Unavailable("could not encode the page".into()))?
        .map_err(|e| AgentsError::Unavailable(format!("could not encode the page: {e}")))?;
    Ok(reservation.json_answer(Bytes::from(json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeatd_actors::model::agent::{AgentInfo, AgentView};

    fn view(id: &str, name_len: usize) -> AgentView {
        let info = AgentInfo {
            id: id.to_owned(),
            name: "n".repeat(name_len),
            ..Default::default()
        };
        AgentView::new(&info, None)
    }

    #[test]
    fn a_sorted_page_ends_before_it_passes_its_bytes_and_says_where_the_next_starts() {
        let page = SortedPage {
            agents: (0..100).map(|i| view(&format!("a{i:03}"), 200)).collect(),
            total: 300,
        };
        let bytes = encode_sorted_page(page, 40, Sort::WORST_FIRST, 4096).unwrap();
        assert!(bytes.len() <= 4096, "{}", bytes.len());
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let shown = json["agents"].as_array().unwrap().len();
        assert!(shown > 0 && shown < 100);
        assert_eq!(json["next_offset"], 40 + shown);
        assert_eq!((json["total"].as_u64(), json["offset"].as_u64()), (Some(300), Some(40)));
        assert_eq!(json["sort"], "worst");

        // The last page says there is no next.
        let last = SortedPage {
            agents: vec![view("z", 1)],
            total: 41,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&encode_sorted_page(last, 40, Sort::parse("-cpu").unwrap(), 4096).unwrap()).unwrap();
        assert_eq!(json["next_offset"], serde_json::Value::Null);
        assert_eq!(json["sort"], "-cpu");
    }

    #[test]
    fn filters_take_known_values_only_and_a_bounded_number_of_them() {
        let parse = |t| parse_list("status", Some(t), AgentStatus::parse, "…");
        assert_eq!(parse("down,late").unwrap(), [AgentStatus::Down, AgentStatus::Late]);
        assert!(parse("").unwrap().is_empty());
        for bad in ["down,", "DOWN", "down,bogus", "<script>"] {
            let message = parse(bad).unwrap_err().to_string();
            assert!(message.starts_with("status: "), "{message}");
        }
        let many = vec!["up"; MAX_FILTER_VALUES + 1].join(",");
        assert!(parse(&many).unwrap_err().to_string().contains("at most 16 values"));
    }
}
