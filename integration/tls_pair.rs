//! A certificate is only served with its own key: a pair that does not match is refused at
//! start (exit 2, naming both files), by `check-config`, and on SIGHUP (the old pair stays,
//! an ERROR says what to do).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{send_signal, BIN};
use crate::security::{make_certificate, served_subject};

/// Two certificates, each with its own key, in `dir/first` and `dir/second`.
fn two_pairs(dir: &Path) -> (PathBuf, PathBuf) {
    let (first, second) = (dir.join("first"), dir.join("second"));
    for (path, cn) in [(&first, "first"), (&second, "second")] {
        fs::create_dir(path).unwrap();
        make_certificate(path, cn);
    }
    (first, second)
}

fn config(dir: &Path, port: u16, cert: &Path, key: &Path) -> PathBuf {
    let path = dir.join("h.toml");
    fs::write(
        &path,
        format!(
            "http_port = {port}\ndata_dir = {:?}\nlog_format = \"json\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n",
            dir.join("data")
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_certificate_with_another_certificates_key_exits_2_naming_both_files() {
    // Arrange: the first pair's certificate with the second pair's key.
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_pairs(dir.path());
    let (cert, key) = (first.join("cert.pem"), second.join("key.pem"));
    let port = free_port();
    let mismatched = config(dir.path(), port, &cert, &key);

    // Act
    let start = start_expecting_a_refusal(&mismatched, port);
    let check = Command::new(BIN).arg("check-config").arg(&mismatched).output().unwrap();

    // Assert: both refuse with exit 2 and name both files; nothing was started.
    for (what, out) in [("start", &start), ("check-config", &check)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(&cert.display().to_string()), "{what}: {stderr}");
        assert!(stderr.contains(&key.display().to_string()), "{what}: {stderr}");
        assert!(stderr.contains("do not belong together"), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    assert!(!String::from_utf8_lossy(&start.stderr).contains("manager started"));
    // The same files as the pairs they are: check-config accepts them.
    let matched = config(dir.path(), 0, &second.join("cert.pem"), &key);
    let out = Command::new(BIN).arg("check-config").arg(&matched).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the daemon on `config` to its exit. Should it start serving instead (a pair it ought
/// to refuse), it is stopped and the test fails rather than waiting on it forever.
fn start_expecting_a_refusal(config: &Path, port: u16) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            send_signal(child.id(), "TERM");
            let out = child.wait_with_output().unwrap();
            panic!("heartbeatd started serving: {}", String::from_utf8_lossy(&out.stderr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Stops the daemon if a test fails before it does.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn https_works(port: u16) -> bool {
    Command::new("curl")
        .args([
            "-s",
            "-k",
            "--max-time",
            "5",
            &format!("https://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// The JSON log lines with `msg` containing `text`.
fn log_lines_with(log: &Path, text: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["msg"].as_str().is_some_and(|m| m.contains(text)))
        .collect()
}

#[test]
fn a_sighup_to_a_mismatched_pair_keeps_serving_the_old_one_and_logs_an_error() {
    // Arrange: heartbeatd serving the first pair (started by hand: the harness speaks HTTP).
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_pairs(dir.path());
    let live = dir.path().join("live");
    fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    fs::copy(first.join("cert.pem"), &cert).unwrap();
    fs::copy(first.join("key.pem"), &key).unwrap();
    let port = free_port();
    let config = config(dir.path(), port, &cert, &key);
    let log = dir.path().join("log");
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .stderr(fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !https_works(port) {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        thread::sleep(Duration::from_millis(50));
    }

    // Act: a renewal that replaced the certificate but not the key, then SIGHUP.
    fs::copy(second.join("cert.pem"), &cert).unwrap();
    send_signal(child.0.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_lines_with(&log, "SIGHUP: configuration reloaded").is_empty() {
        assert!(Instant::now() < deadline, "the reload never finished");
        thread::sleep(Duration::from_millis(50));
    }

    // Assert: handshakes still succeed, with the old certificate; an ERROR names both files.
    assert!(https_works(port), "the old pair is still served");
    assert!(served_subject(port).contains("first"), "{}", served_subject(port));
    let errors = log_lines_with(&log, "do not belong together");
    assert_eq!(errors.len(), 1, "{}", fs::read_to_string(&log).unwrap());
    let error = &errors[0];
    assert_eq!(error["level"], "ERRO", "{error}");
    let text = error.to_string();
    assert!(text.contains(&cert.display().to_string()), "{text}");
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(
        error["what_to_do"].as_str().is_some_and(|w| w.contains("SIGHUP")),
        "{error}"
    );

    // The matching key follows: the next SIGHUP takes the new pair.
    fs::copy(second.join("key.pem"), &key).unwrap();
    send_signal(child.0.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served_subject(port).contains("second") {
        assert!(Instant::now() < deadline, "still serving {}", served_subject(port));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(https_works(port));
    send_signal(child.0.id(), "TERM");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn tls_files_that_are_no_pem_file_exit_2_at_start_as_in_check_config_and_never_block() {
    // Arrange: a good pair, and in place of the key: a device, a FIFO nobody writes to, a
    // file over the size cap, a file that holds no key.
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = two_pairs(dir.path());
    let cert = first.join("cert.pem");
    let fifo = dir.path().join("key.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = dir.path().join("huge.pem");
    fs::write(&huge, vec![b'A'; 2 << 20]).unwrap();
    let no_key = dir.path().join("nokey.pem");
    fs::write(&no_key, "this file holds no PEM item\n").unwrap();
    let cases: [(&Path, &str); 4] = [
        (Path::new("/dev/null"), "not a regular file"),
        (&fifo, "not a regular file"),
        (&huge, "larger than"),
        (&no_key, "tls_key"),
    ];

    for (key, why) in cases {
        let port = free_port();
        let config = config(dir.path(), port, &cert, key);

        // Act
        let start = start_unless_blocked_on(&config, port, &fifo);
        let check = Command::new(BIN).arg("check-config").arg(&config).output().unwrap();

        // Assert: the same exit code (2) both ways, naming the file and why.
        for (what, out) in [("start", &start), ("check-config", &check)] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{} {what}: {stderr}", key.display());
            assert!(stderr.contains(&key.display().to_string()), "{what}: {stderr}");
            assert!(stderr.contains(why), "{} {what}: {stderr}", key.display());
        }
    }
}

/// [`start_expecting_a_refusal`], except that a daemon still running after a minute is
/// taken to be blocked opening the FIFO: the test writes to it (to free the daemon) and fails.
fn start_unless_blocked_on(config: &Path, port: u16, fifo: &Path) -> std::process::Output {
    let config = config.to_owned();
    let run = thread::spawn(move || start_expecting_a_refusal(&config, port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.is_finished() {
        if Instant::now() > deadline {
            let _ = fs::write(fifo, "not a key\n");
            let out = run.join().unwrap();
            panic!(
                "heartbeatd blocked reading the FIFO: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    run.join().unwrap()
}

#[test]
fn a_sighup_to_a_fifo_key_keeps_the_old_pair_and_leaves_signals_working() {
    // Arrange: heartbeatd serving a good pair.
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = two_pairs(dir.path());
    let live = dir.path().join("live");
    fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    fs::copy(first.join("cert.pem"), &cert).unwrap();
    fs::copy(first.join("key.pem"), &key).unwrap();
    let port = free_port();
    let config = config(dir.path(), port, &cert, &key);
    let log = dir.path().join("log");
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .stderr(fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !https_works(port) {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        thread::sleep(Duration::from_millis(50));
    }

    // Act: the key replaced by a FIFO nobody writes to, then SIGHUP.
    fs::remove_file(&key).unwrap();
    assert!(Command::new("mkfifo").arg(&key).status().unwrap().success());
    send_signal(child.0.id(), "HUP");

    // Assert: the reload finishes with an ERROR naming the key, the old pair is served, and
    // SIGTERM still stops heartbeatd gracefully.
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_lines_with(&log, "SIGHUP: configuration reloaded").is_empty() {
        if Instant::now() > deadline {
            let _ = fs::write(&key, "free the reload\n");
            panic!("the reload blocked on the FIFO: {}", fs::read_to_string(&log).unwrap());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let errors = log_lines_with(&log, "could not read the TLS certificate or key");
    assert_eq!(errors.len(), 1, "{}", fs::read_to_string(&log).unwrap());
    assert!(errors[0].to_string().contains("not a regular file"), "{}", errors[0]);
    assert!(https_works(port), "the old pair is still served");
    send_signal(child.0.id(), "TERM");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}
