//! A test agent for the supervision tests: a real program that heartbeatd runs. It posts a
//! heartbeat every 200 ms to `TEST_AGENT_URL` as `TEST_AGENT_ID`, and behaves as
//! `TEST_AGENT_MODE` says (modes combine with `,`):
//!
//! | mode | what it does |
//! |---|---|
//! | `crash:CODE:MS` | exits with CODE after MS milliseconds |
//! | `hang:MS` | stops heartbeating after MS milliseconds, but stays alive |
//! | `ignore-term` | ignores SIGTERM |
//! | `grandchild` | double-forks a process that calls setsid() and sleeps: it leaves the process group and the session, and its parent is gone |
//! | `grow:MIB_PER_S` | grows its resident memory by that much each second |
//! | `report-pid:PID` | reports PID in its heartbeats instead of its own |
//! | `chatty:BYTES` | writes numbered 100-byte lines to stdout until BYTES are written |
//! | `quiet` | never heartbeats |
//! | `quiet-after-first:PATH` | the first run (PATH does not exist yet: it creates it) behaves as the other modes say; every later run never heartbeats |
//! | `prefork:N:MIB` | fills MIB MiB of memory, then forks N children that share it untouched and sleep (a prefork server: RSS counts it N + 1 times, PSS once) |
//! | `busy-children:MS` | keeps a core busy with short-lived children, one after the other, each spinning for MS milliseconds; it waits for each |
//! | `orphan-busy-children:MS` | the same, but each busy child is orphaned at once (its parent exits), so the keeper reaps it |
//! | `fork-bomb` | forks without end, every process (run it under a process limit) |
//! | `ticker:MS` | writes a numbered line `tick N` to stdout every MS milliseconds |
//!
//! Its whole output goes to stdout/stderr, which heartbeatd captures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn post(url: &str, body: &str) {
    let Some(rest) = url.strip_prefix("http://") else {
        return;
    };
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let Ok(mut stream) = TcpStream::connect(host) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

fn main() {
    let mode = std::env::var("TEST_AGENT_MODE").unwrap_or_default();
    if mode == "double-fork" {
        // The middle process: starts the sleeper and exits at once, so the sleeper is
        // orphaned and re-parented (to the nearest subreaper).
        let me = std::env::current_exe().unwrap();
        // Not waited for on purpose: this process exits so that the sleeper is orphaned.
        #[allow(clippy::zombie_processes)]
        Command::new(me)
            .env("TEST_AGENT_MODE", "setsid-sleeper")
            .spawn()
            .unwrap();
        return;
    }
    if mode == "setsid-sleeper" {
        // The grandchild: leave the agent's session and process group, then wait forever.
        // SAFETY: setsid has no preconditions.
        unsafe { libc::setsid() };
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if mode == "fork-bomb" {
        fork_bomb();
    }
    let url = std::env::var("TEST_AGENT_URL").unwrap_or_default();
    let id = std::env::var("TEST_AGENT_ID").unwrap_or_default();
    let mut crash: Option<(i32, Duration)> = None;
    let mut hang_after: Option<Duration> = None;
    let mut grow_mib = 0usize;
    let mut pid = std::process::id() as i64;
    let mut chatty = 0u64;
    let mut quiet = false;
    // Held until the end: the memory prefork children share.
    let mut _shared: Vec<u8> = Vec::new();
    for part in mode.split(',').filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(':').collect();
        match fields[0] {
            "crash" => {
                crash = Some((
                    fields[1].parse().unwrap(),
                    Duration::from_millis(fields[2].parse().unwrap()),
                ))
            }
            "hang" => hang_after = Some(Duration::from_millis(fields[1].parse().unwrap())),
            // SAFETY: ignoring a signal has no preconditions.
            "ignore-term" => unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            },
            "grandchild" => {
                let me = std::env::current_exe().unwrap();
                let mut middle = Command::new(me).env("TEST_AGENT_MODE", "double-fork").spawn().unwrap();
                middle.wait().unwrap();
            }
            "grow" => grow_mib = fields[1].parse().unwrap(),
            "report-pid" => pid = fields[1].parse().unwrap(),
            "chatty" => chatty = fields[1].parse().unwrap(),
            "quiet" => quiet = true,
            "quiet-after-first" => {
                let path = fields[1..].join(":");
                if std::path::Path::new(&path).exists() {
                    quiet = true;
                } else {
                    std::fs::write(&path, b"first run\n").unwrap();
                }
            }
            "prefork" => _shared = prefork(fields[1].parse().unwrap(), fields[2].parse().unwrap()),
            "busy-children" => busy_children(Duration::from_millis(fields[1].parse().unwrap()), false),
            "orphan-busy-children" => busy_children(Duration::from_millis(fields[1].parse().unwrap()), true),
            "ticker" => ticker(Duration::from_millis(fields[1].parse().unwrap())),
            other => panic!("unknown TEST_AGENT_MODE part {other:?}"),
        }
    }
    println!("test agent {id} started (pid {}), mode {mode:?}", std::process::id());
    let mut written = 0u64;
    let mut line = 0u64;
    while written < chatty {
        let text = format!("line {line:08} {}", "x".repeat(80));
        println!("{:<99}", text);
        written += 100;
        line += 1;
    }
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    let mut last_grow = Instant::now();
    loop {
        if let Some((code, after)) = crash {
            if started.elapsed() >= after {
                eprintln!("test agent {id} crashing with {code}");
                std::process::exit(code);
            }
        }
        let hanging = hang_after.is_some_and(|after| started.elapsed() >= after);
        if !quiet && !hanging {
            post(
                &url,
                &format!(r#"{{"agent_id":"{id}","pid":{pid},"status":"running","cpu":1.0,"memory":1}}"#),
            );
        }
        if grow_mib > 0 && last_grow.elapsed() >= Duration::from_millis(200) {
            last_grow = Instant::now();
            // A fifth of the per-second growth, touched so it is resident.
            hoard.push(vec![1u8; grow_mib * (1 << 20) / 5]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Forks without end: every process loops on fork; a refused fork waits 10 ms and tries again.
fn fork_bomb() -> ! {
    println!("test agent forking without end (pid {})", std::process::id());
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: single-threaded here; parent and child alike only loop on fork and sleep.
        if unsafe { libc::fork() } < 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Fills `mib` MiB (touched, so resident), then forks `children` that keep it untouched and
/// sleep. Returns the memory, which the caller keeps.
fn prefork(children: usize, mib: usize) -> Vec<u8> {
    let shared = vec![1u8; mib << 20];
    for _ in 0..children {
        // SAFETY: single-threaded here; the child only sleeps.
        if unsafe { libc::fork() } == 0 {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
    println!("test agent forked {children} children sharing {mib} MiB");
    shared
}

/// Spins for `time` of wall clock, then exits (in a forked child).
fn spin_and_exit(time: Duration) -> ! {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < time {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    // SAFETY: _exit ends this forked child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// A thread that keeps a core busy with short-lived children: each spins for `each`, then
/// ends. `orphaned`: each is started through a middle process that exits at once, so the
/// busy child is re-parented to the nearest subreaper (the keeper), which reaps it.
fn busy_children(each: Duration, orphaned: bool) {
    std::thread::spawn(move || loop {
        // SAFETY: the child only spins (or forks once more) and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if orphaned {
                // SAFETY: as above.
                if unsafe { libc::fork() } == 0 {
                    spin_and_exit(each);
                }
                // SAFETY: the middle process ends at once, leaving its child orphaned.
                unsafe { libc::_exit(0) }
            }
            spin_and_exit(each);
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        if orphaned || pid < 0 {
            // Nobody waits for the busy child: start the next one when it is about done.
            std::thread::sleep(each);
        }
    });
}

/// A thread that writes `tick N` every `every`.
fn ticker(every: Duration) {
    std::thread::spawn(move || {
        for n in 0u64.. {
            println!("tick {n}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(every);
        }
    });
}
