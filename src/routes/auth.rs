//! Who may do what: the one gate every request passes before any handler runs and before any
//! body is read (installed on the whole application in [`super::app`], so no route can be
//! added without it).
//!
//! In order, for each request:
//!
//! 1. **Host** (TCP only): it must name this daemon: `localhost` or a `*.localhost` name, an
//!    IP address, this machine's host name, or an `allowed_hosts` entry. Anything else is a
//!    page whose DNS name was rebound to heartbeatd's address: 421. An IP address is safe to
//!    accept: a browser sends one only to the origin it names, so no other site's page can
//!    make it.
//! 2. **Cross-site** (TCP only): a request carrying a foreign `Origin` (another host or port,
//!    or `null`) or `Sec-Fetch-Site: cross-site` / `same-site` comes from another site's page:
//!    403, whatever it asks. Only a top-level navigation that reads (a link to the status
//!    page) passes. Agents, curl, Prometheus and `heartbeatd ctl` send neither header.
//! 3. **Content type**: an admin call with a body must say `Content-Type: application/json`
//!    (415 otherwise): a browser cannot send that to another origin without a CORS preflight,
//!    which heartbeatd never grants. `POST /heartbeat` takes any type (agents and `curl -d`).
//! 4. **Credentials**, by what the request needs ([`Access`]):
//!    - reads are open, but for an agent's output (`GET /agents/{id}/log`), which is an admin
//!      call;
//!    - `POST /heartbeat` needs the `ingest_token` when one is set (401);
//!    - every other change is an admin call: over the control socket it needs nothing (the
//!      socket's mode, 0600, is the authority); over TCP it needs the `admin_token` (401
//!      without, 403 when wrong), or, when no token is set, `loopback_admin = true` and a
//!      loopback listener (403 otherwise).
//!
//! The outcome is a [`Caller`] in the request's extensions; admin handlers take the [`Admin`]
//! extractor, which refuses a request the gate did not let through as an admin call, so a
//! route the gate misjudged still cannot change anything.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use arc_swap::{ArcSwap, ArcSwapOption};
use futures::future::{ready, Ready};
use heartbeatd_actors::counters::{IngressCounters, RejectReason};
use heartbeatd_actors::log_gate::LogGate;
use slog::{warn, Logger};

use super::ApiResponse;

/// The listener a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `http_bind:http_port`, plain HTTP.
    Tcp,
    /// `http_bind:http_port` with `tls_cert`/`tls_key`.
    Tls,
    /// The control socket (mode 0600): only heartbeatd's user and root can connect.
    ControlSocket,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads anyone may make.
    Open,
    /// `POST /heartbeat`: the `ingest_token`, when one is set.
    Ingest,
    /// Changes, and reading an agent's output: an operator.
    Admin,
}

/// What the gate found out about the caller; in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Let through as an admin call.
    pub admin: bool,
    /// May make heartbeatd run a program (`command`, `working_dir`, `env`): over the
    /// control socket, or with the `admin_token`; not on loopback without a token, where any
    /// local user could otherwise run programs as heartbeatd's user.
    pub may_run_programs: bool,
}

/// Why the gate refused a request. Every refusal has the common JSON body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("Host {0:?} does not name this heartbeatd (a page whose DNS name points here?); if it should, add it to allowed_hosts")]
    ForeignHost(String),
    #[error("refused: this request comes from another site's page ({0}); heartbeatd takes changes only from its own pages and from clients that are not browsers")]
    CrossSite(String),
    #[error("an admin call's body must be JSON: send Content-Type: application/json")]
    NotJson,
    #[error("this call needs Authorization: Bearer <admin_token>")]
    MissingAdminToken,
    #[error("the admin token is wrong")]
    WrongAdminToken,
    #[error("changes over TCP need an admin_token; none is set. Use `heartbeatd ctl` (the control socket), set admin_token, or set loopback_admin = true to let local clients change things without one")]
    NoAdminToken,
    #[error("this endpoint needs Authorization: Bearer <ingest_token>")]
    MissingIngestToken,
    #[error("this call is an admin call, and the request was not let through as one")]
    NotAdmin,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::CrossSite(_) | Self::WrongAdminToken | Self::NoAdminToken | Self::NotAdmin => StatusCode::FORBIDDEN,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MissingAdminToken | Self::MissingIngestToken => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiResponse::error(self.status_code(), self.to_string());
        if matches!(self, Self::MissingAdminToken | Self::MissingIngestToken) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The rules, shared by every HTTP thread; the tokens, `allowed_hosts` and `loopback_admin`
/// are replaced by a SIGHUP reload.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateState>,
}

struct GateState {
    /// Never logged or printed.
    admin_token: ArcSwapOption<String>,
    ingest_token: ArcSwapOption<String>,
    allowed_hosts: ArcSwap<HostRules>,
    /// Changes over TCP without a token, when the listener is loopback.
    loopback_admin: AtomicBool,
    /// The TCP listener is on a loopback address.
    listens_on_loopback: bool,
    /// Refused heartbeats are counted like every other rejection.
    counters: Option<Arc<IngressCounters>>,
    /// Refusals of a foreign Host or of another site's page are logged at most once per
    /// [`WARNING_INTERVAL`] each: an operator sees the name to add to `allowed_hosts`, and a
    /// page looping on requests cannot flood the log.
    host_warnings: Mutex<LogGate>,
    site_warnings: Mutex<LogGate>,
    log: Logger,
    /// Refusals since start, by [`Refusal`] (`/metrics`).
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// The kinds of refusal `/metrics` counts (`heartbeatd_requests_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ForeignHost,
    CrossSite,
    NotJson,
    Unauthorized,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Self::ForeignHost, Self::CrossSite, Self::NotJson, Self::Unauthorized];

    pub fn label(self) -> &'static str {
        match self {
            Self::ForeignHost => "foreign_host",
            Self::CrossSite => "cross_site",
            Self::NotJson => "not_json",
            Self::Unauthorized => "unauthorized",
        }
    }

    fn of(error: &AuthError) -> Self {
        match error {
            AuthError::ForeignHost(_) => Self::ForeignHost,
            AuthError::CrossSite(_) => Self::CrossSite,
            AuthError::NotJson => Self::NotJson,
            _ => Self::Unauthorized,
        }
    }
}

/// At most one WARN per this long for each kind of refusal.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The names a `Host` header may carry besides IP addresses and `localhost`.
#[derive(Debug, Default)]
pub struct HostRules {
    /// Exact names, lower case, without a trailing dot.
    names: Vec<String>,
    /// Suffixes (`.example.com` for `*.example.com` or `.example.com`).
    suffixes: Vec<String>,
    /// `*`: any host (the check is off).
    any: bool,
}

impl HostRules {
    /// `allowed_hosts`, plus this machine's host name.
    pub fn new(allowed: &[String], host_name: Option<&str>) -> Self {
        let mut rules = Self::default();
        for entry in allowed.iter().map(|e| normalize_host(e)) {
            if entry == "*" {
                rules.any = true;
            } else if let Some(suffix) = entry.strip_prefix('*') {
                // `*example.com` means the names under example.com, as `*.example.com` does:
                // never `evilexample.com`.
                let suffix = suffix.trim_start_matches('.');
                if !suffix.is_empty() {
                    rules.suffixes.push(format!(".{suffix}"));
                }
            } else if entry.starts_with('.') {
                rules.suffixes.push(entry);
            } else if !entry.is_empty() {
                rules.names.push(entry);
            }
        }
        if let Some(name) = host_name.map(normalize_host).filter(|n| !n.is_empty()) {
            rules.names.push(name);
        }
        rules
    }

    /// Whether `host` (the `Host` header's name, without its port) names this daemon.
    pub fn allows(&self, host: &str) -> bool {
        let host = normalize_host(host);
        if self.any || host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return true;
        }
        self.names.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The settings the gate applies.
pub struct GateSettings {
    pub admin_token: Option<String>,
    pub ingest_token: Option<String>,
    pub allowed_hosts: HostRules,
    pub loopback_admin: bool,
    pub listens_on_loopback: bool,
}

impl Gate {
    pub fn new(settings: GateSettings, counters: Option<Arc<IngressCounters>>, log: Logger) -> Self {
        Self {
            inner: Arc::new(GateState {
                refused: Default::default(),
                host_warnings: Mutex::new(LogGate::new(WARNING_INTERVAL)),
                site_warnings: Mutex::new(LogGate::new(WARNING_INTERVAL)),
                log,
                admin_token: ArcSwapOption::from_pointee(settings.admin_token.filter(|t| !t.is_empty())),
                ingest_token: ArcSwapOption::from_pointee(settings.ingest_token.filter(|t| !t.is_empty())),
                allowed_hosts: ArcSwap::from_pointee(settings.allowed_hosts),
                loopback_admin: AtomicBool::new(settings.loopback_admin),
                listens_on_loopback: settings.listens_on_loopback,
                counters,
            }),
        }
    }

    /// SIGHUP: the new tokens, hosts and loopback rule apply from the next request.
    pub fn reload(&self, settings: GateSettings) {
        let state = &self.inner;
        state
            .admin_token
            .store(settings.admin_token.filter(|t| !t.is_empty()).map(Arc::new));
        state
            .ingest_token
            .store(settings.ingest_token.filter(|t| !t.is_empty()).map(Arc::new));
        state.allowed_hosts.store(Arc::new(settings.allowed_hosts));
        state.loopback_admin.store(settings.loopback_admin, Ordering::Relaxed);
    }

    /// Requests refused since start, by kind.
    pub fn refused(&self, kind: Refusal) -> u64 {
        self.inner.refused[kind as usize].load(Ordering::Relaxed)
    }

    /// Whether an admin token is set (start-up warnings).
    pub fn has_admin_token(&self) -> bool {
        self.inner.admin_token.load().is_some()
    }

    /// Lets `req` through (and records its [`Caller`]) or says why not.
    pub fn admit(&self, req: &ServiceRequest, transport: Transport) -> Result<(), AuthError> {
        let access = required_access(req.method(), req.match_info().as_str());
        let outcome = self.judge(req.request(), access, transport);
        match outcome {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Ok(())
            }
            Err(e) => {
                if access == Access::Ingest {
                    if let Some(counters) = &self.inner.counters {
                        counters.rejected(RejectReason::Invalid);
                    }
                }
                self.inner.refused[Refusal::of(&e) as usize].fetch_add(1, Ordering::Relaxed);
                self.warn(&e, req);
                Err(e)
            }
        }
    }

    /// Logs a refusal of a foreign Host or of another site's page (rate-limited).
    fn warn(&self, refused: &AuthError, req: &ServiceRequest) {
        let (gate, what_to_do) = match refused {
            AuthError::ForeignHost(_) => (
                &self.inner.host_warnings,
                "if clients reach heartbeatd by this name, add it to allowed_hosts (and send SIGHUP); otherwise a web page whose DNS name points here tried to use it",
            ),
            AuthError::CrossSite(_) => (
                &self.inner.site_warnings,
                "nothing, if no web page should act on heartbeatd: the request was refused; find the page that sent it",
            ),
            _ => return,
        };
        if let Ok(Some(suppressed)) = gate.try_lock().map(|mut g| g.check(Instant::now())) {
            warn!(self.inner.log, "request refused"; "reason" => %refused,
                "method" => %req.method(), "path" => %heartbeatd_actors::log_text::clip(req.path()),
                "peer" => req.peer_addr().map_or_else(String::new, |a| a.to_string()),
                "similar_not_logged" => suppressed, "what_to_do" => what_to_do);
        }
    }

    fn judge(&self, req: &HttpRequest, access: Access, transport: Transport) -> Result<Caller, AuthError> {
        let browser_can_reach = transport != Transport::ControlSocket;
        if browser_can_reach {
            check_host(req, &self.inner.allowed_hosts.load())?;
            check_same_site(req, access)?;
        }
        match access {
            Access::Open => Ok(Caller {
                admin: false,
                may_run_programs: false,
            }),
            Access::Ingest => {
                let expected = self.inner.ingest_token.load();
                match (expected.as_deref(), bearer_token(req)) {
                    (None, _) => {}
                    (Some(expected), Some(given)) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {}
                    _ => return Err(AuthError::MissingIngestToken),
                }
                Ok(Caller {
                    admin: false,
                    may_run_programs: false,
                })
            }
            Access::Admin => {
                check_json_body(req)?;
                if transport == Transport::ControlSocket {
                    return Ok(Caller {
                        admin: true,
                        may_run_programs: true,
                    });
                }
                let expected = self.inner.admin_token.load();
                match expected.as_deref() {
                    Some(expected) => {
                        let given = bearer_token(req).ok_or(AuthError::MissingAdminToken)?;
                        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                            return Err(AuthError::WrongAdminToken);
                        }
                        Ok(Caller {
                            admin: true,
                            may_run_programs: true,
                        })
                    }
                    None if self.inner.listens_on_loopback && self.inner.loopback_admin.load(Ordering::Relaxed) => {
                        Ok(Caller {
                            admin: true,
                            may_run_programs: false,
                        })
                    }
                    None => Err(AuthError::NoAdminToken),
                }
            }
        }
    }
}

/// What a request needs, by its method and its path as the router matches it (percent-
/// decoded, so `/agents/x/%6Cog` is the log too). A method no route takes for a path is left
/// to the router (404 or 405, as the original answers). A change route missing here would be
/// `Open`, and its handler's [`Admin`] extractor would refuse it (403): it fails closed.
pub fn required_access(method: &Method, path: &str) -> Access {
    let segments: Vec<&str> = path.split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["", "heartbeat"]) => Access::Ingest,
        ("POST", ["", "agents"])
        | ("PATCH" | "DELETE", ["", "agents", _])
        | ("POST", ["", "agents", _, "pause" | "resume" | "start" | "stop" | "restart"])
        | ("GET" | "HEAD", ["", "agents", _, "log"])
        | ("POST", ["", "upgrade"]) => Access::Admin,
        _ => Access::Open,
    }
}

fn check_host(req: &HttpRequest, rules: &HostRules) -> Result<(), AuthError> {
    // An absolute-form target (`GET http://evil.test/agents`) names the host it is for, and a
    // server must take it over the Host header (RFC 9112 3.2.2): it must name this daemon too.
    if let Some(authority) = req.uri().authority() {
        let text = authority.as_str();
        if !rules.allows(host_name(text)) {
            return Err(AuthError::ForeignHost(text.chars().take(256).collect()));
        }
    }
    // HTTP/1.0 may omit Host; browsers never do.
    let Some(value) = req.headers().get(header::HOST) else {
        return Ok(());
    };
    let text = value
        .to_str()
        .map_err(|_| AuthError::ForeignHost("<not text>".into()))?;
    if rules.allows(host_name(text)) {
        Ok(())
    } else {
        Err(AuthError::ForeignHost(text.chars().take(256).collect()))
    }
}

/// The name part of a `Host` value: `[::1]:80` → `[::1]`, `a.b:8080` → `a.b`. A value that is
/// not `name[:port]` (`[::1]evil.test`, `a.b:x`) is answered whole, and no rule allows it.
fn host_name(value: &str) -> &str {
    let value = value.trim();
    let is_port = |port: &str| port.is_empty() || port.bytes().all(|b| b.is_ascii_digit());
    if value.starts_with('[') {
        return match value.find(']') {
            Some(end) => match &value[end + 1..] {
                "" => &value[..=end],
                rest => match rest.strip_prefix(':') {
                    Some(port) if is_port(port) => &value[..=end],
                    _ => value,
                },
            },
            None => value,
        };
    }
    match value.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => value,
        None => value,
    }
}

/// `host[:port]` with the default port of either scheme dropped, lower case.
fn authority_key(authority: &str) -> String {
    let lower = authority.trim().trim_end_matches('/').to_ascii_lowercase();
    lower
        .strip_suffix(":80")
        .or_else(|| lower.strip_suffix(":443"))
        .map_or(lower.clone(), str::to_owned)
}

/// The paths another site may link to (a top-level navigation reads them and the browser
/// shows them): the status page, and the health checks. Everything larger (`/metrics`, agent
/// pages, histories) is refused to another site's page even as a navigation, since an
/// `<iframe>` of it is a navigation too and makes heartbeatd build the answer.
fn may_be_linked(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/readyz")
}

fn check_same_site(req: &HttpRequest, access: Access) -> Result<(), AuthError> {
    let headers = req.headers();
    // Every value counts: a second header must not hide what the first says.
    let navigation = headers.get_all("sec-fetch-mode").next().is_some()
        && headers
            .get_all("sec-fetch-mode")
            .all(|m| m.as_bytes().eq_ignore_ascii_case(b"navigate"));
    if access == Access::Open && navigation && may_be_linked(req.path()) {
        // A link from another site to the status page: it reads, and the browser shows it.
        return Ok(());
    }
    for site in headers.get_all("sec-fetch-site") {
        let site = site.to_str().unwrap_or("cross-site").trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(AuthError::CrossSite(format!(
                "Sec-Fetch-Site: {}",
                site.chars().take(64).collect::<String>()
            )));
        }
    }
    for origin in headers.get_all(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let own = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let foreign = match (origin.split_once("://"), own) {
            (Some((_, authority)), Some(own)) => authority_key(authority) != authority_key(own),
            // `null` (a sandboxed frame, a file:// page), or no Host to compare with.
            _ => true,
        };
        if foreign {
            return Err(AuthError::CrossSite(format!(
                "Origin: {}",
                origin.chars().take(256).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// An admin call that carries a body must declare it JSON.
fn check_json_body(req: &HttpRequest) -> Result<(), AuthError> {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if !has_body {
        return Ok(());
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        _ => Err(AuthError::NotJson),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` work too.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An admin call, as the gate let it through. Every handler that changes something (or reads
/// an agent's output) takes one.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub Caller);

impl Admin {
    /// Refuses a change that would make heartbeatd run a program unless the caller may.
    pub fn check_may_run_programs(&self, sets_program: bool) -> Result<(), ProgramsNeedToken> {
        if sets_program && !self.0.may_run_programs {
            return Err(ProgramsNeedToken);
        }
        Ok(())
    }
}

/// `command`, `working_dir` or `env` set by a caller who may not run programs.
#[derive(Debug, thiserror::Error)]
#[error("setting command, working_dir or env runs programs as heartbeatd's user, so over TCP it needs the admin_token, even on loopback; use `heartbeatd ctl` (the control socket), set admin_token, or put the agent in the config file's [[agents]]")]
pub struct ProgramsNeedToken;

impl FromRequest for Admin {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req.extensions().get::<Caller>().copied();
        ready(match caller {
            Some(caller) if caller.admin => Ok(Self(caller)),
            _ => Err(AuthError::NotAdmin),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn gate(admin_token: Option<&str>, loopback_admin: bool, loopback: bool) -> Gate {
        Gate::new(
            GateSettings {
                admin_token: admin_token.map(str::to_owned),
                ingest_token: Some("ingest".into()),
                allowed_hosts: HostRules::new(
                    &["heartbeat.example.com".into(), "*.fleet.example".into()],
                    Some("web-01"),
                ),
                loopback_admin,
                listens_on_loopback: loopback,
            },
            None,
            Logger::root(slog::Discard, slog::o!()),
        )
    }

    fn judge(gate: &Gate, req: TestRequest, transport: Transport) -> Result<Caller, AuthError> {
        let req = req.to_srv_request();
        let access = required_access(req.method(), req.match_info().as_str());
        gate.judge(req.request(), access, transport)
    }

    #[test]
    fn host_must_name_this_daemon() {
        let g = gate(None, true, true);
        let get = |host: &str| {
            judge(
                &g,
                TestRequest::get().uri("/agents").insert_header(("Host", host)),
                Transport::Tcp,
            )
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost",
            "[::1]:8080",
            "10.1.2.3",
            "web-01:8080",
            "heartbeat.example.com",
            "a.fleet.example:9",
        ] {
            assert!(get(ok).is_ok(), "{ok}");
        }
        for bad in [
            "evil.test:8080",
            "heartbeat.example.com.evil.test",
            "fleet.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(matches!(get(bad), Err(AuthError::ForeignHost(_))), "{bad}");
        }
        // The control socket is out of a browser's reach.
        let socket = judge(
            &g,
            TestRequest::get().uri("/agents").insert_header(("Host", "evil.test")),
            Transport::ControlSocket,
        );
        assert!(socket.is_ok());
        assert!(HostRules::new(&["*".into()], None).allows("anything.test"));
    }

    #[test]
    fn other_sites_pages_are_refused_but_a_link_to_the_page_is_not() {
        let g = gate(None, true, true);
        let host = ("Host", "127.0.0.1:8080");
        let cases: Vec<(TestRequest, bool)> = vec![
            (
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(host)
                    .insert_header(("Origin", "http://127.0.0.1:9999")),
                false,
            ),
            (
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(host)
                    .insert_header(("Origin", "null")),
                false,
            ),
            (
                TestRequest::post()
                    .uri("/heartbeat")
                    .insert_header(host)
                    .insert_header(("Sec-Fetch-Site", "cross-site")),
                false,
            ),
            (
                TestRequest::post()
                    .uri("/heartbeat")
                    .insert_header(host)
                    .insert_header(("Sec-Fetch-Site", "same-site")),
                false,
            ),
            (
                TestRequest::get()
                    .uri("/agents")
                    .insert_header(host)
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "no-cors")),
                false,
            ),
            (
                TestRequest::get()
                    .uri("/")
                    .insert_header(host)
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "navigate")),
                true,
            ),
            (
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(host)
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "navigate")),
                false,
            ),
            (
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(host)
                    .insert_header(("Origin", "http://127.0.0.1:8080"))
                    .insert_header(("Sec-Fetch-Site", "same-origin")),
                true,
            ),
            (
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(("Host", "localhost"))
                    .insert_header(("Origin", "http://localhost:80")),
                true,
            ),
            (TestRequest::post().uri("/agents/a/stop").insert_header(host), true),
        ];
        for (i, (req, allowed)) in cases.into_iter().enumerate() {
            let outcome = judge(&g, req, Transport::Tcp);
            assert_eq!(outcome.is_ok(), allowed, "case {i}: {outcome:?}");
        }
    }

    #[test]
    fn header_edge_cases_no_browser_sends_are_judged_by_every_value() {
        let g = gate(None, true, true);
        let host = ("Host", "127.0.0.1:8080");
        let get = |uri: &str| TestRequest::get().uri(uri).insert_header(host);
        // (what, request, let through)
        let cases: Vec<(&str, TestRequest, bool)> = vec![
            (
                "a second Origin from another site",
                TestRequest::post()
                    .uri("/agents/a/stop")
                    .insert_header(host)
                    .append_header(("Origin", "http://127.0.0.1:8080"))
                    .append_header(("Origin", "http://evil.test")),
                false,
            ),
            (
                "a second Sec-Fetch-Site: cross-site",
                get("/agents")
                    .append_header(("Sec-Fetch-Site", "same-origin"))
                    .append_header(("Sec-Fetch-Site", "cross-site")),
                false,
            ),
            (
                "an unknown Sec-Fetch-Site",
                get("/agents").insert_header(("Sec-Fetch-Site", "sideways")),
                false,
            ),
            (
                "a bracketed address with a name after it",
                TestRequest::get()
                    .uri("/agents")
                    .insert_header(("Host", "[::1]evil.test")),
                false,
            ),
            (
                "a port that is not a number",
                TestRequest::get()
                    .uri("/agents")
                    .insert_header(("Host", "127.0.0.1:evil.test")),
                false,
            ),
            (
                "a bracketed address with a port",
                TestRequest::get().uri("/agents").insert_header(("Host", "[::1]:8080")),
                true,
            ),
            (
                "an absolute-form target naming another host",
                get("http://evil.test/agents"),
                false,
            ),
            (
                "an absolute-form target naming this one",
                get("http://127.0.0.1:8080/agents"),
                true,
            ),
            (
                "an iframe of /metrics from another site (a navigation)",
                get("/metrics")
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "navigate"))
                    .insert_header(("Sec-Fetch-Dest", "iframe")),
                false,
            ),
            (
                "an agent page navigated to from another site",
                get("/agents?limit=10000")
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "navigate")),
                false,
            ),
            (
                "a link from another site to the status page",
                get("/")
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .insert_header(("Sec-Fetch-Mode", "navigate")),
                true,
            ),
            (
                "navigate, then a second Sec-Fetch-Mode",
                get("/")
                    .insert_header(("Sec-Fetch-Site", "cross-site"))
                    .append_header(("Sec-Fetch-Mode", "navigate"))
                    .append_header(("Sec-Fetch-Mode", "no-cors")),
                false,
            ),
        ];
        for (what, req, allowed) in cases {
            let outcome = judge(&g, req, Transport::Tcp);
            assert_eq!(outcome.is_ok(), allowed, "{what}: {outcome:?}");
        }
        // `*example.com` means the names under example.com, never evilexample.com.
        let rules = HostRules::new(&["*example.com".into()], None);
        assert!(rules.allows("a.example.com"));
        assert!(!rules.allows("evilexample.com"));
        assert!(!HostRules::new(&["*.example.com".into()], None).allows("evilexample.com"));
    }

    #[test]
    fn admin_bodies_must_be_json_heartbeats_need_not() {
        let g = gate(None, true, true);
        let with = |ct: Option<&str>, uri: &str| {
            let mut req = TestRequest::post().uri(uri).insert_header(("Content-Length", "2"));
            if let Some(ct) = ct {
                req = req.insert_header(("Content-Type", ct));
            }
            judge(&g, req, Transport::Tcp)
        };
        assert_eq!(with(None, "/agents"), Err(AuthError::NotJson));
        assert_eq!(with(Some("text/plain"), "/agents"), Err(AuthError::NotJson));
        assert_eq!(
            with(Some("application/x-www-form-urlencoded"), "/agents"),
            Err(AuthError::NotJson)
        );
        assert!(with(Some("application/json; charset=utf-8"), "/agents").is_ok());
        assert!(with(Some("application/merge-patch+json"), "/agents/a").is_ok());
        assert!(
            with(Some("text/plain"), "/heartbeat").is_err(),
            "needs the ingest token"
        );
        let ingest = TestRequest::post()
            .uri("/heartbeat")
            .insert_header(("Content-Type", "text/plain"))
            .insert_header(("Content-Length", "2"))
            .insert_header(("Authorization", "Bearer ingest"));
        assert!(judge(&g, ingest, Transport::Tcp).is_ok());
        // Bodiless calls need no type.
        assert!(judge(&g, TestRequest::post().uri("/agents/a/stop"), Transport::Tcp).is_ok());
    }

    #[test]
    fn the_credentials_matrix() {
        let stop = || TestRequest::post().uri("/agents/a/stop");
        let bearer = |t: &str| stop().insert_header(("Authorization", format!("Bearer {t}")));
        let with_token = gate(Some("s3cret"), false, true);
        assert_eq!(
            judge(&with_token, stop(), Transport::Tcp),
            Err(AuthError::MissingAdminToken)
        );
        assert_eq!(
            judge(&with_token, bearer("nope"), Transport::Tcp),
            Err(AuthError::WrongAdminToken)
        );
        let basic = stop().insert_header(("Authorization", "Basic s3cret"));
        assert_eq!(
            judge(&with_token, basic, Transport::Tcp),
            Err(AuthError::MissingAdminToken)
        );
        let lower = stop().insert_header(("Authorization", "bearer s3cret"));
        assert_eq!(
            judge(&with_token, lower, Transport::Tls),
            Ok(Caller {
                admin: true,
                may_run_programs: true
            })
        );

        // No token: loopback only when loopback_admin is on, and never runs programs.
        assert_eq!(
            judge(&gate(None, false, true), stop(), Transport::Tcp),
            Err(AuthError::NoAdminToken)
        );
        assert_eq!(
            judge(&gate(None, true, false), stop(), Transport::Tcp),
            Err(AuthError::NoAdminToken)
        );
        assert_eq!(
            judge(&gate(None, true, true), stop(), Transport::Tcp),
            Ok(Caller {
                admin: true,
                may_run_programs: false
            })
        );
        // The control socket needs nothing.
        assert_eq!(
            judge(&gate(Some("s3cret"), false, false), stop(), Transport::ControlSocket),
            Ok(Caller {
                admin: true,
                may_run_programs: true
            })
        );
        // The log is an admin read, even percent-encoded; other reads are open.
        let log = TestRequest::get().uri("/agents/a/%6Cog");
        assert_eq!(
            judge(&gate(None, false, true), log, Transport::Tcp),
            Err(AuthError::NoAdminToken)
        );
        assert!(judge(
            &gate(None, false, true),
            TestRequest::get().uri("/agents/a"),
            Transport::Tcp
        )
        .is_ok());
        // The heartbeat: its own token.
        let heartbeat = TestRequest::post().uri("/heartbeat");
        assert_eq!(
            judge(&with_token, heartbeat, Transport::Tcp),
            Err(AuthError::MissingIngestToken)
        );
    }

    #[test]
    fn methods_no_route_takes_are_left_to_the_router() {
        for (method, path) in [
            ("PUT", "/heartbeat/stats"),
            ("DELETE", "/heartbeat"),
            ("POST", "/agents/a"),
            ("PUT", "/agents/a/stop"),
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(required_access(&method, path), Access::Open, "{method} {path}");
        }
        assert_eq!(required_access(&Method::DELETE, "/agents/a"), Access::Admin);
        assert_eq!(required_access(&Method::POST, "/heartbeat"), Access::Ingest);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
