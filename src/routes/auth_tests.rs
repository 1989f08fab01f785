//! Unit tests of auth.

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
