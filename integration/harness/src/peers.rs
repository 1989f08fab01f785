//! The real servers tests run beside heartbeatd: Prometheus and Alertmanager (Debian's
//! `prometheus` and `prometheus-alertmanager`, installed by `make test`), each on a free
//! loopback port with a temp directory for its config, data and log, killed when dropped.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::http;

/// A port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A peer server process.
pub struct Peer {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    log_name: &'static str,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Prometheus with `config` as `prometheus.yml`, and `files` (name, text) beside it (rule
    /// files named in the config).
    pub fn prometheus(config: &str, files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let config_file = dir.path().join("prometheus.yml");
        fs::write(&config_file, config).unwrap();
        let port = free_port();
        let args = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        Self::spawn("prometheus", &args, dir, port, "prometheus.log")
    }

    /// Alertmanager with `config` as `alertmanager.yml`, without clustering.
    pub fn alertmanager(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("alertmanager.yml");
        fs::write(&config_file, config).unwrap();
        let port = free_port();
        let args = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_owned(),
        ];
        Self::spawn("prometheus-alertmanager", &args, dir, port, "alertmanager.log")
    }

    fn spawn(program: &str, args: &[String], dir: tempfile::TempDir, port: u16, log_name: &'static str) -> Self {
        let log = fs::File::create(dir.path().join(log_name)).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (make test installs Debian's package): {e}"));
        Peer {
            child,
            dir,
            port,
            log_name,
        }
    }

    /// Its directory (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(self.log_name)).unwrap_or_default()
    }

    /// A Prometheus instant query: its `data.result` (empty when not answered yet).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        http(self.port, "GET", &format!("/api/v1/query?query={encoded}"), None)
            .and_then(|r| r.body["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }
}
