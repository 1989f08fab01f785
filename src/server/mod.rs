//! The HTTP server: heartbeatd's listeners (TCP, TLS over TCP, the control socket) with the
//! same application behind each, built on actix-server and actix-http directly rather than
//! through `actix_web::HttpServer`, because heartbeatd needs three things `HttpServer` does
//! not give:
//!
//! - a send deadline on every connection ([`send_deadline`]): a client that stops reading
//!   is dropped after `send_timeout_s`, and the memory of its answer is returned;
//! - failed TLS handshakes logged (at a rate-limited WARN, with the peer), not dropped in
//!   silence ([`tls_accept`]);
//! - the application told which listener a request came through ([`Transport`]): the
//!   control socket's file mode is its authority, so it needs no token.
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | [`serve`]: the listeners and their connection pipelines |
//! | [`send_deadline`] | the per-connection write deadline |
//! | [`tls_accept`] | TLS handshakes, logged when they fail |
//! | [`control_socket`] | the Unix socket `heartbeatd ctl` talks to (mode 0600) |
//! | [`inherited`] | sockets handed over by systemd or by the previous heartbeatd (upgrade) |
//! | [`hand_over`] | the old process's connections during an upgrade |

pub mod control_socket;
pub mod inherited;
pub mod send_deadline;
pub mod tls_accept;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix_http::{HttpService, Protocol};
use actix_rt::net::{TcpStream, UnixStream};
use actix_server::{GracefulShutdownSignal, Server, ServerHandle};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::App;
use slog::Logger;

use crate::routes::auth::Transport;
use send_deadline::SendDeadline;

/// The listeners heartbeatd serves on.
pub struct Listeners {
    /// `http_bind:http_port`; `None` with `http_port = 0`.
    pub tcp: Option<TcpListener>,
    /// With `tls_cert` and `tls_key`: TCP connections speak TLS only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The control socket (`control_socket`).
    pub control: Option<UnixListener>,
}

/// The limits every connection lives under.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// HTTP threads.
    pub workers: usize,
    /// Open connections, at most, over all threads (`max_connections`).
    pub max_connections: usize,
    /// A request's head must arrive within this long (`request_timeout_s`; 408 otherwise).
    pub request_timeout: Duration,
    /// A write may wait this long for the client to read (`send_timeout_s`).
    pub send_timeout: Duration,
    /// Open requests may finish within this long after a stop.
    pub grace: Duration,
}

/// How long an idle keep-alive connection is kept (actix-web's default).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down cleanly.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters of the connection layer, for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct ConnectionCounters {
    /// Connections closed because the client read nothing for `send_timeout_s`.
    pub send_timeouts: Arc<AtomicU64>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Arc<AtomicU64>,
    /// Connections open now, on every listener.
    pub open: Arc<AtomicUsize>,
    /// Set during an upgrade's hand-over: every answer carries `Connection: close`, so each
    /// client's next request goes through the listening socket to the new process.
    pub closing: Arc<AtomicBool>,
}

/// Counts a connection as open for as long as it lives (it travels with the stream).
#[derive(Debug)]
pub struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long the old process of an upgrade waits for its open connections to carry one more
/// request (answered with `Connection: close`) before it closes the idle ones. A client that
/// sends steadily is moved over between two requests, never with one in flight; one idle
/// longer than this is closed as keep-alive would close it.
pub const HAND_OVER_LINGER: Duration = Duration::from_secs(1);

/// The old process's connections during an upgrade: stop accepting (new connections wait in
/// the kernel's queue for the new process), answer with `Connection: close` for up to
/// [`HAND_OVER_LINGER`], then stop as a graceful stop does (idle connections closed, open
/// requests finished). Returns the connections still open when the linger ended.
pub async fn hand_over(handle: &ServerHandle, counters: &ConnectionCounters) -> usize {
    counters.closing.store(true, Ordering::Release);
    handle.pause().await;
    let until = Instant::now() + HAND_OVER_LINGER;
    while counters.open.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let left = counters.open.load(Ordering::Relaxed);
    handle.stop(true).await;
    left
}

/// Starts serving `app` on every listener. `app` is called once per HTTP thread and listener,
/// with the listener's [`Transport`].
pub fn serve<F, T, B>(
    listeners: Listeners,
    limits: &ConnectionLimits,
    counters: &ConnectionCounters,
    log: &Logger,
    app: F,
) -> io::Result<Server>
where
    F: Fn(Transport) -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let mut builder = Server::build()
        .workers(limits.workers)
        // The limit is per HTTP thread; the setting is for all of them.
        .max_concurrent_connections(limits.max_connections.div_ceil(limits.workers))
        .disable_signals()
        .shutdown_timeout(limits.grace.as_secs());
    let shutdown = builder.graceful_shutdown_signal();

    if let Some(listener) = listeners.tcp {
        let local = listener.local_addr()?;
        let (app, limits, shutdown) = (app.clone(), limits.clone(), shutdown.clone());
        let timeouts = Arc::clone(&counters.send_timeouts);
        let open = Arc::clone(&counters.open);
        match listeners.tls {
            None => {
                builder = builder.listen("heartbeatd-http", listener, move || {
                    let (send_timeout, timeouts, open) =
                        (limits.send_timeout, Arc::clone(&timeouts), Arc::clone(&open));
                    fn_service(move |io: TcpStream| {
                        let peer = io.peer_addr().ok();
                        let _ = io.set_nodelay(true);
                        let counted = OpenConnection::new(&open);
                        let io = SendDeadline::new(io, send_timeout, Arc::clone(&timeouts), counted);
                        async move { Ok::<_, ()>((io, Protocol::Http1, peer)) }
                    })
                    .and_then(http(app(Transport::Tcp), &limits, local, shutdown.clone()).map_err(drop))
                })?;
            }
            Some(tls) => {
                let handshakes =
                    tls_accept::Handshakes::new(tls, Arc::clone(&counters.tls_handshake_failures), log.clone());
                builder = builder.listen("heartbeatd-https", listener, move || {
                    let (send_timeout, timeouts, open) =
                        (limits.send_timeout, Arc::clone(&timeouts), Arc::clone(&open));
                    let handshakes = handshakes.clone();
                    fn_service(move |io: TcpStream| {
                        let (handshakes, timeouts) = (handshakes.clone(), Arc::clone(&timeouts));
                        let counted = OpenConnection::new(&open);
                        async move {
                            let peer = io.peer_addr().ok();
                            let _ = io.set_nodelay(true);
                            let io = handshakes.accept(io, peer).await?;
                            let io = SendDeadline::new(io, send_timeout, timeouts, counted);
                            Ok::<_, ()>((io, Protocol::Http1, peer))
                        }
                    })
                    .and_then(http(app(Transport::Tls), &limits, local, shutdown.clone()).map_err(drop))
                })?;
            }
        }
    }
    if let Some(listener) = listeners.control {
        // actix-http wants an address; the control socket has none.
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let (limits, shutdown) = (limits.clone(), shutdown.clone());
        let timeouts = Arc::clone(&counters.send_timeouts);
        let open = Arc::clone(&counters.open);
        builder = builder.listen_uds("heartbeatd-control", listener, move || {
            let (send_timeout, timeouts, open) = (limits.send_timeout, Arc::clone(&timeouts), Arc::clone(&open));
            fn_service(move |io: UnixStream| {
                let counted = OpenConnection::new(&open);
                let io = SendDeadline::new(io, send_timeout, Arc::clone(&timeouts), counted);
                async move { Ok::<_, ()>((io, Protocol::Http1, None)) }
            })
            .and_then(http(app(Transport::ControlSocket), &limits, local, shutdown.clone()).map_err(drop))
        })?;
    }
    Ok(builder.run())
}

/// HTTP/1.1 over any stream, serving `app`: what `HttpServer` would build for it.
fn http<S, T, B>(
    app: App<T>,
    limits: &ConnectionLimits,
    local: SocketAddr,
    shutdown: GracefulShutdownSignal,
) -> impl ServiceFactory<
    (S, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    HttpService::build()
        .graceful_shutdown_signal(move || {
            let signal = shutdown.clone();
            async move { signal.notified().await }
        })
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(limits.request_timeout)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        .local_addr(local)
        // AppConfig carries the host name and scheme for URL generation, which heartbeatd
        // does not use; the Host header is checked by the gate (routes::auth).
        .finish(map_config(
            app.into_factory().map_err(|err: actix_web::Error| err.error_response()),
            |_| AppConfig::default(),
        ))
}
