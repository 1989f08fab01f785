//! `heartbeatd ctl`: a supervisorctl-style client of the admin API.
//!
//! ```text
//! heartbeatd ctl [--url URL] [--token T] [--ca FILE] status | start ID | stop ID | restart ID | tail ID [-n N] [-f]
//! ```
//!
//! Exit codes: 0 done; 1 refused or not found (the daemon's message is printed); 2 usage;
//! 3 the daemon cannot be reached (or its certificate is not trusted). It speaks HTTP/1.1,
//! over TLS (rustls, as the daemon) for an `https://` URL, trusting `--ca` or the system's
//! certificates.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

/// The shipped configuration's address (configs/heartbeatd.toml).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
/// Per request: connect, send, and read the answer (a stop may take stop_timeout_s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3700);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read.
const MAX_ANSWER: u64 = 64 << 20;
/// Trusted for an `https://` URL without `--ca` (Debian's `ca-certificates`).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// heartbeatd's address.
    #[arg(long, default_value = DEFAULT_URL, env = "HEARTBEATD_URL")]
    pub url: String,
    /// The admin token (default: $HEARTBEATD_ADMIN_TOKEN).
    #[arg(long, env = "HEARTBEATD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificates to trust for an https:// URL, e.g. heartbeatd's own self-signed
    /// tls_cert (default: the system's, /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "HEARTBEATD_CA")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// One row per agent: id, process state, pid, uptime, liveness, last heartbeat, restarts.
    Status,
    /// Start a supervised agent.
    Start { id: String },
    /// Stop a supervised agent (waits until its processes are gone).
    Stop { id: String },
    /// Restart a supervised agent.
    Restart { id: String },
    /// Print the end of a supervised agent's output.
    Tail {
        id: String,
        /// Lines to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new lines (once a second) until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

/// Why a call failed.
enum CtlError {
    Usage(String),
    Unreachable(String),
    Refused(String),
}

/// Runs the client; returns the exit code.
pub fn run(args: CtlArgs) -> ExitCode {
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CtlError::Usage(message)) => {
            eprintln!("heartbeatd ctl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(CtlError::Unreachable(message)) => {
            eprintln!("heartbeatd ctl: cannot reach heartbeatd at {}: {message}", args.url);
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(CtlError::Refused(message)) => {
            eprintln!("heartbeatd ctl: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn execute(args: &CtlArgs) -> Result<(), CtlError> {
    let target = Target::parse(&args.url, args.token.clone(), args.ca.as_deref())?;
    match &args.command {
        CtlCommand::Status => status(&target),
        CtlCommand::Start { id } => control(&target, id, "start"),
        CtlCommand::Stop { id } => control(&target, id, "stop"),
        CtlCommand::Restart { id } => control(&target, id, "restart"),
        CtlCommand::Tail { id, lines, follow } => tail(&target, id, *lines, *follow),
    }
}

struct Target {
    host_port: String,
    token: Option<String>,
    /// For an `https://` URL: the TLS client and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, rustls_pki_types::ServerName<'static>)>,
}

impl Target {
    fn parse(url: &str, token: Option<String>, ca: Option<&Path>) -> Result<Self, CtlError> {
        let usage = || {
            CtlError::Usage(format!(
                "--url must be http://HOST:PORT or https://HOST:PORT, got {url:?}"
            ))
        };
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(usage()),
        };
        let host_port = rest.trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') {
            return Err(usage());
        }
        let has_port = host_port.contains(':') && !host_port.ends_with(']');
        let host_port = if has_port {
            host_port.to_owned()
        } else {
            format!("{host_port}:{}", if https { 443 } else { 80 })
        };
        let tls = if https {
            let host = host_port[..host_port.rfind(':').unwrap_or(host_port.len())]
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|_| usage())?;
            Some((tls_client(ca.unwrap_or(Path::new(SYSTEM_CAS)))?, name))
        } else {
            None
        };
        Ok(Self {
            host_port,
            token: token.filter(|t| !t.is_empty()),
            tls,
        })
    }

    /// One request; answers the status and the JSON body.
    fn call(&self, method: &str, path: &str) -> Result<(u16, Value), CtlError> {
        let unreachable = |e: io::Error| CtlError::Unreachable(e.to_string());
        let addr = self
            .host_port
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| CtlError::Unreachable("the name has no address".into()))?;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(unreachable)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(unreachable)?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.host_port
        );
        match &self.tls {
            None => exchange(stream, request.as_bytes()),
            Some((config, name)) => {
                let connection = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| CtlError::Unreachable(e.to_string()))?;
                exchange(rustls::StreamOwned::new(connection, stream), request.as_bytes())
            }
        }
    }

    /// A call that must succeed (2xx); otherwise the daemon's message, as a refusal.
    fn call_ok(&self, method: &str, path: &str) -> Result<Value, CtlError> {
        let (status, body) = self.call(method, path)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = body["message"].as_str().unwrap_or("no message");
        Err(CtlError::Refused(format!("{status}: {message}")))
    }
}

/// A TLS client trusting the PEM certificates in `ca`: as authorities, or, for a certificate
/// served exactly as it is in `ca` (heartbeatd's own self-signed `tls_cert`, which
/// `openssl req -x509` marks as an authority, which the usual check refuses as a server's),
/// as pinned.
fn tls_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>, CtlError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let unusable = |e: String| CtlError::Usage(format!("--ca {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| unusable(e.to_string()))? {
        let cert = cert.map_err(|e| unusable(e.to_string()))?;
        // A certificate webpki cannot take as an authority may still be pinned.
        let _ = roots.add(cert.clone());
        pinned.push(cert);
    }
    if pinned.is_empty() {
        return Err(unusable("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let authorities =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| unusable(e.to_string()))?;
    let verifier = Arc::new(TrustedOrPinned {
        authorities,
        pinned,
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts a server certificate the authorities vouch for (the usual check, name included),
/// or one that is byte for byte a certificate of `--ca`; the handshake signatures are
/// checked either way.
#[derive(Debug)]
struct TrustedOrPinned {
    authorities: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for TrustedOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .authorities
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(verified) => Ok(verified),
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends `request` and reads the answer: its status and JSON body.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<(u16, Value), CtlError> {
    let unreachable = |e: io::Error| CtlError::Unreachable(e.to_string());
    stream.write_all(request).map_err(unreachable)?;
    stream.flush().map_err(unreachable)?;
    let mut reader = BufReader::new(stream.take(MAX_ANSWER));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(unreachable)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CtlError::Unreachable(format!("not an HTTP answer: {status_line:?}")))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(unreachable)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).map_err(unreachable)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(unreachable)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        // Read exactly the body: a TLS peer may close without close_notify after it.
        reader.take(length).read_to_end(&mut body).map_err(unreachable)?;
    } else {
        reader.read_to_end(&mut body).map_err(unreachable)?;
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn check_id(id: &str) -> Result<(), CtlError> {
    if heartbeatd_actors::model::agent::is_valid_agent_id(id) {
        Ok(())
    } else {
        Err(CtlError::Usage(format!("{id:?} is not an agent id")))
    }
}

fn control(target: &Target, id: &str, action: &str) -> Result<(), CtlError> {
    check_id(id)?;
    let view = target.call_ok("POST", &format!("/agents/{id}/{action}"))?;
    let process = &view["process"];
    println!(
        "{id}: {} (pid {})",
        process["state"].as_str().unwrap_or("-"),
        process["pid"].as_i64().map_or("-".into(), |p| p.to_string())
    );
    Ok(())
}

fn status(target: &Target) -> Result<(), CtlError> {
    let mut agents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/agents?limit=10000&after={id}"),
            None => "/agents?limit=10000".to_owned(),
        };
        let page = target.call_ok("GET", &path)?;
        let items = page["agents"].as_array().cloned().unwrap_or_default();
        agents.extend(items);
        match page["next_after"].as_str() {
            Some(next) if !next.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    print!("{}", status_table(&agents, Utc::now()));
    Ok(())
}

/// The rows of `ctl status`, aligned.
pub fn status_table(agents: &[Value], now: DateTime<Utc>) -> String {
    let ago = |at: Option<&str>| -> String {
        at.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human((now - t.with_timezone(&Utc)).num_seconds().max(0) as u64))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "ID".to_owned(),
        "PROCESS".into(),
        "PID".into(),
        "UPTIME".into(),
        "LIVENESS".into(),
        "LAST HEARTBEAT".into(),
        "RESTARTS".into(),
    ]];
    for agent in agents {
        let process = &agent["process"];
        let running = matches!(process["state"].as_str(), Some("running" | "starting"));
        rows.push([
            agent["id"].as_str().unwrap_or("?").to_owned(),
            process["state"].as_str().unwrap_or("-").to_owned(),
            process["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
            if running {
                ago(process["started_at"].as_str())
            } else {
                "-".into()
            },
            agent["status"].as_str().unwrap_or("-").to_owned(),
            match agent["last_seen"].as_str() {
                Some(_) => format!("{} ago", ago(agent["last_seen"].as_str())),
                None => "never".into(),
            },
            process["restarts"].as_u64().map_or("-".into(), |r| r.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
fn human(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

fn tail(target: &Target, id: &str, lines: usize, follow: bool) -> Result<(), CtlError> {
    check_id(id)?;
    let lines = lines.clamp(1, 10_000);
    let fetch = |n: usize| -> Result<Vec<String>, CtlError> {
        let body = target.call_ok("GET", &format!("/agents/{id}/log?tail={n}"))?;
        Ok(body["lines"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    };
    let mut seen = fetch(lines)?;
    for line in &seen {
        println!("{line}");
    }
    if !follow {
        return Ok(());
    }
    const WINDOW: usize = 1000;
    loop {
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        let now = fetch(WINDOW)?;
        let new = new_lines(&seen, &now);
        for line in new {
            println!("{line}");
        }
        let _ = io::stdout().flush();
        seen = now;
    }
}

/// The lines of `now` after its longest start that ends `before` (the window moved on).
fn new_lines<'a>(before: &[String], now: &'a [String]) -> &'a [String] {
    for overlap in (1..=before.len().min(now.len())).rev() {
        if before[before.len() - overlap..] == now[..overlap] {
            return &now[overlap..];
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rows_are_aligned_and_say_dash_for_what_is_not_there() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let agents = vec![
            serde_json::json!({"id": "web", "status": "up", "last_seen": "2026-01-01T00:09:58Z",
                "process": {"state": "running", "pid": 4242, "started_at": "2026-01-01T00:00:00Z", "restarts": 3}}),
            serde_json::json!({"id": "passive-agent-1", "status": "new", "last_seen": null}),
        ];
        let table = status_table(&agents, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("web              running  4242  10m0s   up"),
            "{table}"
        );
        assert!(lines[1].ends_with("2s ago          3"), "{table}");
        assert!(lines[2].contains("never"), "{table}");
        let column = lines[0].find("PROCESS").unwrap();
        assert_eq!(&lines[2][column..column + 1], "-");
    }

    #[test]
    fn following_prints_only_lines_not_printed_before() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            new_lines(&s(&["a", "b", "c"]), &s(&["b", "c", "d", "e"])),
            s(&["d", "e"])
        );
        assert_eq!(new_lines(&s(&["a"]), &s(&["a"])), s(&[]));
        assert_eq!(new_lines(&s(&["x"]), &s(&["y", "z"])), s(&["y", "z"]));
    }

    #[test]
    fn urls_are_http_or_https_with_default_ports() {
        let no_ca = Some(Path::new("/nonexistent/ca.pem"));
        assert!(Target::parse("ftp://h:1", None, None).is_err());
        assert!(Target::parse("h:1", None, None).is_err());
        assert!(Target::parse("http://h:1/path", None, None).is_err());
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/", None, None)
                .ok()
                .unwrap()
                .host_port,
            "127.0.0.1:9000"
        );
        assert_eq!(
            Target::parse("http://localhost", None, None).ok().unwrap().host_port,
            "localhost:80"
        );
        // https needs certificates to trust: a missing --ca file is a usage error (exit 2).
        assert!(
            matches!(Target::parse("https://localhost", None, no_ca), Err(CtlError::Usage(m)) if m.contains("--ca"))
        );
    }
}
