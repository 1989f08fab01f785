//! `GET /metrics`: Prometheus text exposition format 0.0.4.
//!
//! The pipeline histograms are observed as heartbeats flow; everything else is read at scrape
//! time from its owner (Stats, the Manager's per-agent figures with their liveness). Aggregate,
//! process, supervision and histogram families are mirrored into this endpoint's `prometheus`
//! registry and encoded by the crate; the five per-agent families, 50k samples with 10k agents,
//! are written directly ([`agent_families`]), merged in name order. Per-agent series stop at
//! `metrics_agent_limit` agents (by id), with one warning when the limit is first reached.

mod agent_families;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse, ResponseError};
use heartbeatd_actors::counters::{IngressCounters, RejectReason, TransitionCounts};
use heartbeatd_actors::ingest::pipeline_metrics::PipelineMetrics;
use heartbeatd_actors::liveness::{Liveness, StatusesInOrder};
use heartbeatd_actors::manager::{GetAgentFigures, Manager};
use heartbeatd_actors::model::agent::AgentFigures;
use heartbeatd_actors::model::liveness::AgentStatus;
use heartbeatd_actors::model::process::{ExitReason, ProcessState};
use heartbeatd_actors::registry::{AgentSet, RegistrySnapshot};
use heartbeatd_actors::stats::{GetStats, Stats, StatsReport};
use heartbeatd_actors::supervision::board::{BoardEntry, ProcessBoard};
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use slog::{warn, Logger};

use self::agent_families::{AgentFamily, AgentRow};
use super::auth::{Gate, Refusal};
use super::costly::{CostlyReads, SharedAnswer};
use super::ApiResponse;
use crate::server::ConnectionCounters;

/// Scrapes within this long of the last body get that body, and scrapes arriving together
/// wait for one: a scrape flood costs one scrape's work per window (the Manager's and
/// Liveness's lookups, the encoding: at most 4 bodies a second), not one per request, and
/// cannot slow the heartbeats down. A scrape answered from it costs nothing and is never
/// refused: a client looping on `/metrics` cannot make Prometheus's scrapes fail (a token
/// bucket taken before this cache was looked at let 8 looping connections do just that).
const REUSE_WITHIN: Duration = Duration::from_millis(250);

/// The series this endpoint mirrors at scrape time.
struct Series {
    received: IntCounter,
    processed: IntCounter,
    synced: IntCounter,
    rejected: IntCounterVec,
    errors: IntCounter,
    store_errors: IntCounter,
    unsynced: IntGauge,
    webhook_failures: IntCounter,
    queue_depth: IntGauge,
    queue_capacity: IntGauge,
    agents: IntGaugeVec,
    restarts: IntCounterVec,
    process_state: IntGaugeVec,
    process_cpu: GaugeVec,
    process_memory: IntGaugeVec,
    supervised: IntGaugeVec,
    alert_failures: IntCounter,
    send_timeouts: IntCounter,
    refused: IntCounterVec,
    handshake_failures: IntCounter,
    costly_refused: IntCounter,
}

/// The `/metrics` endpoint's state.
pub struct MetricsEndpoint {
    registry: Registry,
    series: Series,
    /// The registered agents (the per-agent series follow their id order).
    agents: RegistrySnapshot,
    manager: Addr<Manager>,
    liveness: Addr<Liveness>,
    stats: Addr<Stats>,
    counters: Arc<IngressCounters>,
    /// Supervised agents' process states and restarts.
    board: ProcessBoard,
    /// Liveness transitions per agent.
    transition_counts: Arc<TransitionCounts>,
    alert_failure_count: Arc<std::sync::atomic::AtomicU64>,
    /// The connection layer's counters, and the costly reads' budget.
    connections: ConnectionCounters,
    costly_reads: Arc<CostlyReads>,
    /// Refusals by the gate.
    gate: Gate,
    agent_limit: usize,
    limit_warned: AtomicBool,
    /// One scrape at a time (a scrape resets and sets the mirrored series), and the body of
    /// the last one with when it was made: see [`REUSE_WITHIN`].
    last: futures::lock::Mutex<Option<(Instant, SharedAnswer)>>,
    log: Logger,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

/// Where the endpoint reads what it mirrors at scrape time, each from its owner.
pub struct MetricsSources {
    /// The registered agents: the per-agent series follow its id order.
    pub registry: RegistrySnapshot,
    /// Each agent's last figures.
    pub manager: Addr<Manager>,
    /// Each agent's liveness.
    pub liveness: Addr<Liveness>,
    pub stats: Addr<Stats>,
    pub counters: Arc<IngressCounters>,
    /// Supervised agents' process states and restarts.
    pub board: ProcessBoard,
    /// Liveness transitions per agent.
    pub transition_counts: Arc<TransitionCounts>,
    /// Alert deliveries to Alertmanager that failed.
    pub alert_failures: Arc<std::sync::atomic::AtomicU64>,
    /// Send timeouts and failed TLS handshakes.
    pub connections: ConnectionCounters,
    /// Costly reads refused with 429.
    pub costly_reads: Arc<CostlyReads>,
    /// Requests the gate refused.
    pub gate: Gate,
}

impl MetricsEndpoint {
    pub fn new(
        pipeline: &PipelineMetrics,
        sources: MetricsSources,
        agent_limit: usize,
        log: Logger,
    ) -> prometheus::Result<Self> {
        let MetricsSources {
            registry: registered,
            manager,
            liveness,
            stats,
            counters,
            board,
            transition_counts,
            alert_failures,
            connections,
            costly_reads,
            gate,
        } = sources;
        let series = Series {
            received: counter(
                "heartbeatd_heartbeats_received_total",
                "Heartbeats accepted (answered 200).",
            ),
            processed: counter(
                "heartbeatd_heartbeats_processed_total",
                "Heartbeats applied by the manager.",
            ),
            synced: counter(
                "heartbeatd_heartbeats_synced_total",
                "Heartbeats whose journal record is synced: each is on disk after a kill -9 and restart.",
            ),
            rejected: IntCounterVec::new(
                Opts::new(
                    "heartbeatd_heartbeats_rejected_total",
                    "POST /heartbeat requests not accepted, by reason.",
                ),
                &["reason"],
            )?,
            errors: counter(
                "heartbeatd_heartbeats_errors_total",
                "Heartbeats whose processing failed.",
            ),
            store_errors: counter(
                "heartbeatd_store_errors_total",
                "Failed writes to data_dir (retried from memory).",
            ),
            unsynced: gauge(
                "heartbeatd_heartbeats_unsynced",
                "Heartbeats accepted and held in memory, not yet synced (grows while data_dir fails, up to its bound; then heartbeats get 503).",
            ),
            webhook_failures: counter(
                "heartbeatd_webhook_failures_total",
                "Webhook deliveries that failed every try, or were dropped.",
            ),
            queue_depth: gauge("heartbeatd_queue_depth", "Heartbeats accepted and not yet processed."),
            queue_capacity: gauge(
                "heartbeatd_queue_capacity",
                "The most heartbeats that may wait for the workers.",
            ),
            agents: IntGaugeVec::new(
                Opts::new("heartbeatd_agents", "Registered agents by liveness state."),
                &["status"],
            )?,
            restarts: IntCounterVec::new(
                Opts::new(
                    "heartbeatd_agent_restarts_total",
                    "Restarts of a supervised agent since heartbeatd started, by reason.",
                ),
                &["agent_id", "reason"],
            )?,
            process_state: IntGaugeVec::new(
                Opts::new(
                    "heartbeatd_agent_process_state",
                    "1 for a supervised agent's current process state, 0 for the others.",
                ),
                &["agent_id", "state"],
            )?,
            process_cpu: GaugeVec::new(
                Opts::new(
                    "heartbeatd_agent_process_cpu_ratio",
                    "CPU used by a supervised agent's process tree, in cores (1 = one core busy), since its previous measurement; only for a tree that is running.",
                ),
                &["agent_id"],
            )?,
            process_memory: IntGaugeVec::new(
                Opts::new(
                    "heartbeatd_agent_process_memory_bytes",
                    "Memory of a supervised agent's process tree: its proportional set size (PSS) summed over the tree; only for a tree that is running.",
                ),
                &["agent_id"],
            )?,
            supervised: IntGaugeVec::new(
                Opts::new("heartbeatd_supervised_processes", "Supervised agents by process state."),
                &["state"],
            )?,
            alert_failures: counter(
                "heartbeatd_alert_delivery_failures_total",
                "Requests to Alertmanager that failed (their alerts' newest state is sent again).",
            ),
            send_timeouts: counter(
                "heartbeatd_http_send_timeouts_total",
                "HTTP connections closed because the client read nothing for send_timeout_s.",
            ),
            refused: IntCounterVec::new(
                Opts::new(
                    "heartbeatd_requests_refused_total",
                    "Requests refused before any handler ran, by reason: foreign_host (421), cross_site, not_json (415), unauthorized.",
                ),
                &["reason"],
            )?,
            handshake_failures: counter(
                "heartbeatd_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            ),
            costly_refused: counter(
                "heartbeatd_costly_reads_refused_total",
                "Large reads (agent pages, histories, events, logs) refused with 429 while the byte budget was spent.",
            ),
        };
        let registry = Registry::new();
        let mirrored: [Box<dyn Collector>; 21] = [
            Box::new(series.received.clone()),
            Box::new(series.processed.clone()),
            Box::new(series.synced.clone()),
            Box::new(series.rejected.clone()),
            Box::new(series.errors.clone()),
            Box::new(series.store_errors.clone()),
            Box::new(series.unsynced.clone()),
            Box::new(series.webhook_failures.clone()),
            Box::new(series.queue_depth.clone()),
            Box::new(series.queue_capacity.clone()),
            Box::new(series.agents.clone()),
            Box::new(series.restarts.clone()),
            Box::new(series.process_state.clone()),
            Box::new(series.process_cpu.clone()),
            Box::new(series.process_memory.clone()),
            Box::new(series.supervised.clone()),
            Box::new(series.alert_failures.clone()),
            Box::new(series.send_timeouts.clone()),
            Box::new(series.refused.clone()),
            Box::new(series.handshake_failures.clone()),
            Box::new(series.costly_refused.clone()),
        ];
        for collector in mirrored {
            registry.register(collector)?;
        }
        pipeline.register(&registry)?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            series,
            agents: registered,
            manager,
            liveness,
            stats,
            counters,
            board,
            transition_counts,
            alert_failure_count: alert_failures,
            connections,
            costly_reads,
            gate,
            agent_limit,
            limit_warned: AtomicBool::new(false),
            last: futures::lock::Mutex::new(None),
            log,
        })
    }
}

fn render(
    endpoint: &MetricsEndpoint,
    report: &StatsReport,
    agents: &AgentSet,
    figures: &[AgentFigures],
    statuses: &[AgentStatus],
) -> prometheus::Result<Vec<u8>> {
    let s = &endpoint.series;
    mirror(&s.received, report.total_received);
    mirror(&s.processed, report.total_processed);
    mirror(&s.synced, report.total_synced);
    mirror(&s.errors, report.total_errors);
    mirror(&s.store_errors, report.store_errors);
    s.unsynced.set(report.heartbeats_unsynced as i64);
    mirror(&s.webhook_failures, report.webhook_failures);
    mirror(&s.alert_failures, endpoint.alert_failure_count.load(Ordering::Relaxed));
    mirror(
        &s.send_timeouts,
        endpoint.connections.send_timeouts.load(Ordering::Relaxed),
    );
    mirror(
        &s.handshake_failures,
        endpoint.connections.tls_handshake_failures.load(Ordering::Relaxed),
    );
    mirror(&s.costly_refused, endpoint.costly_reads.refused.load(Ordering::Relaxed));
    for kind in Refusal::ALL {
        mirror(
            &s.refused.with_label_values(&[kind.label()]),
            endpoint.gate.refused(kind),
        );
    }
    for reason in RejectReason::ALL {
        mirror(
            &s.rejected.with_label_values(&[reason.label()]),
            endpoint.counters.rejected_for(reason),
        );
    }
    s.queue_depth.set(report.queue_depth as i64);
    s.queue_capacity.set(report.queue_capacity as i64);
    for (status, count) in &report.agents_by_status {
        s.agents.with_label_values(&[status]).set(*count as i64);
    }
    // Supervised agents: few (each is a process on this host), so rebuilt at every scrape.
    s.restarts.reset();
    s.process_state.reset();
    s.process_cpu.reset();
    s.process_memory.reset();
    let supervised: Vec<(String, BoardEntry)> = endpoint
        .board
        .entries()
        .into_iter()
        .take(endpoint.agent_limit)
        .collect();
    // Measured now where the last figure is stale (this runs on the blocking pool).
    let ids: Vec<String> = supervised.iter().map(|(id, _)| id.clone()).collect();
    for (id, usage) in ids.iter().zip(endpoint.board.measure(&ids)) {
        if let Some(usage) = usage {
            s.process_cpu.with_label_values(&[id]).set(usage.cpu_ratio);
            s.process_memory
                .with_label_values(&[id])
                .set(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX));
        }
    }
    for (id, entry) in &supervised {
        for (reason, count) in ExitReason::ALL.iter().zip(entry.restarts_by_reason) {
            s.restarts.with_label_values(&[id, reason.name()]).inc_by(count);
        }
        for state in ProcessState::ALL {
            s.process_state
                .with_label_values(&[id, state.name()])
                .set(i64::from(entry.view.state == state));
        }
    }
    for (state, count) in ProcessState::ALL.iter().zip(endpoint.board.per_state()) {
        s.supervised.with_label_values(&[state.name()]).set(count as i64);
    }
    let rows = agent_rows(endpoint, agents, figures, statuses);

    // The crate's families and the per-agent ones, in name order as the crate writes them.
    let mut text = String::with_capacity(96 * rows.len() * AgentFamily::ALL.len() + 64 * 1024);
    let mut direct = AgentFamily::ALL.iter().peekable();
    let encoder = TextEncoder::new();
    for family in endpoint.registry.gather() {
        while let Some(next) = direct.next_if(|f| f.name() < family.name()) {
            next.encode(&rows, &mut text);
        }
        encoder.encode_utf8(std::slice::from_ref(&family), &mut text)?;
    }
    for rest in direct {
        rest.encode(&rows, &mut text);
    }
    Ok(text.into_bytes())
}

/// The per-agent samples, in id order (as the crate sorts them): the registry's order, which
/// the figures and states were given in.
fn agent_rows<'a>(
    endpoint: &MetricsEndpoint,
    agents: &'a AgentSet,
    figures: &[AgentFigures],
    statuses: &[AgentStatus],
) -> Vec<AgentRow<'a>> {
    let ids = &agents.ids_after(None)[..figures.len().min(statuses.len())];
    let transitions = endpoint.transition_counts.of_each(ids.iter().map(String::as_str));
    ids.iter()
        .zip(figures)
        .zip(statuses)
        .zip(transitions)
        .map(|(((id, figures), status), transitions)| AgentRow {
            id,
            up: *status == AgentStatus::Up,
            down: *status == AgentStatus::Down,
            last_seen_ms: figures.last_seen.map(|seen| seen.timestamp_millis()),
            cpu: figures.last_cpu,
            memory: figures.last_memory.map(|m| m as f64),
            transitions,
        })
        .collect()
}

/// Sets a counter to `value` (it mirrors a count owned elsewhere).
fn mirror(counter: &IntCounter, value: u64) {
    counter.reset();
    counter.inc_by(value);
}

pub async fn metrics(endpoint: web::Data<MetricsEndpoint>) -> HttpResponse {
    let endpoint = endpoint.into_inner();
    let unavailable = || {
        ApiResponse::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics unavailable: heartbeatd is stopping",
        )
    };
    let ok = |body: &SharedAnswer| {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
            .body(body.body())
    };
    // The last scrape's body, while fresh, is answered to anyone at no cost (REUSE_WITHIN).
    let mut last = endpoint.last.lock().await;
    if let Some((at, body)) = last.as_ref() {
        if at.elapsed() < REUSE_WITHIN {
            return ok(body);
        }
    }
    let Ok(report) = endpoint.stats.send(GetStats).await else {
        return unavailable();
    };
    // The Manager's figures and Liveness's states for the same ids, asked at once; both
    // answer in id order, so the ids are read from the snapshot, never copied.
    let agents = endpoint.agents.load();
    let limit = endpoint.agent_limit;
    let figures = endpoint.manager.send(GetAgentFigures {
        agents: Arc::clone(&agents),
        limit,
    });
    let statuses = endpoint.liveness.send(StatusesInOrder {
        agents: Arc::clone(&agents),
        limit,
    });
    let (Ok(figures), Ok(statuses)) = futures::future::join(figures, statuses).await else {
        return unavailable();
    };
    if agents.len() > limit && !endpoint.limit_warned.swap(true, Ordering::Relaxed) {
        warn!(endpoint.log, "metrics_agent_limit reached: agents past it have no per-agent series (logged once)";
            "metrics_agent_limit" => limit, "agents_registered" => agents.len(),
            "what_to_do" => "raise metrics_agent_limit if Prometheus can take the series");
    }

    // Encoding 5 series per agent is CPU work: the blocking pool does it,
    // so heartbeats on this HTTP thread are not held up by a scrape.
    let rendering = Arc::clone(&endpoint);
    let scrape = web::block(move || render(&rendering, &report, &agents, &figures, &statuses)).await;
    let body = match scrape {
        Ok(Ok(body)) => Bytes::from(body),
        Ok(Err(e)) => {
            return ApiResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not encode metrics: {e}"),
            )
        }
        Err(_) => return unavailable(),
    };
    // The body is a large answer like any other: charged to the budget (once, however many
    // connections send it) for as long as anyone still sends it; with the budget spent by
    // other large answers, 429 like them. (One body is built at a time, under `last`.)
    let reservation = match endpoint.costly_reads.reserve(0) {
        Ok(reservation) => reservation,
        Err(busy) => return busy.error_response(),
    };
    let body = match SharedAnswer::new(body, reservation) {
        Ok(body) => body,
        Err(busy) => return busy.error_response(),
    };
    *last = Some((Instant::now(), body.clone()));
    ok(&body)
}
