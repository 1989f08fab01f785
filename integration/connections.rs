//! The connection layer against the real binary: clients that never read their answer are
//! dropped after `send_timeout_s`, large reads share one byte budget (429 past it), failed
//! TLS handshakes are logged, and the control socket is heartbeatd's own: in a directory no one
//! else can write, and `heartbeatd ctl` talks to no socket another user serves.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{http, non_reading_client, send_signal, unix_http, Daemon, BIN};

/// `[[agents]]` for `n` agents with long names: a page of them is the largest answer.
fn many_agents(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[agents]]\nid = \"agent-{i:05}\"\nname = \"{}\"\n", "n".repeat(200)))
        .collect()
}

/// A client that asks for the largest page 24 times in a row (pipelined) and never reads:
/// about 6 MB, more than the kernel's socket buffers take, so answers wait in heartbeatd.
fn non_reader(port: u16) -> TcpStream {
    let request = "GET /agents?limit=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    non_reading_client(port, request, 24).expect("connected")
}

fn metric(daemon: &Daemon, name: &str) -> Option<u64> {
    let text = daemon.request("GET", "/metrics", None).body;
    text.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn clients_that_never_read_are_dropped_after_send_timeout_s() {
    // Arrange: 2000 agents (a page is about 256 KiB), a send timeout of 1 s.
    let daemon = Daemon::start(&format!("send_timeout_s = 1\n{}", many_agents(2000)));

    // Act: 5 clients ask for the largest page, again and again, and never read.
    let clients: Vec<TcpStream> = (0..5).map(|_| non_reader(daemon.port)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = metric(&daemon, "heartbeatd_http_send_timeouts_total ").unwrap_or(0);
    while dropped < 5 {
        assert!(Instant::now() < deadline, "only {dropped} of 5 dropped");
        thread::sleep(Duration::from_millis(100));
        dropped = metric(&daemon, "heartbeatd_http_send_timeouts_total ").unwrap_or(0);
    }

    // Assert: each connection was closed by heartbeatd: reading ends (no time-out), short of
    // the answer it announced; others are served.
    for mut client in clients {
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let end = client.read_to_end(&mut got);
        assert!(
            end.is_ok()
                || end
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection was not closed: {end:?}"
        );
        let answers = String::from_utf8_lossy(&got).matches("HTTP/1.1 200 OK").count();
        assert!(answers < 24, "the answers were cut short: {answers} of 24 arrived");
    }
    assert_eq!(dropped, 5);
    assert_eq!(daemon.request("GET", "/agents?limit=10", None).status, 200);
}

#[test]
fn large_reads_share_one_byte_budget_and_past_it_get_429() {
    // Arrange: a budget of 1 MiB (a test hook; the default is 32 MiB), and clients that never
    // read holding their answers (send_timeout_s is long): four pages pass it.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(
        dir.path(),
        &format!("send_timeout_s = 60\n{}", many_agents(2000)),
        &[("HEARTBEATD_TEST_COSTLY_BUDGET_BYTES", "1048576")],
    );
    let holders: Vec<TcpStream> = (0..6).map(|_| non_reader(daemon.port)).collect();

    // Act: a client that reads asks for a page while they hold the budget.
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let reply = daemon.request("GET", "/agents?limit=1000", None);
        if reply.status == 429 {
            break reply;
        }
        assert!(Instant::now() < deadline, "never 429: {}", reply.status);
        thread::sleep(Duration::from_millis(50));
    };

    // Assert: 429 with Retry-After, cheap reads still served, and the budget comes back.
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.body["success"], false);
    assert_eq!(daemon.request("GET", "/agents/agent-00001", None).status, 200);
    assert_eq!(daemon.request("GET", "/heartbeat/stats", None).status, 200);
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.request("GET", "/agents?limit=1000", None).status != 200 {
        assert!(Instant::now() < deadline, "the budget never came back");
        thread::sleep(Duration::from_millis(100));
    }
    // `/metrics` is a large answer too (within the budget), so the count is read once the
    // budget is back.
    assert!(metric(&daemon, "heartbeatd_costly_reads_refused_total ").unwrap() >= 1);
}

#[test]
fn the_control_socket_is_heartbeatds_own_and_a_second_daemon_is_refused() {
    // Arrange
    let mut daemon = Daemon::start("[[agents]]\nid = \"a\"\n");
    let socket = daemon.control_socket();

    // Assert: mode 0600, and it serves the API without a token.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        unix_http(&socket, "POST", "/agents/a/pause", None, &[]).unwrap().status,
        200
    );

    // A second heartbeatd on the same data_dir refuses to start (exit 1) and says why.
    let second = Command::new(BIN)
        .arg("--config")
        .arg(daemon.dir.join("heartbeatd.toml"))
        .arg("--http-port")
        .arg("0")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another heartbeatd"), "{err}");
    assert!(
        unix_http(&socket, "GET", "/healthz", None, &[]).is_some(),
        "the first still serves"
    );

    // kill -9 leaves the socket behind; the next start replaces it.
    send_signal(daemon.pid(), "KILL");
    daemon.wait_exit(Duration::from_secs(10));
    assert!(socket.exists());
    let mut again = Daemon::start_in(&daemon.dir, "[[agents]]\nid = \"a\"\n");
    assert_eq!(again.admin("POST", "/agents/a/resume", None).status, 200);
    // A graceful stop removes it.
    assert_eq!(again.stop_with("TERM").code(), Some(0));
    assert!(!socket.exists());
}

#[test]
fn a_failed_tls_handshake_is_logged_and_counted() {
    // Arrange: heartbeatd with a certificate (started by hand: the harness speaks plain HTTP).
    let dir = tempfile::tempdir().unwrap();
    crate::security::make_certificate(dir.path(), "tls-test");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("h.toml");
    std::fs::write(
        &config,
        format!(
            "http_port = {port}\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("data"),
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("data").join("heartbeatd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while unix_http(&socket, "GET", "/healthz", None, &[]).is_none() {
        assert!(Instant::now() < deadline, "heartbeatd did not start");
        thread::sleep(Duration::from_millis(50));
    }

    // Act: plain HTTP to the TLS port (a client that speaks the wrong protocol).
    assert!(http(port, "GET", "/healthz", None).is_none_or(|r| r.status != 200));

    // Assert: a WARN names the peer and what to check; /metrics counts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("TLS handshake failed") {
        assert!(Instant::now() < deadline, "no warning logged");
        thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("peer: 127.0.0.1:") && text.contains("what_to_do"),
        "{text}"
    );
    let metrics = unix_http(&socket, "GET", "/metrics", None, &[]).unwrap().body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("heartbeatd_tls_handshake_failures_total 1"),
        "{metrics}"
    );
    send_signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A directory anyone may write (as `/tmp` is, without the sticky bit's help): another user
/// can put their own socket there.
fn open_dir(parent: &std::path::Path) -> std::path::PathBuf {
    let open = parent.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    open
}

#[test]
fn a_control_socket_in_a_directory_others_can_write_is_refused_at_start() {
    // Arrange: control_socket in a sticky, world-writable directory (as /tmp is).
    let dir = tempfile::tempdir().unwrap();
    let socket = open_dir(dir.path()).join("hb.sock");
    let config = dir.path().join("h.toml");
    std::fs::write(
        &config,
        format!(
            "http_port = 0\ndata_dir = {:?}\ncontrol_socket = {:?}\n",
            dir.path().join("data"),
            socket
        ),
    )
    .unwrap();

    // Act
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline || socket.exists() {
            send_signal(child.id(), "TERM");
            let out = child.wait_with_output().unwrap();
            panic!(
                "heartbeatd bound its socket where anyone can replace it: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();

    // Assert: exit 1, saying which directory and what to do.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("can be written by its group or others"), "{err}");
    assert!(err.contains(&open_path_text(&socket)), "{err}");
}

fn open_path_text(socket: &std::path::Path) -> String {
    socket.parent().unwrap().display().to_string()
}

#[test]
fn ctl_refuses_a_socket_another_user_serves_and_never_prints_its_bytes() {
    // Arrange: nobody serves a fake heartbeatd at the configured socket path, answering
    // terminal escapes (a retitle, a screen clear).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open_dir(dir.path()).join("hb.sock");
    let answer = "HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n\\r\\n{\"agents\":[{\"id\":\"\\u001b]0;pwned\\u0007\\u001b[2J\"}],\"next_after\":null}";
    let server = format!(
        "import socket,os\ns=socket.socket(socket.AF_UNIX)\ns.bind({:?})\nos.chmod({:?},0o777)\ns.listen(5)\nwhile True:\n c,_=s.accept()\n c.recv(65536)\n c.sendall(b'{answer}')\n c.close()\n",
        socket.display().to_string(),
        socket.display().to_string()
    );
    let mut fake = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &server,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the fake server never bound its socket");
        thread::sleep(Duration::from_millis(20));
    }
    let config = dir.path().join("h.toml");
    std::fs::write(
        &config,
        format!(
            "http_port = 0\ndata_dir = {:?}\ncontrol_socket = {:?}\n",
            dir.path().join("data"),
            socket
        ),
    )
    .unwrap();

    // Act: root's ctl, as an operator would run it.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["ctl", "status"])
        .output()
        .unwrap();
    let _ = fake.kill();
    let _ = fake.wait();

    // Assert: exit 3, naming the uid; no escape reached the terminal.
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "stdout {stdout:?} stderr {stderr:?}");
    assert!(stderr.contains("served by uid 65534"), "{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "{stdout:?} {stderr:?}"
    );
}

#[test]
fn ctl_with_a_relative_data_dir_says_which_socket_it_looks_for() {
    // Arrange: the shipped form, data_dir = "./data", and ctl run from another directory.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&config, format!("http_port = {closed}\ndata_dir = \"./data\"\n")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    // Act
    let out = Command::new(BIN)
        .current_dir(elsewhere.path())
        .arg("--config")
        .arg(&config)
        .args(["ctl", "status"])
        .output()
        .unwrap();

    // Assert: not silent about where it looked (the old ctl fell to TCP without a word).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let looked = elsewhere.path().join("./data/heartbeatd.sock");
    assert!(stderr.contains("data_dir is a relative path"), "{stderr}");
    assert!(stderr.contains(&looked.display().to_string()), "{stderr}");
}
