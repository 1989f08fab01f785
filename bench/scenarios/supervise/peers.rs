//! The four supervisors of the `supervise` scenario, each running the same [`PROGRAMS`]
//! `sleep` programs with their output logged, started as a child of the bench (never as the
//! system's init) on a service tree built in a temp dir:
//!
//! - heartbeatd: one `[[agents]]` entry with a `command` per program (a keeper each, which
//!   also writes the program's log), through the shared harness;
//! - supervisord (Debian's `supervisor`): one `[program:…]` each, logs written by supervisord;
//! - s6 (Debian's `s6`): `s6-svscan` on a scan directory, one service directory per program
//!   with a `log/` service running `s6-log` (so s6-svscan starts two `s6-supervise` per
//!   program, one for the program and one for its `s6-log`: three helpers per program);
//! - runit (Debian's `runit`): `runsvdir -P` on a service directory, one `runsv` per program,
//!   which also runs the `log/` service, `svlogd` (two helpers per program).
//!
//! s6's and runit's `run` scripts are `/bin/sh`, which sets the marker and execs `sleep`
//! (their usual form); heartbeatd and supervisord exec `sleep` directly. Each knows how to
//! say, in its own words, how many programs run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::procs::{self, LOGGER, MARKER, TREE};
use crate::measure::{get_json, Daemon};

pub(crate) const PROGRAMS: usize = 500;
const SLEEP: &str = "/bin/sleep";
/// How long a supervisor may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(120);

/// The supervisors, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Heartbeatd,
    Supervisord,
    S6,
    Runit,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Heartbeatd, Kind::Supervisord, Kind::S6, Kind::Runit];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Heartbeatd => "heartbeatd",
            Kind::Supervisord => "supervisord",
            Kind::S6 => "s6",
            Kind::Runit => "runit",
        }
    }

    /// The program that must be installed (`make bench-tools` installs the peers).
    fn needs(self) -> Option<&'static str> {
        match self {
            Kind::Heartbeatd => None,
            Kind::Supervisord => Some("supervisord"),
            Kind::S6 => Some("s6-svscan"),
            Kind::Runit => Some("runsvdir"),
        }
    }

    pub(crate) fn installed(self) -> bool {
        self.needs().is_none_or(|program| {
            Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// A supervisor of this kind with its tree built (not started yet); `prefix` names its
    /// markers.
    pub(crate) fn prepare(self, prefix: &str) -> Box<dyn Supervisor> {
        let dir = tempfile::tempdir().expect("a temp dir");
        match self {
            Kind::Heartbeatd => Box::new(Heartbeatd::new(dir, prefix, Some(0), "")),
            Kind::Supervisord => Box::new(Peer::supervisord(dir, prefix)),
            Kind::S6 => Box::new(Peer::s6(dir, prefix)),
            Kind::Runit => Box::new(Peer::runit(dir, prefix)),
        }
    }
}

/// A supervisor of [`PROGRAMS`] programs, started and stopped as its users do.
pub(crate) trait Supervisor {
    fn kind(&self) -> Kind;
    /// The prefix of its markers (see [`procs`]).
    fn prefix(&self) -> &str;
    /// Starts it on its tree (again, after a stop or a kill).
    fn start(&mut self);
    /// The pid of the supervisor itself (the scanner, the daemon), while it runs.
    fn pid(&self) -> Option<u32>;
    /// How many programs it says are running.
    fn running(&self) -> usize;
    /// SIGKILL, and waits for its end.
    fn kill9(&mut self);
    /// Its own graceful stop (SIGTERM, as a service manager sends it), waiting for its exit;
    /// returns how long that took (s).
    fn stop(&mut self) -> f64;
}

/// heartbeatd through the shared harness, on a directory kept across its restarts.
pub(crate) struct Heartbeatd {
    prefix: String,
    dir: TempDir,
    config: String,
    pub(crate) daemon: Option<Daemon>,
}

impl Heartbeatd {
    /// `backoff_ms`: `restart_backoff_ms` of every program (None: the default); `extra`: more
    /// configuration (e.g. the load tool's agents).
    pub(crate) fn new(dir: TempDir, prefix: &str, backoff_ms: Option<u64>, extra: &str) -> Self {
        let mut config = String::from("log_level = \"warn\"\nshutdown_timeout_s = 60\n");
        config.push_str(extra);
        for n in 0..PROGRAMS {
            config.push_str(&format!(
                "[[agents]]\nid = \"p{n}\"\ncommand = [\"{SLEEP}\", \"100000\"]\nenv = {{ {MARKER} = \"{prefix}{n:04}\" }}\n"
            ));
            if let Some(ms) = backoff_ms {
                config.push_str(&format!("restart_backoff_ms = {ms}\n"));
            }
        }
        Self {
            prefix: prefix.to_owned(),
            dir,
            config,
            daemon: None,
        }
    }
}

impl Supervisor for Heartbeatd {
    fn kind(&self) -> Kind {
        Kind::Heartbeatd
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn start(&mut self) {
        self.daemon = Some(Daemon::start_with_env(
            self.dir.path(),
            &self.config,
            &[(TREE, &self.prefix)],
        ));
    }
    fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }
    fn running(&self) -> usize {
        let Some(daemon) = &self.daemon else { return 0 };
        get_json(daemon.port, "/agents?limit=10000")
            .and_then(|page| {
                page["agents"]
                    .as_array()
                    .map(|a| a.iter().filter(|agent| agent["process"]["state"] == "running").count())
            })
            .unwrap_or(0)
    }
    fn kill9(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop_with("KILL");
        }
    }
    fn stop(&mut self) -> f64 {
        let Some(mut daemon) = self.daemon.take() else {
            return 0.0;
        };
        daemon.stop_timed().0.as_secs_f64()
    }
}

impl Drop for Heartbeatd {
    fn drop(&mut self) {
        drop(self.daemon.take());
        procs::kill_everything(&self.prefix);
    }
}

/// How a peer says how many programs run.
enum Word {
    /// `supervisorctl status`: lines saying RUNNING.
    Supervisorctl(PathBuf),
    /// Each service's `supervise/status` (s6-svstat's source: a 35-byte record whose bytes
    /// 24..32 are the pid, big-endian, 0 when down), counted when that pid is alive.
    S6Status(PathBuf),
    /// Each service's `supervise/stat`, the human-readable status runsv writes (`run`).
    RunitStat(PathBuf),
}

/// A peer supervisor run as a child of the bench.
pub(crate) struct Peer {
    kind: Kind,
    prefix: String,
    dir: TempDir,
    command: Vec<String>,
    word: Word,
    child: Option<Child>,
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).expect("write a run script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod a run script");
}

/// `run` of an s6 or runit service: stderr to the log too, the marker, then the program.
fn run_script(prefix: &str, n: usize) -> String {
    format!("#!/bin/sh\nexec 2>&1\nexport {MARKER}={prefix}{n:04}\nexec {SLEEP} 100000\n")
}

impl Peer {
    fn supervisord(dir: TempDir, prefix: &str) -> Self {
        let d = dir.path().display().to_string();
        fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let mut conf = format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}/logs\nminfds=8192\nloglevel=warn\n\
             [unix_http_server]\nfile={d}/supervisor.sock\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
        );
        for n in 0..PROGRAMS {
            conf.push_str(&format!(
                "[program:p{n}]\ncommand={SLEEP} 100000\nenvironment={MARKER}=\"{prefix}{n:04}\"\nautorestart=true\nstdout_logfile={d}/logs/p{n}.log\nredirect_stderr=true\n"
            ));
        }
        let config = dir.path().join("supervisord.conf");
        fs::write(&config, conf).expect("supervisord.conf");
        Self {
            kind: Kind::Supervisord,
            prefix: prefix.to_owned(),
            command: vec!["supervisord".into(), "-c".into(), config.display().to_string()],
            word: Word::Supervisorctl(config),
            dir,
            child: None,
        }
    }

    fn s6(dir: TempDir, prefix: &str) -> Self {
        let scan = dir.path().join("scan");
        for n in 0..PROGRAMS {
            let service = scan.join(format!("p{n}"));
            let logs = dir.path().join("logs").join(format!("p{n}"));
            fs::create_dir_all(service.join("log")).expect("service dir");
            fs::create_dir_all(&logs).expect("log dir");
            write_script(&service.join("run"), &run_script(prefix, n));
            write_script(
                &service.join("log/run"),
                &format!(
                    "#!/bin/sh\nexport {LOGGER}={prefix}{n:04}\nexec s6-log n2 s1000000 {}\n",
                    logs.display()
                ),
            );
        }
        Self {
            kind: Kind::S6,
            prefix: prefix.to_owned(),
            // Room for two s6-supervise per program.
            command: vec![
                "s6-svscan".into(),
                "-c".into(),
                (4 * PROGRAMS).to_string(),
                scan.display().to_string(),
            ],
            word: Word::S6Status(scan),
            dir,
            child: None,
        }
    }

    fn runit(dir: TempDir, prefix: &str) -> Self {
        let services = dir.path().join("service");
        for n in 0..PROGRAMS {
            let service = services.join(format!("p{n}"));
            let logs = dir.path().join("logs").join(format!("p{n}"));
            fs::create_dir_all(service.join("log")).expect("service dir");
            fs::create_dir_all(&logs).expect("log dir");
            write_script(&service.join("run"), &run_script(prefix, n));
            write_script(
                &service.join("log/run"),
                &format!(
                    "#!/bin/sh\nexport {LOGGER}={prefix}{n:04}\nexec svlogd {}\n",
                    logs.display()
                ),
            );
        }
        Self {
            kind: Kind::Runit,
            prefix: prefix.to_owned(),
            // -P: each runsv in a session of its own, as Debian's runit service runs it.
            command: vec!["runsvdir".into(), "-P".into(), services.display().to_string()],
            word: Word::RunitStat(services),
            dir,
            child: None,
        }
    }

    fn reap(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else { return true };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Supervisor for Peer {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("supervisor.log"))
            .expect("supervisor.log");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .env(TREE, &self.prefix)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (make bench-tools installs it): {e}", self.command[0]));
        self.child = Some(child);
    }
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    fn running(&self) -> usize {
        match &self.word {
            Word::Supervisorctl(config) => Command::new("supervisorctl")
                .arg("-c")
                .arg(config)
                .arg("status")
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| l.contains("RUNNING"))
                        .count()
                })
                .unwrap_or(0),
            Word::S6Status(scan) => (0..PROGRAMS)
                .filter(|n| {
                    fs::read(scan.join(format!("p{n}/supervise/status"))).is_ok_and(|status| {
                        status.len() >= 32 && {
                            let pid = u64::from_be_bytes(status[24..32].try_into().unwrap_or_default());
                            pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
                        }
                    })
                })
                .count(),
            Word::RunitStat(services) => (0..PROGRAMS)
                .filter(|n| {
                    fs::read_to_string(services.join(format!("p{n}/supervise/stat"))).is_ok_and(|s| s.trim() == "run")
                })
                .count(),
        }
    }
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    fn stop(&mut self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        let started = Instant::now();
        procs::signal(pid, libc::SIGTERM);
        if !self.reap(STOP_WITHIN) {
            eprintln!(
                "supervise: {} did not exit within {STOP_WITHIN:?} of SIGTERM: killed",
                self.kind.name()
            );
            self.kill9();
        }
        started.elapsed().as_secs_f64()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill9();
        procs::kill_everything(&self.prefix);
    }
}
