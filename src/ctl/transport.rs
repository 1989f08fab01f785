//! Where `heartbeatd ctl` finds the daemon, and one HTTP/1.1 exchange with it: over the
//! control socket (no token needed: the socket's mode is the authority), or over TCP or TLS
//! with the admin token.
//!
//! Which one: `--url` (or `$HEARTBEATD_URL`) names a TCP address outright. Otherwise ctl reads
//! the daemon's configuration as the daemon does (`--config FILE`, the `HEARTBEATD_*`
//! environment, `--http-port`, `--data-dir`): the control socket if it is there, else
//! `http_bind:http_port` with `admin_token` (and, with TLS, trusting `tls_cert`). Without a
//! configuration and without a socket in `./data`, it tries the shipped config's address.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{tls, CtlError};
use crate::settings::{self, Overrides};

/// The shipped configuration's address (configs/heartbeatd.toml).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Per request: connect, send, and read the answer (a stop may take stop_timeout_s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3700);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// The way to the daemon.
#[derive(Debug)]
enum Route {
    Socket(PathBuf),
    Tcp {
        host_port: String,
        /// For an `https://` URL: the TLS client and the name the certificate must carry.
        tls: Option<(Arc<rustls::ClientConfig>, rustls_pki_types::ServerName<'static>)>,
    },
}

/// The daemon, and how to reach it.
#[derive(Debug)]
pub struct Target {
    route: Route,
    token: Option<String>,
}

/// What the command line says about where the daemon is.
#[derive(Clone, Copy)]
pub struct Where<'a> {
    pub url: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ca: Option<&'a Path>,
    pub config: Option<&'a Path>,
    pub overrides: &'a Overrides,
}

impl Target {
    /// Finds the daemon (see the module documentation).
    pub fn resolve(at: &Where<'_>) -> Result<Self, CtlError> {
        let token = at.token.map(str::to_owned);
        if let Some(url) = at.url {
            return Self::parse(url, token, at.ca);
        }
        let loaded = settings::load(at.config, std::env::vars(), at.overrides)
            .map_err(|e| CtlError::Usage(format!("{e} (ctl reads the daemon's configuration to find it)")))?;
        let settings = loaded.settings;
        if let Some(relative) = settings.control_socket_path().filter(|p| p.is_relative()) {
            // The daemon resolves a relative data_dir from its own working directory, which
            // ctl cannot know: say which socket this one means, so that a ctl run elsewhere
            // does not silently talk to TCP or to another daemon's `./data`.
            let here = std::env::current_dir()
                .map(|cwd| cwd.join(&relative))
                .unwrap_or(relative);
            eprintln!(
                "heartbeatd ctl: data_dir is a relative path: looking for the control socket at {} (from this directory; the daemon resolves it from its own working directory: run ctl there, or make data_dir absolute)",
                super::printable(&here.display().to_string())
            );
        }
        if let Some(socket) = settings.control_socket_path().filter(|p| p.exists()) {
            return Ok(Self {
                route: Route::Socket(socket),
                token,
            });
        }
        let token = token.or(settings.admin_token.clone());
        if settings.http_port == 0 {
            if at.config.is_none() {
                return Self::parse(DEFAULT_URL, token, at.ca);
            }
            return Err(CtlError::Unreachable(format!(
                "the configuration has http_port = 0 and no control socket is at {}; is heartbeatd running?",
                settings
                    .control_socket_path()
                    .map_or_else(|| "(none configured)".to_owned(), |p| p.display().to_string())
            )));
        }
        let ip: IpAddr = match settings.bind_ip().map_err(CtlError::Usage)? {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let host = match ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let scheme = if settings.tls_cert.is_some() { "https" } else { "http" };
        // With TLS, the daemon's own certificate is the one to trust.
        let ca = at.ca.map(Path::to_path_buf).or(settings.tls_cert.clone());
        Self::parse(
            &format!("{scheme}://{host}:{}", settings.http_port),
            token,
            ca.as_deref(),
        )
    }

    /// A TCP target from a URL.
    pub fn parse(url: &str, token: Option<String>, ca: Option<&Path>) -> Result<Self, CtlError> {
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
            Some((tls::client(ca.unwrap_or(Path::new(tls::SYSTEM_CAS)))?, name))
        } else {
            None
        };
        Ok(Self {
            route: Route::Tcp { host_port, tls },
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match &self.route {
            Route::Socket(path) => format!("the control socket {}", path.display()),
            Route::Tcp { host_port, tls } => {
                format!("{}://{host_port}", if tls.is_some() { "https" } else { "http" })
            }
        }
    }

    #[cfg(test)]
    pub fn host_port(&self) -> Option<&str> {
        match &self.route {
            Route::Tcp { host_port, .. } => Some(host_port),
            Route::Socket(_) => None,
        }
    }

    /// One request; answers the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), CtlError> {
        let unreachable = |e: io::Error| CtlError::Unreachable(e.to_string());
        let auth = self
            .token
            .as_ref()
            .filter(|_| matches!(self.route, Route::Tcp { .. }))
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = body.map(Value::to_string).unwrap_or_default();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        let host = match &self.route {
            Route::Socket(_) => "localhost",
            Route::Tcp { host_port, .. } => host_port,
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        match &self.route {
            Route::Socket(path) => {
                let stream = UnixStream::connect(path).map_err(|e| {
                    CtlError::Unreachable(format!(
                        "{e} (is heartbeatd running? ctl must run as heartbeatd's user or root to use the socket)"
                    ))
                })?;
                check_peer(&stream, path)?;
                stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(unreachable)?;
                exchange(stream, request.as_bytes())
            }
            Route::Tcp { host_port, tls } => {
                let addr = host_port
                    .to_socket_addrs()
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| CtlError::Unreachable("the name has no address".into()))?;
                let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(unreachable)?;
                stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(unreachable)?;
                match tls {
                    None => exchange(stream, request.as_bytes()),
                    Some((config, name)) => {
                        let connection = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                            .map_err(|e| CtlError::Unreachable(e.to_string()))?;
                        exchange(rustls::StreamOwned::new(connection, stream), request.as_bytes())
                    }
                }
            }
        }
    }

    /// A call that must succeed (2xx); otherwise the daemon's message, as a refusal.
    pub fn call_ok(&self, method: &str, path: &str) -> Result<Value, CtlError> {
        let (status, body) = self.call(method, path, None)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(refusal(status, &body))
    }
}

/// Talks only to a socket served by root, by this user, or by the owner of the socket's
/// directory when no one else can write there (heartbeatd's own `data_dir`, where root's ctl
/// reaches a heartbeatd running as its own user). Whoever else bound a socket at the path (in
/// a directory others can write, say `/tmp`) could answer anything: ctl says so (exit 3)
/// rather than print it or send it a request.
fn check_peer(stream: &UnixStream, path: &Path) -> Result<(), CtlError> {
    use std::os::unix::fs::MetadataExt;
    let cred = heartbeatd_actors::peer_cred::peer_cred(stream)
        .map_err(|e| CtlError::Unreachable(format!("cannot tell who serves {}: {e}", path.display())))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir_owner = path
        .parent()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .filter(|meta| meta.mode() & 0o022 == 0)
        .map(|meta| meta.uid());
    if peer_may_serve(cred.uid, me, dir_owner) {
        return Ok(());
    }
    Err(CtlError::Unreachable(format!(
        "the socket {} is served by uid {}: neither root, this user ({me}), nor the owner of a directory only its owner can write; refusing to talk to it (someone else may have put it there)",
        path.display(),
        cred.uid
    )))
}

/// Whether a socket served by `peer` may be trusted by ctl running as `me`, in a directory
/// owned by `dir_owner` (`None`: others can write it).
fn peer_may_serve(peer: u32, me: u32, dir_owner: Option<u32>) -> bool {
    peer == 0 || peer == me || Some(peer) == dir_owner
}

/// A refusal from the daemon's answer.
pub fn refusal(status: u16, body: &Value) -> CtlError {
    let message = body["message"].as_str().unwrap_or("no message");
    CtlError::Refused(format!("{status}: {message}"))
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
            // The peer names the size: never allocate past what an answer may be.
            if size as u64 > MAX_ANSWER - body.len() as u64 {
                return Err(CtlError::Unreachable(format!(
                    "the answer is larger than the {MAX_ANSWER} bytes ctl reads"
                )));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_this_user_or_the_owner_of_a_private_directory_may_serve_the_socket() {
        assert!(peer_may_serve(0, 1000, None), "root");
        assert!(peer_may_serve(1000, 1000, None), "this user");
        assert!(
            peer_may_serve(998, 0, Some(998)),
            "root's ctl, heartbeatd's own data_dir"
        );
        assert!(
            !peer_may_serve(65534, 0, None),
            "nobody, in a directory others can write"
        );
        assert!(!peer_may_serve(65534, 0, Some(998)), "nobody, in another's directory");
    }

    #[test]
    fn a_chunk_larger_than_an_answer_may_be_is_refused_before_it_is_allocated() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffff\r\n";
        let stream = ReadWrite(io::Cursor::new(answer.as_bytes().to_vec()));
        let refused = exchange(stream, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(refused, Err(CtlError::Unreachable(m)) if m.contains("larger than")));
    }

    /// A peer whose answer is `.0`; what is written to it is dropped.
    struct ReadWrite(io::Cursor<Vec<u8>>);

    impl Read for ReadWrite {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for ReadWrite {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn urls_are_http_or_https_with_default_ports() {
        let no_ca = Some(Path::new("/nonexistent/ca.pem"));
        assert!(Target::parse("ftp://h:1", None, None).is_err());
        assert!(Target::parse("h:1", None, None).is_err());
        assert!(Target::parse("http://h:1/path", None, None).is_err());
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/", None, None).unwrap().host_port(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            Target::parse("http://localhost", None, None).unwrap().host_port(),
            Some("localhost:80")
        );
        // https needs certificates to trust: a missing --ca file is a usage error (exit 2).
        assert!(
            matches!(Target::parse("https://localhost", None, no_ca), Err(CtlError::Usage(m)) if m.contains("--ca"))
        );
    }

    #[test]
    fn the_configuration_names_the_socket_or_the_address_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "http_port = 9123\nhttp_bind = \"0.0.0.0\"\nadmin_token = \"tok\"\ndata_dir = {:?}\n",
                data.display().to_string()
            ),
        )
        .unwrap();
        let overrides = Overrides::default();
        let at = Where {
            url: None,
            token: None,
            ca: None,
            config: Some(&config),
            overrides: &overrides,
        };
        // No socket yet: TCP on the bind address (loopback for 0.0.0.0), with the token.
        let target = Target::resolve(&at).unwrap();
        assert_eq!(target.host_port(), Some("127.0.0.1:9123"));
        assert_eq!(target.token.as_deref(), Some("tok"));
        // With the socket there: the socket.
        std::fs::create_dir_all(&data).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(data.join("heartbeatd.sock")).unwrap();
        let target = Target::resolve(&at).unwrap();
        assert!(target.describe().contains("heartbeatd.sock"), "{}", target.describe());
        // --http-port and --url win.
        let port = Overrides {
            http_port: Some(9999),
            data_dir: Some(dir.path().join("elsewhere")),
        };
        let target = Target::resolve(&Where { overrides: &port, ..at }).unwrap();
        assert_eq!(target.host_port(), Some("127.0.0.1:9999"));
        let url = Target::resolve(&Where {
            url: Some("http://10.0.0.1:1"),
            ..at
        })
        .unwrap();
        assert_eq!(url.host_port(), Some("10.0.0.1:1"));
    }
}
