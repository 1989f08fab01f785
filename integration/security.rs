//! Past loopback: `ingest_token`, HTTPS with a certificate made here (reloaded on SIGHUP),
//! and the start-up warning when neither protects a listener beyond loopback.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{heartbeat, http_with_headers, send_signal, Daemon, BIN};

#[test]
fn ingest_token_guards_post_heartbeat() {
    // Arrange
    let mut daemon = Daemon::start("ingest_token = \"agents-only\"\n[[agents]]\nid = \"a\"\n");
    let body = heartbeat("a", 1).to_string();
    let post = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        http_with_headers(daemon.port, "POST", "/heartbeat", Some(&body), &headers).unwrap()
    };

    // Act / Assert
    let missing = post(None);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.body["success"], false,
        "the common body shape: {:?}",
        missing.body
    );
    assert!(missing.body["message"].as_str().unwrap().contains("ingest_token"));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_eq!(post(Some("Bearer wrong")).status, 401);
    assert_eq!(post(Some("Bearer agents-only")).status, 200);
    assert_eq!(
        post(Some("bearer agents-only")).status,
        200,
        "scheme is case-insensitive"
    );
    daemon.wait_processed(2);
    let stats = daemon.stats();
    assert_eq!(stats["total_rejected"], 2, "{stats}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert!(!daemon.log().contains("agents-only"), "the token is never logged");
}

/// Makes a self-signed certificate for 127.0.0.1 with `cn` as its subject.
pub(crate) fn make_certificate(dir: &Path, cn: &str) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", &format!("/CN={cn}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl (the Makefile installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The subject of the certificate served on `port`.
pub(crate) fn served_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn tls_serves_https_and_a_sighup_picks_up_a_renewed_certificate() {
    // Arrange: a certificate, and heartbeatd started by hand (the harness speaks plain HTTP).
    let dir = tempfile::tempdir().unwrap();
    make_certificate(dir.path(), "first");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("h.toml");
    fs::write(
        &config,
        format!(
            "http_port = {port}\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n[[agents]]\nid = \"a\"\n",
            dir.path().join("data"),
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&["-k", &format!("{url}/healthz")]).0 {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        thread::sleep(Duration::from_millis(50));
    }

    // Act / Assert: HTTPS works, plain HTTP does not, the certificate is ours.
    let body = heartbeat("a", 1).to_string();
    let (ok, answer) = curl(&["-k", "-X", "POST", "-d", &body, &format!("{url}/heartbeat")]);
    assert!(ok && answer.contains("heartbeat received"), "{answer}");
    assert!(!curl(&[&format!("http://127.0.0.1:{port}/healthz")]).1.contains("ok"));
    assert!(served_subject(port).contains("first"), "{}", served_subject(port));
    // heartbeatd ctl over HTTPS: trusting the certificate with --ca works; without it, the
    // system's certificates do not vouch for a self-signed one: exit 3, saying why.
    let ctl = |extra: &[&str]| {
        Command::new(BIN)
            .args(["ctl", "--url", &url])
            .args(extra)
            .arg("status")
            .env_remove("HEARTBEATD_CA")
            .output()
            .unwrap()
    };
    let ca = dir.path().join("cert.pem").display().to_string();
    let trusted = ctl(&["--ca", &ca]);
    let out = String::from_utf8_lossy(&trusted.stdout).into_owned();
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(out.lines().any(|l| l.starts_with("a ")), "{out}");
    let untrusted = ctl(&[]);
    let err = String::from_utf8_lossy(&untrusted.stderr).into_owned();
    assert_eq!(untrusted.status.code(), Some(3), "{err}");
    assert!(err.contains("certificate"), "{err}");

    // A renewed certificate on disk, then SIGHUP: new connections get it.
    make_certificate(dir.path(), "renewed");
    send_signal(child.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_subject(port).contains("renewed") {
        assert!(Instant::now() < deadline, "still serving {}", served_subject(port));
        thread::sleep(Duration::from_millis(100));
    }
    // A broken certificate on disk, then SIGHUP: the renewed one stays in use, an ERROR says so.
    fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    send_signal(child.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(dir.path().join("log"))
        .unwrap()
        .contains("old ones stay in use")
    {
        assert!(Instant::now() < deadline, "no error logged for the broken certificate");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served_subject(port).contains("renewed"), "{}", served_subject(port));
    assert!(curl(&["-k", &format!("{url}/healthz")]).0, "still serving HTTPS");
    send_signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_listener_beyond_loopback_without_token_or_tls_is_warned_about() {
    let mut daemon = Daemon::start("http_bind = \"0.0.0.0\"\n");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let log = daemon.log();
    assert!(log.contains("neither ingest_token nor TLS"), "{log}");
    let mut protected = Daemon::start("http_bind = \"0.0.0.0\"\ningest_token = \"t\"\n");
    assert_eq!(protected.stop_with("TERM").code(), Some(0));
    assert!(!protected.log().contains("neither ingest_token nor TLS"));
}

#[test]
fn an_unreadable_certificate_exits_2_naming_the_file_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    fs::write(
        &config,
        format!(
            "http_port = 0\ndata_dir = {:?}\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = Command::new(BIN).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A configuration error, as `check-config` says (issue 15: the start said 1).
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls_cert /nonexistent/cert.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("manager started"), "nothing was started: {stderr}");
}
