//! The flags of `heartbeatd-load`.

use std::time::Duration;

use clap::Parser;

/// heartbeatd-load: simulate a fleet of agents sending heartbeats, and measure the receiver.
#[derive(Debug, Clone, Parser)]
#[command(name = "heartbeatd-load", version, about)]
pub struct LoadArgs {
    /// The heartbeat endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/heartbeat")]
    pub url: String,
    /// Simulated agents; their ids are load-000001, load-000002, …
    #[arg(long, default_value_t = 10)]
    pub agents: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measurement starts (sent, not reported).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Total heartbeats per second across all connections; omitted means as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Threads that run the connections (the load tool's own CPU budget).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the `[[agents]]` entries for a heartbeatd config that registers the simulated
    /// agents, and exit.
    #[arg(long)]
    pub print_agents_config: bool,
    /// Register the simulated agents through the admin API (`POST /agents`) before the run;
    /// agents already registered are fine.
    #[arg(long)]
    pub register: bool,
    /// The admin token for `--register`.
    #[arg(long, env = "HEARTBEATD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl LoadArgs {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    /// Refuses values that make no run.
    pub fn validate(&self) -> Result<(), String> {
        if self.agents == 0 {
            return Err("--agents must be at least 1".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if !self.duration.is_finite() || self.duration <= 0.0 {
            return Err("--duration must be more than 0 seconds".into());
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            return Err("--rate must be more than 0 (omit it for as fast as possible)".into());
        }
        Ok(())
    }
}
