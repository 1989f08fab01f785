//! TLS handshakes on the HTTPS listener. A failed one (a client that does not trust the
//! certificate, speaks plain HTTP to the TLS port, offers no common cipher, or never finishes
//! within [`HANDSHAKE_TIMEOUT`]) is counted and logged at WARN, at most once per
//! [`WARNING_INTERVAL`] with the number not logged since: a certificate that clients refuse
//! shows in the log, and a scanner cannot flood it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::net::TcpStream;
use heartbeatd_actors::log_gate::LogGate;
use slog::{warn, Logger};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake must finish within this long (slow or stalled clients hold a connection).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one WARN about failed handshakes per this long.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts TLS connections with the server's current configuration.
#[derive(Clone)]
pub struct Handshakes {
    acceptor: TlsAcceptor,
    /// Failed or timed-out handshakes since start (`/metrics`).
    failures: Arc<AtomicU64>,
    warnings: Arc<Mutex<LogGate>>,
    log: Logger,
}

impl Handshakes {
    pub fn new(config: Arc<rustls::ServerConfig>, failures: Arc<AtomicU64>, log: Logger) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            failures,
            warnings: Arc::new(Mutex::new(LogGate::new(WARNING_INTERVAL))),
            log,
        }
    }

    /// The TLS session over `io`, or `Err` (counted and logged) when the handshake fails.
    pub async fn accept(&self, io: TcpStream, peer: Option<SocketAddr>) -> Result<TlsStream<TcpStream>, ()> {
        let reason = match actix_rt::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        let gate = self.warnings.lock().map(|mut gate| gate.check(Instant::now()));
        if let Ok(Some(suppressed)) = gate {
            warn!(self.log, "TLS handshake failed";
                "peer" => peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string()), "reason" => reason,
                "not_logged_since_last" => suppressed,
                "what_to_do" => "if clients should connect: check that they trust tls_cert and that it matches tls_key and names the host they use; a client speaking plain http:// to this port fails this way too");
        }
        Err(())
    }
}
