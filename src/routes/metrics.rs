//! `GET /metrics`: Prometheus text exposition format 0.0.4.
//!
//! The pipeline histograms are observed as heartbeats flow; everything else is read at scrape
//! time from its owner (Stats, the Manager's agent views with their liveness), mirrored into
//! this endpoint's registry, and encoded. Per-agent series stop at `metrics_agent_limit`
//! agents (by id), with one warning when the limit is first reached.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use heartbeatd_actors::counters::{IngressCounters, RejectReason, TransitionCounts};
use heartbeatd_actors::ingest::pipeline_metrics::PipelineMetrics;
use heartbeatd_actors::manager::{ListAgents, Manager};
use heartbeatd_actors::model::agent::AgentView;
use heartbeatd_actors::model::liveness::AgentStatus;
use heartbeatd_actors::model::process::{ExitReason, ProcessState};
use heartbeatd_actors::stats::{GetStats, Stats, StatsReport};
use heartbeatd_actors::supervision::board::ProcessBoard;
use prometheus::{Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use slog::{warn, Logger};

use super::ApiResponse;

/// The series this endpoint mirrors at scrape time.
struct Series {
    received: IntCounter,
    processed: IntCounter,
    rejected: IntCounterVec,
    errors: IntCounter,
    store_errors: IntCounter,
    webhook_failures: IntCounter,
    queue_depth: IntGauge,
    queue_capacity: IntGauge,
    agents: IntGaugeVec,
    agent_up: IntGaugeVec,
    agent_last_seen: GaugeVec,
    agent_cpu: GaugeVec,
    agent_memory: GaugeVec,
    restarts: IntCounterVec,
    process_state: IntGaugeVec,
    supervised: IntGaugeVec,
    transitions: IntCounterVec,
    alert_failures: IntCounter,
}

/// The `/metrics` endpoint's state.
pub struct MetricsEndpoint {
    registry: Registry,
    series: Series,
    manager: Addr<Manager>,
    stats: Addr<Stats>,
    counters: Arc<IngressCounters>,
    /// Supervised agents' process states and restarts.
    board: ProcessBoard,
    /// Liveness transitions per agent.
    transition_counts: Arc<TransitionCounts>,
    alert_failure_count: Arc<std::sync::atomic::AtomicU64>,
    agent_limit: usize,
    limit_warned: AtomicBool,
    /// One scrape at a time; holds the agent ids of the last scrape, whose series are removed
    /// when an agent is no longer listed (the others are updated in place: no allocation).
    scrape: Mutex<Vec<String>>,
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
    pub manager: Addr<Manager>,
    pub stats: Addr<Stats>,
    pub counters: Arc<IngressCounters>,
    /// Supervised agents' process states and restarts.
    pub board: ProcessBoard,
    /// Liveness transitions per agent.
    pub transition_counts: Arc<TransitionCounts>,
    /// Alert deliveries to Alertmanager that failed.
    pub alert_failures: Arc<std::sync::atomic::AtomicU64>,
}

impl MetricsEndpoint {
    pub fn new(
        pipeline: &PipelineMetrics,
        sources: MetricsSources,
        agent_limit: usize,
        log: Logger,
    ) -> prometheus::Result<Self> {
        let MetricsSources {
            manager,
            stats,
            counters,
            board,
            transition_counts,
            alert_failures,
        } = sources;
        let agent_label = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["agent_id"]);
        let series = Series {
            received: counter(
                "heartbeatd_heartbeats_received_total",
                "Heartbeats accepted (answered 200).",
            ),
            processed: counter(
                "heartbeatd_heartbeats_processed_total",
                "Heartbeats applied by the manager.",
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
            agent_up: IntGaugeVec::new(
                Opts::new("heartbeatd_agent_up", "1 when the agent is up, 0 otherwise."),
                &["agent_id"],
            )?,
            agent_last_seen: agent_label(
                "heartbeatd_agent_last_seen_timestamp_seconds",
                "Server receive time of the agent's last heartbeat, Unix seconds.",
            )?,
            agent_cpu: agent_label(
                "heartbeatd_agent_cpu_percent",
                "CPU percent in the agent's last heartbeat.",
            )?,
            agent_memory: agent_label(
                "heartbeatd_agent_memory_bytes",
                "Memory bytes in the agent's last heartbeat.",
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
            supervised: IntGaugeVec::new(
                Opts::new("heartbeatd_supervised_processes", "Supervised agents by process state."),
                &["state"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "heartbeatd_agent_transitions_total",
                    "Liveness transitions of an agent since heartbeatd started, by the state entered (only states it entered).",
                ),
                &["agent_id", "to"],
            )?,
            alert_failures: counter(
                "heartbeatd_alert_delivery_failures_total",
                "Alert deliveries to Alertmanager that failed every try, or were dropped.",
            ),
        };
        let registry = Registry::new();
        registry.register(Box::new(series.received.clone()))?;
        registry.register(Box::new(series.processed.clone()))?;
        registry.register(Box::new(series.rejected.clone()))?;
        registry.register(Box::new(series.errors.clone()))?;
        registry.register(Box::new(series.store_errors.clone()))?;
        registry.register(Box::new(series.webhook_failures.clone()))?;
        registry.register(Box::new(series.queue_depth.clone()))?;
        registry.register(Box::new(series.queue_capacity.clone()))?;
        registry.register(Box::new(series.agents.clone()))?;
        registry.register(Box::new(series.agent_up.clone()))?;
        registry.register(Box::new(series.agent_last_seen.clone()))?;
        registry.register(Box::new(series.agent_cpu.clone()))?;
        registry.register(Box::new(series.agent_memory.clone()))?;
        registry.register(Box::new(series.restarts.clone()))?;
        registry.register(Box::new(series.process_state.clone()))?;
        registry.register(Box::new(series.supervised.clone()))?;
        registry.register(Box::new(series.transitions.clone()))?;
        registry.register(Box::new(series.alert_failures.clone()))?;
        pipeline.register(&registry)?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            series,
            manager,
            stats,
            counters,
            board,
            transition_counts,
            alert_failure_count: alert_failures,
            agent_limit,
            limit_warned: AtomicBool::new(false),
            scrape: Mutex::new(Vec::new()),
            log,
        })
    }
}

fn render(endpoint: &MetricsEndpoint, report: &StatsReport, agents: &[AgentView]) -> prometheus::Result<Vec<u8>> {
    let mut previous = endpoint.scrape.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let s = &endpoint.series;
    mirror(&s.received, report.total_received);
    mirror(&s.processed, report.total_processed);
    mirror(&s.errors, report.total_errors);
    mirror(&s.store_errors, report.store_errors);
    mirror(&s.webhook_failures, report.webhook_failures);
    mirror(&s.alert_failures, endpoint.alert_failure_count.load(Ordering::Relaxed));
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
    let current: HashSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    for gone in previous.iter().filter(|id| !current.contains(id.as_str())) {
        let id = [gone.as_str()];
        let _ = s.agent_up.remove_label_values(&id);
        for vec in [&s.agent_last_seen, &s.agent_cpu, &s.agent_memory] {
            let _ = vec.remove_label_values(&id);
        }
    }
    for agent in agents {
        let id = [agent.id.as_str()];
        s.agent_up
            .with_label_values(&id)
            .set(i64::from(agent.status == AgentStatus::Up));
        if let Some(seen) = agent.last_seen {
            s.agent_last_seen
                .with_label_values(&id)
                .set(seen.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(cpu) = agent.last_cpu {
            s.agent_cpu.with_label_values(&id).set(cpu);
        }
        if let Some(memory) = agent.last_memory {
            s.agent_memory.with_label_values(&id).set(memory as f64);
        }
    }
    // Transitions: only the states an agent entered, so an agent that never changed state
    // costs no series.
    s.transitions.reset();
    for agent in agents {
        if let Some(counts) = endpoint.transition_counts.of(&agent.id) {
            for (status, count) in AgentStatus::ALL.iter().zip(counts) {
                if count > 0 {
                    s.transitions
                        .with_label_values(&[&agent.id, status.name()])
                        .inc_by(count);
                }
            }
        }
    }
    *previous = agents.iter().map(|a| a.id.clone()).collect();
    // Supervised agents: few (each is a process on this host), so rebuilt at every scrape.
    s.restarts.reset();
    s.process_state.reset();
    for (id, entry) in endpoint.board.entries().iter().take(endpoint.agent_limit) {
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
    let mut body = Vec::with_capacity(128 * 1024);
    TextEncoder::new().encode(&endpoint.registry.gather(), &mut body)?;
    Ok(body)
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
    let Ok(report) = endpoint.stats.send(GetStats).await else {
        return unavailable();
    };
    let list = ListAgents {
        agent_type: None,
        prefix: None,
        status: None,
        after: None,
        limit: endpoint.agent_limit,
    };
    let Ok(page) = endpoint.manager.send(list).await else {
        return unavailable();
    };
    if page.next_after.is_some() && !endpoint.limit_warned.swap(true, Ordering::Relaxed) {
        warn!(endpoint.log, "metrics_agent_limit reached: agents past it have no per-agent series (logged once)";
            "metrics_agent_limit" => endpoint.agent_limit, "agents_registered" => report.agents_registered,
            "what_to_do" => "raise metrics_agent_limit if Prometheus can take the series");
    }

    // Mirroring 4 series per agent and encoding them is CPU work: the blocking pool does it,
    // so heartbeats on this HTTP thread are not held up by a scrape.
    let scrape = web::block(move || render(&endpoint, &report, &page.agents)).await;
    let body = match scrape {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return ApiResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not encode metrics: {e}"),
            )
        }
        Err(_) => return unavailable(),
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(body)
}
