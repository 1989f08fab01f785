//! The start-up audit of `data_dir` ([`check`]): the first defence of [`super`].
//!
//! What it looks at, and at what cost (start-up with 100k agents must stay within seconds):
//! - every directory above `data_dir`, links resolved one by one (a handful of `lstat`s);
//! - `data_dir` and its subdirectories (one `lstat` each);
//! - heartbeatd's files directly in `data_dir` (`registry.json`, `registry.log`, …);
//! - every entry of `history/`, `events/`, `journal/` and `logs/`: one `statx` relative to the
//!   directory being read, because these files are not all opened at start-up. This walk runs
//!   on a thread of its own while the Store loads the agents' state ([`Audit::finish`] waits
//!   for it before anything is written): with 100k agents it is 0.1–0.4 s (more with a cold
//!   inode cache, since the old start-up never touched these inodes).
//!
//! `agents/` is not walked here: the Store opens every state file at start-up anyway, and
//! checks each with the `fstat` of that open ([`super::read_at_load`]) and each entry it does
//! not open with [`audit_entry`].
//!
//! Modes left by older versions (directories 0755, files 0644: readable by others, writable by
//! no one else) are tightened to the owner's bits only, once the whole audit has passed, and
//! counted for one INFO line. Anything writable by others, owned by another user, or a link is
//! refused.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::thread;

use super::refusal::Expected;
use super::{private_mode, Refusal, DIR_MODE, OPEN_TO_OTHERS};

/// The subdirectories heartbeatd keeps under `data_dir`.
pub(super) const SUBDIRS: [&str; 6] = ["agents", "history", "events", "journal", "logs", "run"];
/// The subdirectories whose every entry is audited here (see the module documentation).
const WALKED: [&str; 4] = ["history", "events", "journal", "logs"];
/// heartbeatd's files directly in `data_dir` (the names the Store, the Registry and the
/// Alerter use; a unit test holds them to those). Their temp files (`.registry.json.tmp-…`)
/// and damaged copies set aside (`registry.json.corrupt-…`) are audited too.
pub(super) const FILES: [&str; 5] = [
    "registry.json",
    "registry.log",
    "alerts.json",
    "checkpoint.json",
    super::lock::LOCK_FILE,
];
/// Links followed while resolving the directories above `data_dir`, at most (as the kernel's
/// own limit, ELOOP past it).
const MAX_LINKS: usize = 40;

/// What the audit tightened: readable by others before, private now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    pub files: usize,
    pub dirs: usize,
}

impl Tightened {
    pub fn total(&self) -> usize {
        self.files + self.dirs
    }

    pub fn add(&mut self, other: Tightened) {
        self.files += other.files;
        self.dirs += other.dirs;
    }
}

/// Why `data_dir` may not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Someone else owns or could write it, or a link is where heartbeatd expects its own.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// It cannot be read or created (not a directory, no permission, …).
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CheckError + 'a {
    move |source| match Refusal::of_io_error(&source) {
        Some(refusal) => CheckError::Refused(refusal.clone()),
        None => CheckError::Io {
            action,
            path: path.to_owned(),
            source,
        },
    }
}

/// What the audit found readable by others, tightened only once all of `data_dir` has passed
/// (a start the audit refuses changes none of these, and the start that follows reports what it
/// tightened).
#[derive(Default)]
struct ToTighten(Vec<(PathBuf, Metadata)>);

impl ToTighten {
    fn add(&mut self, path: &Path, meta: &Metadata) {
        if needs_tightening(meta) {
            self.0.push((path.to_owned(), meta.clone()));
        }
    }
}

/// An audit under way: what [`check`] found, and the walk of the subdirectories still running
/// on a thread of its own ([`Audit::finish`] waits for it).
pub struct Audit {
    to_tighten: ToTighten,
    walk: thread::JoinHandle<Result<ToTighten, CheckError>>,
}

impl Audit {
    /// Waits for the walk; on success, tightens what the whole audit found.
    pub fn finish(self) -> Result<Tightened, CheckError> {
        let walked = self.walk.join().unwrap_or_else(|_| {
            Err(CheckError::Io {
                action: "audit",
                path: PathBuf::new(),
                source: io::Error::other("the audit thread panicked"),
            })
        })?;
        let mut tightened = Tightened::default();
        for (path, meta) in self.to_tighten.0.iter().chain(&walked.0) {
            match tighten(path, meta, &mut tightened) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile (a temp file)
                other => other.map_err(io_error("change the mode of", path))?,
            }
        }
        Ok(tightened)
    }
}

/// Audits `data_dir` (creating it 0700 if it does not exist) before anything in it is read
/// (see the module documentation), and starts the walk of `history/`, `events/`, `journal/`
/// and `logs/` on a thread: their files are not read at start-up (the Store checks what it
/// reads with the `fstat` of its open), so the walk (0.1–0.4 s per 100k files, more with a
/// cold inode cache) runs beside the loading of the agents' state. Call [`Audit::finish`]
/// before anything writes to `data_dir` or runs an agent.
pub fn check(data_dir: &Path) -> Result<Audit, CheckError> {
    let mut to_tighten = ToTighten::default();
    let real = match resolve(data_dir)? {
        Some(real) => real,
        None => {
            // The directories above were audited as far as they exist; the rest is made here.
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(data_dir)
                .map_err(io_error("create", data_dir))?;
            resolve(data_dir)?.ok_or_else(|| CheckError::Io {
                action: "find",
                path: data_dir.to_owned(),
                source: io::ErrorKind::NotFound.into(),
            })?
        }
    };
    let meta = fs::symlink_metadata(&real).map_err(io_error("inspect", &real))?;
    if !meta.is_dir() {
        return Err(io_error("use", data_dir)(io::ErrorKind::NotADirectory.into()));
    }
    if let Some(refusal) = Refusal::of_data_dir(data_dir, &meta) {
        return Err(refusal.into());
    }
    to_tighten.add(&real, &meta);
    for name in SUBDIRS {
        let path = data_dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) => audit(&path, &meta, Expected::Dir, &mut to_tighten)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", &path)(e)),
        }
    }
    for entry in fs::read_dir(data_dir).map_err(io_error("list", data_dir))? {
        let entry = entry.map_err(io_error("list", data_dir))?;
        let name = entry.file_name();
        let Some(expected) = top_level_file(&name.to_string_lossy()) else {
            continue;
        };
        let path = entry.path();
        let meta = entry.metadata().map_err(io_error("inspect", &path))?;
        audit(&path, &meta, expected, &mut to_tighten)?;
    }
    let dir = data_dir.to_owned();
    let walk = thread::Builder::new()
        .name("data-dir-audit".into())
        .spawn(move || walk_subdirs(&dir))
        .map_err(io_error("start the audit of", data_dir))?;
    Ok(Audit { to_tighten, walk })
}

/// [`check`] and [`Audit::finish`] at once.
pub fn check_all(data_dir: &Path) -> Result<Tightened, CheckError> {
    check(data_dir)?.finish()
}

/// Audits every entry of the subdirectories whose files are not read at start-up.
fn walk_subdirs(data_dir: &Path) -> Result<ToTighten, CheckError> {
    let mut to_tighten = ToTighten::default();
    for name in WALKED {
        let dir = data_dir.join(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("list", &dir))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Removed meanwhile: the Store removes temp files while the walk runs.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("inspect", &path)(e)),
            };
            audit(&path, &meta, Expected::FileOrDir, &mut to_tighten)?;
        }
    }
    Ok(to_tighten)
}

/// Whether `name`, directly in `data_dir`, is one of heartbeatd's files (and what it must
/// be); `None` for what heartbeatd never opens (left alone).
fn top_level_file(name: &str) -> Option<Expected> {
    let bare = name.trim_start_matches('.');
    FILES.iter().find(|f| bare.starts_with(*f)).map(|f| {
        if bare == *f {
            Expected::File
        } else {
            Expected::FileOrDir
        }
    })
}

/// Audits one entry of a subdirectory of `data_dir` after [`check`] has passed (its `statx` is
/// relative to the directory being read, without following a link), and tightens its mode
/// if needed.
pub fn audit_entry(entry: &fs::DirEntry, tightened: &mut Tightened) -> io::Result<()> {
    let path = entry.path();
    let meta = entry.metadata()?;
    if let Some(refusal) = Refusal::of(&path, &meta, Expected::FileOrDir) {
        return Err(refusal.into_io_error());
    }
    tighten(&path, &meta, tightened)
}

fn audit(path: &Path, meta: &Metadata, expected: Expected, to_tighten: &mut ToTighten) -> Result<(), CheckError> {
    if let Some(refusal) = Refusal::of(path, meta, expected) {
        return Err(refusal.into());
    }
    to_tighten.add(path, meta);
    Ok(())
}

fn needs_tightening(meta: &Metadata) -> bool {
    meta.mode() & OPEN_TO_OTHERS != 0
}

/// Removes the group's and others' bits. `path` is no link (audited), and its directory is
/// heartbeatd's and writable by no one else (audited), so the `chmod` by name reaches the
/// file that was audited.
fn tighten(path: &Path, meta: &Metadata, tightened: &mut Tightened) -> io::Result<()> {
    if !needs_tightening(meta) {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(private_mode(meta)))?;
    if meta.is_dir() {
        tightened.dirs += 1;
    } else {
        tightened.files += 1;
    }
    Ok(())
}

/// Resolves `data_dir` to its real path, one component at a time, auditing every directory
/// passed through on the way ([`Refusal::of_parent`]), those reached through links included.
/// `None` when a component does not exist yet (heartbeatd creates the rest).
fn resolve(data_dir: &Path) -> Result<Option<PathBuf>, CheckError> {
    let absolute = if data_dir.is_absolute() {
        data_dir.to_owned()
    } else {
        std::env::current_dir()
            .map_err(io_error("find the current directory of", data_dir))?
            .join(data_dir)
    };
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, &absolute);
    let mut real = PathBuf::from("/");
    let root = fs::symlink_metadata(&real).map_err(io_error("inspect", &real))?;
    if let Some(refusal) = Refusal::of_parent(&real, &root, data_dir) {
        return Err(refusal.into());
    }
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            real.pop();
            continue;
        }
        let next = real.join(&name);
        let meta = match fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("inspect", &next)(e)),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io_error("resolve", data_dir)(io::Error::from_raw_os_error(libc::ELOOP)));
            }
            let target = fs::read_link(&next).map_err(io_error("read the link", &next))?;
            if target.is_absolute() {
                real = PathBuf::from("/");
            }
            push_components(&mut todo, &target);
            continue;
        }
        if todo.is_empty() {
            return Ok(Some(next)); // data_dir itself: audited by the caller
        }
        if let Some(refusal) = Refusal::of_parent(&next, &meta, data_dir) {
            return Err(refusal.into());
        }
        real = next;
    }
    Ok(Some(real))
}

/// Pushes `path`'s components so that the first is popped first.
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(names.into_iter().rev());
}
