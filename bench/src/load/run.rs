//! Drives the connections: warm-up, then measurement; merges what each connection saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::LoadArgs;
use super::client::{Connection, Target};
use super::histogram::Latencies;
use super::pacing::{self, Schedule};
use super::report::{Report, StatusCounts};

/// A request with no answer after this long counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connect, so a refusing target is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What one connection saw: answers in the measured window (with latencies) and in the
/// warm-up (counted only, so totals can be compared with the server's own counters).
#[derive(Default)]
struct ConnectionTally {
    counts: StatusCounts,
    warmup: StatusCounts,
    latencies: Latencies,
}

impl ConnectionTally {
    fn window(&mut self, measured: bool) -> &mut StatusCounts {
        if measured {
            &mut self.counts
        } else {
            &mut self.warmup
        }
    }
}

/// The fixed facts of a run, shared by its connections.
struct Plan {
    addr: SocketAddr,
    /// One pre-serialised request per agent.
    requests: Vec<Vec<u8>>,
    connections: usize,
    rate: Option<f64>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// The body a simulated agent sends.
fn heartbeat_body(n: usize) -> Vec<u8> {
    format!(
        "{{\"agent_id\":\"{}\",\"pid\":{},\"status\":\"running\",\"cpu\":{}.5,\"memory\":{}}}",
        super::agent_id(n),
        10_000 + n,
        n % 100,
        64 * 1024 * 1024 + n
    )
    .into_bytes()
}

/// Agents per `POST /agents` call of `--register`.
const REGISTER_BATCH: usize = 10_000;

/// Registers the simulated agents through the admin API, `REGISTER_BATCH` at a time. A batch
/// that meets an agent registered before (409) is registered one by one, skipping those.
async fn register(addr: SocketAddr, target: &Target, agents: usize, token: Option<&str>) -> Result<(), String> {
    let post = |body: String| async move {
        let (status, answer) = super::client::request(addr, target, "POST", "/agents", token, body.as_bytes())
            .await
            .map_err(|e| format!("cannot register agents: {e}"))?;
        Ok::<_, String>((status, String::from_utf8_lossy(&answer).into_owned()))
    };
    let entry = |n: usize| format!("{{\"id\":\"{}\",\"type\":\"load\"}}", super::agent_id(n));
    let ids: Vec<usize> = (1..=agents).collect();
    for chunk in ids.chunks(REGISTER_BATCH) {
        let body = format!("[{}]", chunk.iter().map(|&n| entry(n)).collect::<Vec<_>>().join(","));
        match post(body).await? {
            (201, _) => {}
            (409, _) => {
                for &n in chunk {
                    match post(entry(n)).await? {
                        (201 | 409, _) => {}
                        (status, answer) => {
                            return Err(format!("registering {}: {status} {answer}", super::agent_id(n)))
                        }
                    }
                }
            }
            (status, answer) => return Err(format!("registering agents: {status} {answer}")),
        }
    }
    Ok(())
}

/// Runs the load and returns the report.
pub fn run(args: &LoadArgs) -> Result<Report, String> {
    args.validate()?;
    let target = Target::parse(&args.url)?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("could not start the runtime: {e}"))?;
    runtime.block_on(drive(args, target))
}

async fn drive(args: &LoadArgs, target: Target) -> Result<Report, String> {
    let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.host))?;
    // Fail fast with a clear message when nothing listens there.
    Connection::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if args.register {
        register(addr, &target, args.agents, args.admin_token.as_deref()).await?;
    }

    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + args.warmup();
    let plan = Arc::new(Plan {
        addr,
        requests: (1..=args.agents)
            .map(|n| target.post_bytes(&heartbeat_body(n)))
            .collect(),
        connections: args.connections,
        rate: args.rate,
        start,
        measure_from,
        end: measure_from + args.duration(),
    });

    let tasks: Vec<_> = (0..args.connections)
        .map(|index| tokio::spawn(connection(Arc::clone(&plan), index)))
        .collect();
    let mut counts = StatusCounts::default();
    let mut warmup = StatusCounts::default();
    let mut latencies = Latencies::default();
    for task in tasks {
        let tally = task.await.map_err(|e| format!("a connection task failed: {e}"))?;
        counts.merge(&tally.counts);
        warmup.merge(&tally.warmup);
        latencies.merge(&tally.latencies);
    }
    let fell_behind = args
        .rate
        .is_some_and(|rate| pacing::fell_behind(rate, counts.sent(), args.duration()));
    Ok(Report::new(args, &counts, &warmup, &latencies, fell_behind))
}

async fn connection(plan: Arc<Plan>, index: usize) -> ConnectionTally {
    let mut tally = ConnectionTally::default();
    let mut schedule = plan
        .rate
        .map(|rate| Schedule::new(plan.start, rate, plan.connections, index));
    let mut conn: Option<Connection> = None;
    // Connection i sends for agents i, i + C, i + 2C, … so every agent gets heartbeats.
    let mut agent = index % plan.requests.len();
    tokio::time::sleep_until(plan.start.into()).await;
    loop {
        let scheduled = match schedule.as_mut() {
            Some(s) => {
                let at = s.next_send();
                if at >= plan.end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        if Instant::now() >= plan.end {
            break;
        }
        let measured = scheduled >= plan.measure_from;
        if conn.is_none() {
            match Connection::connect(plan.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tally.window(measured).transport_errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let request = &plan.requests[agent];
        agent = (agent + plan.connections) % plan.requests.len();
        let c = conn.as_mut().expect("connected above");
        match tokio::time::timeout(REQUEST_TIMEOUT, c.round_trip(request)).await {
            Ok(Ok(answer)) => {
                tally.window(measured).add(answer.status);
                if measured {
                    tally.latencies.record(scheduled.elapsed());
                }
                if answer.close {
                    conn = None;
                }
            }
            Ok(Err(_)) | Err(_) => {
                conn = None;
                tally.window(measured).transport_errors += 1;
            }
        }
    }
    tally
}
