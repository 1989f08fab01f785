//! Who is at the other end of a Unix socket (`SO_PEERCRED`): the check heartbeatd makes of a
//! keeper it adopts, and `heartbeatd ctl` of the heartbeatd it talks to.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The pid, uid and gid the kernel recorded for the other end of `stream` when it connected.
pub fn peer_cred(stream: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open.
    let done = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}
