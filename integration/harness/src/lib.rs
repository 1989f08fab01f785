//! A `heartbeatd` process under test or under measure, and the HTTP helpers to talk to it:
//! shared by the black-box tests (`integration/`) and the bench (`bench/`).
//!
//! The binary is `$HEARTBEATD_BIN`, or `heartbeatd` in the cargo profile directory the
//! calling test or bench runs from (`target/<profile>/deps/..`): cargo builds it there for
//! the integration tests, and `make bench` builds it in release.
//!
//! Ports: a daemon is started on a port found free a moment before; if another process takes
//! it in between, heartbeatd exits with "could not listen" and the harness tries another port
//! (five times), so parallel tests never fail on that race.

pub mod browser;
pub mod peers;
pub mod successor;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The heartbeatd binary to run (see the module documentation).
pub fn heartbeatd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HEARTBEATD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running test's path");
    // target/<profile>/deps/<test> → target/<profile>/heartbeatd
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join("heartbeatd");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build [--release] --bin heartbeatd) or set HEARTBEATD_BIN",
        bin.display()
    );
    bin
}

/// The test agent (`src/bin/heartbeatd-test-agent.rs`), next to heartbeatd's binary (built
/// by `make test` with `cargo build --workspace --bins`), or `$HEARTBEATD_TEST_AGENT`.
pub fn test_agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HEARTBEATD_TEST_AGENT") {
        return PathBuf::from(path);
    }
    let bin = heartbeatd_bin().with_file_name("heartbeatd-test-agent");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --bins) or set HEARTBEATD_TEST_AGENT",
        bin.display()
    );
    bin
}

/// The pids of live processes whose environment has `TEST_MARKER=<marker>`: how tests find
/// every process of a supervised tree, whatever its pid or group.
pub fn processes_with_marker(marker: &str) -> Vec<u32> {
    processes_with_env("TEST_MARKER", marker)
        .into_iter()
        .filter(|(_, value)| value == marker)
        .map(|(pid, _)| pid)
        .collect()
}

/// The live processes whose environment has `name=<value starting with prefix>`, with that
/// value (found in `/proc/<pid>/environ`; a zombie has an empty environment: it is gone but
/// for its exit status).
pub fn processes_with_env(name: &str, prefix: &str) -> Vec<(u32, String)> {
    let wanted = format!("{name}={prefix}");
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some(var) = environ.split(|b| *b == 0).find(|v| v.starts_with(wanted.as_bytes())) {
            found.push((pid, String::from_utf8_lossy(&var[name.len() + 1..]).into_owned()));
        }
    }
    found
}

/// How long a daemon may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The two agents most tests use.
pub const AGENTS: &str = r#"
[[agents]]
id = "agent-1"
name = "Agent one"
type = "filebeat"

[[agents]]
id = "agent-2"
type = "custom"
"#;

/// A running daemon. Killed with SIGKILL if a test forgets to stop it.
pub struct Daemon {
    child: Option<Child>,
    /// The process that took over in an upgrade (not a child of the test: see [`successor`]).
    successor: Option<u32>,
    pub port: u16,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// The answer to one HTTP request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Daemon {
    /// Starts a daemon whose config is `extra` plus port and data_dir, in a fresh temp dir.
    pub fn start(extra: &str) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut daemon = Self::start_in(&dir, extra);
        daemon._temp = Some(temp);
        daemon
    }

    /// Starts a daemon on `dir` (config, data and log live there), e.g. again after a stop.
    pub fn start_in(dir: &Path, extra: &str) -> Self {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like [`Daemon::start_in`], with extra environment variables.
    pub fn start_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start_configured(dir, |_| extra.to_owned(), env)
    }

    /// Like [`Daemon::start`], with a config made once the port is known (e.g. agents that
    /// must post to this daemon).
    pub fn start_with(extra: impl Fn(u16) -> String) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut daemon = Self::start_configured(&dir, extra, &[]);
        daemon._temp = Some(temp);
        daemon
    }

    fn start_configured(dir: &Path, extra: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Self {
        Self::start_binary(&heartbeatd_bin(), dir, extra, env)
    }

    /// Like [`Daemon::start_in`], running `bin` (e.g. a copy an upgrade test replaces).
    pub fn start_binary(bin: &Path, dir: &Path, extra: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.join("heartbeatd.toml");
            fs::write(
                &config,
                format!(
                    "http_port = {port}\ndata_dir = {:?}\n{}",
                    dir.join("data").display().to_string(),
                    extra(port)
                ),
            )
            .unwrap();
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("heartbeatd.log"))
                .unwrap();
            let mut child = Command::new(bin)
                .envs(env.iter().copied())
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start heartbeatd");
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = fs::read_to_string(dir.join("heartbeatd.log")).unwrap_or_default();
                    if status.code() == Some(1) && log.contains("could not listen") {
                        break; // someone took the port in between: try another
                    }
                    panic!("heartbeatd exited during start-up with {status}:\n{log}");
                }
                if http(port, "GET", "/heartbeat/stats", None).is_some_and(|r| r.status == 200) {
                    return Self {
                        child: Some(child),
                        successor: None,
                        port,
                        dir: dir.to_owned(),
                        _temp: None,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "heartbeatd did not answer within {START_TIMEOUT:?}"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no free port found for heartbeatd in 5 attempts");
    }

    pub fn pid(&self) -> u32 {
        self.successor
            .unwrap_or_else(|| self.child.as_ref().expect("running").id())
    }

    /// The heartbeat endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/heartbeat", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("heartbeatd.log")).unwrap_or_default()
    }

    /// Waits (at most 30 s) until the log holds `text`: lines are written by a logging
    /// thread, so one may land a moment after the answer that followed it.
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "the log never said {text:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        http(self.port, method, path, body).unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// The control socket (`<data_dir>/heartbeatd.sock` unless the config moves it).
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir().join("heartbeatd.sock")
    }

    /// An admin call, as `heartbeatd ctl` makes it: over the control socket, no token.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        unix_http(&self.control_socket(), method, path, body, &[])
            .unwrap_or_else(|| panic!("{method} {path} over the control socket: no answer"))
    }

    pub fn post_heartbeat(&self, body: &Value) -> Reply {
        self.request("POST", "/heartbeat", Some(&body.to_string()))
    }

    pub fn stats(&self) -> Value {
        let reply = self.request("GET", "/heartbeat/stats", None);
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// Waits until `total_processed + total_errors` reaches `n`.
    pub fn wait_processed(&self, n: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats();
            let done = stats["total_processed"].as_u64().unwrap() + stats["total_errors"].as_u64().unwrap();
            if done >= n {
                return stats;
            }
            assert!(Instant::now() < deadline, "only {done} of {n} processed: {stats}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `total_synced` reaches `n`: that many heartbeats are in the synced journal,
    /// so a `kill -9` from now on loses none of them.
    pub fn wait_synced(&self, n: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.stats();
            let synced = stats["total_synced"].as_u64().expect("total_synced in the stats");
            if synced >= n {
                return stats;
            }
            assert!(Instant::now() < deadline, "only {synced} of {n} synced: {stats}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. "TERM") and waits for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        send_signal(self.pid(), signal);
        self.wait_exit(Duration::from_secs(60))
    }

    /// SIGTERM, then waits: how long the stop took, its exit status, and the log.
    pub fn stop_timed(&mut self) -> (Duration, ExitStatus, String) {
        let started = Instant::now();
        let status = self.stop_with("TERM");
        (started.elapsed(), status, self.log())
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("heartbeatd did not exit within {timeout:?}:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.successor.take() {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// One HTTP request; `None` when the connection fails.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<Reply> {
    http_with_headers(port, method, path, body, &[])
}

/// One HTTP request with extra headers; `None` when the connection fails.
pub fn http_with_headers(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<Reply> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let mut request = agent.request(method, &format!("http://127.0.0.1:{port}{path}"));
    // Every body the tests send is JSON; an admin call must say so (415 otherwise).
    let typed = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !typed {
        request = request.set("Content-Type", "application/json");
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(_)) => return None,
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = response.header(&n).unwrap_or_default().to_owned();
            (n, v)
        })
        .collect();
    let text = response.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(Reply { status, headers, body })
}

/// One HTTP/1.1 request over a Unix socket (ureq speaks only TCP); `None` when the
/// connection fails. A body is sent as JSON.
pub fn unix_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<Reply> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut content = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        content = dechunk(&content);
    }
    let text = String::from_utf8_lossy(&content).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(Reply { status, headers, body })
}

/// The body of a chunked answer.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < end + 2 + size {
            break;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[(end + 4 + size).min(raw.len())..];
    }
    body
}

/// A client that sends `request` `times` times in a row (pipelined) on one connection and
/// never reads, with a receive buffer as small as the kernel allows (set before it connects,
/// so the window the server sees is small from the start): what waits for it stays in the
/// server once the kernel's buffers are full. Shared by the connection tests and the bench.
pub fn non_reading_client(port: u16, request: &str, times: usize) -> Option<std::net::TcpStream> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh socket, configured and connected here, then owned by the TcpStream.
    let mut stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return None;
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if connected != 0 {
            return None;
        }
        stream
    };
    stream.write_all(request.repeat(times).as_bytes()).ok()?;
    Some(stream)
}

/// Reads one agent's state file.
pub fn agent_file(data_dir: &Path, id: &str) -> Value {
    let path = data_dir.join("agents").join(format!("{id}.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// One agent's history records on disk (`history/<id>.log`), oldest first, the way heartbeatd
/// reads them: damaged lines skipped, a record whose number does not rise dropped as a
/// duplicate. Panics on a damaged line: tests expect none.
pub fn history_on_disk(data_dir: &Path, id: &str) -> Vec<Value> {
    let path = data_dir.join("history").join(format!("{id}.log"));
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let mut records: Vec<Value> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
        if records
            .last()
            .is_none_or(|prev| record["n"].as_u64() > prev["n"].as_u64())
        {
            records.push(record);
        }
    }
    records
}

/// Every record in the journal (`journal/*.log`), in segment order.
pub fn journal_records(data_dir: &Path) -> Vec<Value> {
    let mut segments: Vec<PathBuf> = match fs::read_dir(data_dir.join("journal")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    segments.sort();
    segments
        .iter()
        .flat_map(|path| {
            let text = fs::read_to_string(path).unwrap();
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// A valid heartbeat body for `agent_id`.
pub fn heartbeat(agent_id: &str, memory: u64) -> Value {
    serde_json::json!({"agent_id": agent_id, "pid": 4242, "status": "running", "cpu": 5.5, "memory": memory})
}
