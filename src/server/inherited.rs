//! Listening sockets heartbeatd is handed instead of binding them itself:
//!
//! - by systemd's socket activation (`heartbeatd.socket`): `LISTEN_PID` names this process
//!   and `LISTEN_FDS` counts the descriptors from 3 on (sd_listen_fds(3)). systemd keeps the
//!   socket open while heartbeatd restarts, so connections made meanwhile wait in the kernel's
//!   queue instead of being refused;
//! - by the heartbeatd that started this one for an upgrade (see [`crate::upgrade`]):
//!   `HEARTBEATD_LISTEN_FDS=tcp=N,control=M`, the same sockets the old process served, so
//!   not one connection is refused during the hand-over.
//!
//! Each descriptor is checked before it is used: a stream socket that listens, of a family
//! heartbeatd serves (IPv4 or IPv6 for HTTP, a Unix socket for the control socket). A Unix
//! socket is the control socket, whose file mode is its only authority (it needs no token),
//! so one that anyone but heartbeatd's user could connect to is refused. The variables are
//! removed once read and every descriptor taken is made close-on-exec, so neither a keeper nor
//! a supervised program inherits them.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// systemd's first passed descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// The most descriptors taken from `LISTEN_FDS`: heartbeatd serves one TCP socket and one
/// control socket; a larger count is a mistake in the socket unit.
const MAX_LISTEN_FDS: usize = 8;
/// The variable an upgrading heartbeatd passes its sockets in.
pub const UPGRADE_VARIABLE: &str = "HEARTBEATD_LISTEN_FDS";
/// The part of [`UPGRADE_VARIABLE`] that says systemd holds the TCP socket too.
pub const HELD_BY_SYSTEMD: &str = "tcp_owner=systemd";
/// systemd's variables (sd_listen_fds(3)).
const SYSTEMD_VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Who handed the sockets over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nothing was inherited: heartbeatd binds its own sockets.
    None,
    /// systemd socket activation.
    Systemd,
    /// The previous heartbeatd, during an upgrade.
    Upgrade,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Systemd => "systemd socket activation",
            Self::Upgrade => "the previous heartbeatd (upgrade)",
        }
    }
}

/// The sockets handed over, if any.
#[derive(Debug)]
pub struct Inherited {
    pub source: Source,
    /// Serves HTTP (or HTTPS) in place of binding `http_bind:http_port`.
    pub tcp: Option<TcpListener>,
    /// systemd holds the TCP socket too (socket activation, possibly through upgrades): it
    /// outlives this process, and connections wait on it for the next one.
    pub tcp_held_by_systemd: bool,
    /// Serves as the control socket, in place of binding `control_socket`.
    pub control: Option<(UnixListener, PathBuf)>,
}

/// Why the handed-over sockets cannot be used (exit code 2: the unit or the launcher is wrong).
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("{variable}={value:?} is not what heartbeatd understands ({expected})")]
    Malformed {
        variable: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("descriptor {fd} handed over in {variable} is not a listening stream socket ({reason}). Check ListenStream= in the socket unit")]
    NotAListener {
        fd: RawFd,
        variable: &'static str,
        reason: String,
    },
    #[error("{variable} hands over two {kind} sockets (descriptors {first} and {second}); heartbeatd serves one. Keep one ListenStream= of that kind in the socket unit")]
    Twice {
        variable: &'static str,
        kind: &'static str,
        first: RawFd,
        second: RawFd,
    },
    #[error("the Unix socket handed over ({path}) can be connected to by other users (mode {mode:o}, owner uid {uid}); it would give them the admin API without a token. Set SocketMode=0600 (and SocketUser= heartbeatd's user) in the socket unit")]
    ControlOpenToOthers { path: PathBuf, mode: u32, uid: u32 },
}

impl Inherited {
    fn none() -> Self {
        Self {
            source: Source::None,
            tcp: None,
            tcp_held_by_systemd: false,
            control: None,
        }
    }

    /// Takes the sockets named by the environment and removes the variables. Call it before
    /// any other thread starts (it edits the environment).
    pub fn take_from_env() -> Result<Self, InheritError> {
        let upgrade = std::env::var(UPGRADE_VARIABLE).ok();
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        std::env::remove_var(UPGRADE_VARIABLE);
        for name in SYSTEMD_VARIABLES {
            std::env::remove_var(name);
        }
        if let Some(value) = upgrade {
            return Self::from_upgrade(&value);
        }
        match (pid, count) {
            // sd_listen_fds: the variables are for this process only (a child that inherited
            // them from a socket-activated parent must not take the parent's descriptors).
            (Some(pid), Some(count)) if pid.trim().parse::<u32>().ok() == Some(std::process::id()) => {
                Self::from_systemd(&count)
            }
            _ => Ok(Self::none()),
        }
    }

    fn from_systemd(count: &str) -> Result<Self, InheritError> {
        let malformed = || InheritError::Malformed {
            variable: "LISTEN_FDS",
            value: count.to_owned(),
            expected: "a count of descriptors from 1 to 8",
        };
        let count: usize = count.trim().parse().map_err(|_| malformed())?;
        if count > MAX_LISTEN_FDS {
            return Err(malformed());
        }
        let fds = (0..count).map(|i| LISTEN_FDS_START + i as RawFd);
        let mut inherited = Self::classify(Source::Systemd, "LISTEN_FDS", fds)?;
        inherited.tcp_held_by_systemd = inherited.tcp.is_some();
        Ok(inherited)
    }

    fn from_upgrade(value: &str) -> Result<Self, InheritError> {
        let malformed = || InheritError::Malformed {
            variable: UPGRADE_VARIABLE,
            value: value.to_owned(),
            expected: "tcp=FD,control=FD, either one or both, and tcp_owner=systemd",
        };
        let mut fds = Vec::new();
        let mut held_by_systemd = false;
        for part in value.split(',').filter(|p| !p.is_empty()) {
            if part == HELD_BY_SYSTEMD {
                held_by_systemd = true;
                continue;
            }
            let (_role, fd) = part.split_once('=').ok_or_else(malformed)?;
            // The role is informative: each socket's family says what it is.
            let fd: RawFd = fd.parse().map_err(|_| malformed())?;
            if fd < LISTEN_FDS_START || fds.contains(&fd) || fds.len() >= MAX_LISTEN_FDS {
                return Err(malformed());
            }
            fds.push(fd);
        }
        let mut inherited = Self::classify(Source::Upgrade, UPGRADE_VARIABLE, fds.into_iter())?;
        inherited.tcp_held_by_systemd = held_by_systemd && inherited.tcp.is_some();
        Ok(inherited)
    }

    /// Checks each descriptor and sorts it into TCP or control.
    fn classify(
        source: Source,
        variable: &'static str,
        fds: impl Iterator<Item = RawFd>,
    ) -> Result<Self, InheritError> {
        let mut inherited = Self { source, ..Self::none() };
        let mut tcp_fd = None;
        let mut control_fd = None;
        for fd in fds {
            let not_a_listener = |reason: String| InheritError::NotAListener { fd, variable, reason };
            let family = listening_stream_family(fd).map_err(|e| not_a_listener(e.to_string()))?;
            // From here on the descriptor is ours; keepers and programs must not inherit it.
            set_cloexec(fd).map_err(|e| not_a_listener(e.to_string()))?;
            match family {
                libc::AF_INET | libc::AF_INET6 => {
                    if let Some(first) = tcp_fd {
                        return Err(InheritError::Twice {
                            variable,
                            kind: "TCP",
                            first,
                            second: fd,
                        });
                    }
                    tcp_fd = Some(fd);
                    // SAFETY: fd is an open listening TCP socket nobody else in this process owns.
                    inherited.tcp = Some(unsafe { TcpListener::from_raw_fd(fd) });
                }
                libc::AF_UNIX => {
                    if let Some(first) = control_fd {
                        return Err(InheritError::Twice {
                            variable,
                            kind: "Unix",
                            first,
                            second: fd,
                        });
                    }
                    control_fd = Some(fd);
                    // SAFETY: as above, a listening Unix stream socket.
                    let listener = unsafe { UnixListener::from_raw_fd(fd) };
                    let path = private_socket_path(&listener)?;
                    inherited.control = Some((listener, path));
                }
                other => return Err(not_a_listener(format!("address family {other}"))),
            }
        }
        Ok(inherited)
    }
}

/// The family of `fd` if it is a listening stream socket.
fn listening_stream_family(fd: RawFd) -> io::Result<libc::c_int> {
    let int_option = |level, name| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are valid out-pointers of the sizes given.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if int_option(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(io::Error::other("not a stream socket"));
    }
    if int_option(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err(io::Error::other("not listening"));
    }
    int_option(libc::SOL_SOCKET, libc::SO_DOMAIN)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were handed; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The path of a handed-over Unix socket, if only heartbeatd's user can connect to it: the
/// socket file is 0600 (or tighter) and this user's, or it lives where nobody else can reach
/// it. An abstract or unnamed socket has no mode and is refused.
fn private_socket_path(listener: &UnixListener) -> Result<PathBuf, InheritError> {
    let refused = |path: PathBuf, mode: u32, uid: u32| InheritError::ControlOpenToOthers { path, mode, uid };
    let path = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(PathBuf::from))
        .ok_or_else(|| refused(PathBuf::from("(no path)"), 0o777, 0))?;
    let meta = std::fs::metadata(&path).map_err(|_| refused(path.clone(), 0o777, 0))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_socket() || meta.mode() & 0o077 != 0 || meta.uid() != me {
        return Err(refused(path, meta.mode() & 0o7777, meta.uid()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_upgrade_hands_over_a_tcp_and_a_control_socket_each_checked() {
        let dir = tempfile::tempdir().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let path = dir.path().join("c.sock");
        let unix = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let value = format!("tcp={},control={}", tcp.into_raw_fd(), unix.into_raw_fd());

        let inherited = Inherited::from_upgrade(&format!("{value},{HELD_BY_SYSTEMD}")).unwrap();
        assert_eq!(inherited.source, Source::Upgrade);
        assert!(inherited.tcp_held_by_systemd);
        assert_eq!(inherited.tcp.unwrap().local_addr().unwrap(), addr);
        assert_eq!(inherited.control.unwrap().1, path);
    }

    #[test]
    fn a_control_socket_others_can_connect_to_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.sock");
        let unix = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let value = format!("control={}", unix.into_raw_fd());
        assert!(matches!(
            Inherited::from_upgrade(&value),
            Err(InheritError::ControlOpenToOthers { mode: 0o666, .. })
        ));
    }

    #[test]
    fn what_is_not_a_listening_stream_socket_is_refused() {
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let not_listening = socket_not_listening();
        let file = std::fs::File::open("/dev/null").unwrap();
        for fd in [connected.into_raw_fd(), not_listening, file.into_raw_fd()] {
            let result = Inherited::from_upgrade(&format!("tcp={fd}"));
            assert!(matches!(result, Err(InheritError::NotAListener { .. })), "{result:?}");
        }
    }

    #[test]
    fn malformed_values_and_two_of_a_kind_are_refused() {
        for value in ["tcp", "tcp=x", "tcp=1", "tcp=7,tcp=7"] {
            assert!(
                matches!(Inherited::from_upgrade(value), Err(InheritError::Malformed { .. })),
                "{value}"
            );
        }
        for count in ["x", "-1", "9"] {
            assert!(matches!(
                Inherited::from_systemd(count),
                Err(InheritError::Malformed { .. })
            ));
        }
        let a = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        let b = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        assert!(matches!(
            Inherited::from_upgrade(&format!("tcp={a},tcp={b}")),
            Err(InheritError::Twice { kind: "TCP", .. })
        ));
    }

    fn socket_not_listening() -> RawFd {
        // SAFETY: a fresh socket, returned as an owned descriptor.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }
    }
}
