//! Notices without polling that `registry.json` is gone (an operator removed it, or all of
//! `data_dir`): a thread blocks on an inotify watch of `data_dir`, so an idle heartbeatd never
//! wakes up for this. The Registry is told, and checks a second later ([`FILE_CHECK_DELAY`]),
//! when a `rm -rf` in progress is over, then writes the file again from memory.
//!
//! While `data_dir` is missing, nothing can be watched: the thread then asks the Registry
//! every second, until `data_dir` is back (the Registry makes it again when it writes).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use actix::prelude::*;

use super::{Registry, REGISTRY_FILE};

/// How long after a removal the Registry looks: a `rm -rf` of `data_dir` is then done, and
/// the file written again does not make it fail (`Directory not empty`).
pub const FILE_CHECK_DELAY: Duration = Duration::from_secs(1);
/// While `data_dir` is missing, how often the Registry is asked to make it again.
const MISSING_DIR_RETRY: Duration = Duration::from_secs(1);

/// Asks the Registry to check `registry.json` after [`FILE_CHECK_DELAY`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckFileSoon;

/// Starts the watching thread for `dir` (once per Registry).
pub fn start(dir: PathBuf, registry: Addr<Registry>) -> io::Result<()> {
    thread::Builder::new()
        .name("registry-watch".into())
        .spawn(move || watch_forever(&dir, &registry))
        .map(drop)
}

fn watch_forever(dir: &Path, registry: &Addr<Registry>) {
    loop {
        if !registry.connected() {
            return;
        }
        match Watch::new(dir) {
            Ok(watch) => {
                // Until the directory itself goes (its watch then ends).
                while let Ok(gone) = watch.wait() {
                    if gone.file || gone.dir {
                        registry.do_send(CheckFileSoon);
                    }
                    if gone.dir {
                        break;
                    }
                }
            }
            Err(_) => {
                registry.do_send(CheckFileSoon);
                thread::sleep(MISSING_DIR_RETRY);
            }
        }
    }
}

/// What one read of the watch found.
#[derive(Debug, Default)]
struct Gone {
    /// `registry.json` was removed or moved away.
    file: bool,
    /// `data_dir` was removed or moved: the watch is over.
    dir: bool,
}

/// An inotify watch of one directory.
struct Watch {
    fd: i32,
}

impl Watch {
    fn new(dir: &Path) -> io::Result<Self> {
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: inotify_init1 takes flags only; the descriptor is owned by Watch.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let watch = Self { fd };
        let mask = libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
        // SAFETY: path is a valid C string.
        if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(watch)
    }

    /// Blocks until events arrive.
    fn wait(&self) -> io::Result<Gone> {
        let mut buf = [0u8; 4096];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Gone::default())
            } else {
                Err(e)
            };
        }
        Ok(parse_events(&buf[..n as usize]))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.fd) };
    }
}

/// Reads `struct inotify_event` records: `wd`, `mask`, `cookie`, `len`, then `len` bytes of
/// NUL-padded name.
fn parse_events(mut bytes: &[u8]) -> Gone {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut gone = Gone::default();
    while bytes.len() >= HEADER {
        let field = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let (mask, len) = (field(4), field(12) as usize);
        let name_bytes = bytes.get(HEADER..HEADER + len).unwrap_or_default();
        let name = name_bytes.split(|b| *b == 0).next().unwrap_or_default();
        if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 && name == REGISTRY_FILE.as_bytes() {
            gone.file = true;
        }
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            gone.dir = true;
        }
        bytes = bytes.get(HEADER + len..).unwrap_or_default();
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_the_file_or_the_directory_is_seen_and_other_names_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::remove_file(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join(REGISTRY_FILE), b"{}").unwrap();
        std::fs::remove_file(dir.path().join(REGISTRY_FILE)).unwrap();
        let gone = watch.wait().unwrap();
        assert!(gone.file, "{gone:?}");
        assert!(!gone.dir);

        std::fs::remove_dir(dir.path()).unwrap();
        let mut seen_dir = false;
        for _ in 0..3 {
            seen_dir |= watch.wait().unwrap().dir;
            if seen_dir {
                break;
            }
        }
        assert!(seen_dir);
    }
}
