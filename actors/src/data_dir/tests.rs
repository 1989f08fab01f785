//! The rules of `data_dir`, each shown to hold (and to refuse) on real files.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    me() == 0
}

/// The refusal an operation failed with; panics if it did not fail with one.
fn refusal<T: std::fmt::Debug>(result: io::Result<T>) -> Refusal {
    let e = result.expect_err("must be refused");
    Refusal::of_io_error(&e)
        .unwrap_or_else(|| panic!("not a refusal: {e}"))
        .clone()
}

fn refused_check(dir: &Path) -> Refusal {
    match check_all(dir) {
        Err(CheckError::Refused(refusal)) => refusal,
        other => panic!("must be refused: {other:?}"),
    }
}

#[test]
fn files_are_created_0600_and_directories_0700() {
    // The default umask (022) would leave 0644 and 0755 without an explicit mode.
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a/b");
    create_dir_private(&sub).unwrap();
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&sub), 0o700);
    for (name, open) in [
        ("append", open_append as fn(&Path) -> io::Result<File>),
        ("read-append", open_read_append),
        ("new", create_new),
    ] {
        let path = sub.join(name);
        open(&path).unwrap().write_all(b"x").unwrap();
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    create_data_dir(&dir.path().join("data")).unwrap();
    assert_eq!(mode(&dir.path().join("data")), 0o700);
}

#[test]
fn a_link_is_refused_by_every_open_and_its_target_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::write(&outside, b"secret\n").unwrap();
    let link = dir.path().join("a.log");
    symlink(&outside, &link).unwrap();

    for (name, result) in [
        ("read", open_read(&link).map(drop)),
        ("append", open_append(&link).map(drop)),
        ("read-append", open_read_append(&link).map(drop)),
        ("new", create_new(&link).map(drop)),
        ("read whole", read(&link).map(drop)),
    ] {
        let e = result.expect_err(name);
        if name == "new" {
            // O_EXCL: any existing name, a link included, is EEXIST.
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
            continue;
        }
        let refusal = Refusal::of_io_error(&e).unwrap_or_else(|| panic!("{name}: {e}"));
        assert!(refusal.problem.contains("symbolic link"), "{name}: {refusal}");
        assert!(refusal.to_string().contains(&link.display().to_string()), "{refusal}");
        assert!(refusal.what_to_do.contains("rm "), "{refusal}");
    }
    // A dangling link is refused too, and nothing is created at its target.
    let dangling = dir.path().join("b.log");
    let target = dir.path().join("created-through-the-link");
    symlink(&target, &dangling).unwrap();
    refusal(open_append(&dangling));
    assert!(!target.exists());
    assert_eq!(fs::read(&outside).unwrap(), b"secret\n");
}

#[test]
fn a_file_writable_by_others_is_refused_and_one_only_readable_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.log");
    fs::write(&path, b"{}\n").unwrap();
    chmod(&path, 0o644);
    open_read(&path).unwrap();
    for writable in [0o620, 0o602, 0o666] {
        chmod(&path, writable);
        let refusal = refusal(open_read(&path));
        assert!(refusal.problem.contains("writable"), "{refusal}");
        assert!(refusal.what_to_do.contains("chmod go-w"), "{refusal}");
    }
}

#[test]
fn a_fifo_where_a_file_is_expected_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.json");
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Without O_NONBLOCK this open would wait for a writer forever.
    let refusal = refusal(open_read(&path));
    assert!(refusal.problem.contains("FIFO"), "{refusal}");
}

#[test]
fn a_file_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.log");
    fs::write(&path, b"{}\n").unwrap();
    if !is_root() {
        // Only root can give a file away: the variant a non-root user can make.
        chmod(&path, 0o666);
        assert!(refusal(open_append(&path)).problem.contains("writable"));
        return;
    }
    chmod(&path, 0o600);
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let refusal = refusal(open_append(&path));
    assert!(refusal.problem.contains("uid 65534"), "{refusal}");
    assert!(refusal.what_to_do.contains("chown root"), "{refusal}");
}

#[test]
fn reading_at_load_tightens_an_old_mode_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    fs::write(&path, b"{}").unwrap();
    chmod(&path, 0o644);
    let mut tightened = Tightened::default();
    assert_eq!(read_at_load(&path, &mut tightened).unwrap(), b"{}");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(tightened, Tightened { files: 1, dirs: 0 });
    read_at_load(&path, &mut tightened).unwrap();
    assert_eq!(tightened.files, 1, "already private: not counted again");
}

/// An old data directory, as versions before this one left it: 0755 and 0644.
fn old_data_dir(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    for sub in ["agents", "history", "events", "journal", "logs"] {
        fs::create_dir_all(data.join(sub)).unwrap();
        chmod(&data.join(sub), 0o755);
    }
    chmod(&data, 0o755);
    for file in [
        "registry.json",
        "registry.log",
        "alerts.json",
        "checkpoint.json",
        "history/a.log",
        "events/a.log",
        "journal/00000000000000000001.log",
        "logs/a.log",
        "logs/a.log.1",
    ] {
        fs::write(data.join(file), b"{}\n").unwrap();
        chmod(&data.join(file), 0o644);
    }
    data
}

#[test]
fn check_tightens_an_old_data_dir_but_leaves_what_is_not_heartbeatds() {
    let root = tempfile::tempdir().unwrap();
    let data = old_data_dir(root.path());
    fs::write(data.join("notes.txt"), b"the operator's").unwrap();
    chmod(&data.join("notes.txt"), 0o644);

    let tightened = check_all(&data).unwrap();

    // data_dir and its 5 subdirectories; 4 files in data_dir and 5 in the walked ones
    // (agents/ is the Store's, at load).
    assert_eq!(tightened, Tightened { files: 9, dirs: 6 });
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("logs")), 0o700);
    assert_eq!(mode(&data.join("registry.log")), 0o600);
    assert_eq!(mode(&data.join("logs/a.log.1")), 0o600);
    assert_eq!(mode(&data.join("notes.txt")), 0o644, "not one of heartbeatd's files");
    assert_eq!(
        check_all(&data).unwrap(),
        Tightened::default(),
        "nothing left to tighten"
    );
}

#[test]
fn check_creates_a_missing_data_dir_0700() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("new/data");
    assert_eq!(check_all(&data).unwrap(), Tightened::default());
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&root.path().join("new")), 0o700);
}

#[test]
fn check_refuses_a_link_where_heartbeatd_expects_a_file_or_directory() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0\n").unwrap();
    for planted in [
        "registry.log",
        "logs/a.log",
        "history/a.log",
        "journal/00000000000000000001.log",
    ] {
        let data = root.path().join(format!("data-{}", planted.replace('/', "-")));
        fs::create_dir_all(data.join(planted).parent().unwrap()).unwrap();
        symlink(outside.join("passwd"), data.join(planted)).unwrap();
        let refusal = refused_check(&data);
        assert_eq!(refusal.path, data.join(planted), "{refusal}");
        assert!(refusal.problem.contains("symbolic link"), "{refusal}");
    }
    let data = root.path().join("data-logs-dir");
    fs::create_dir(&data).unwrap();
    symlink(&outside, data.join("logs")).unwrap();
    assert_eq!(refused_check(&data).path, data.join("logs"));
}

#[test]
fn check_refuses_anything_writable_by_others() {
    let root = tempfile::tempdir().unwrap();
    let data = old_data_dir(root.path());
    chmod(&data, 0o777);
    let refusal = refused_check(&data);
    assert_eq!(refusal.path, data);
    assert!(refusal.what_to_do.contains("chmod 700"), "{refusal}");
    assert_eq!(
        mode(&data.join("registry.log")),
        0o644,
        "a refused start changes nothing"
    );
    chmod(&data, 0o700);
    chmod(&data.join("history"), 0o770);
    assert_eq!(refused_check(&data).path, data.join("history"));
    chmod(&data.join("history"), 0o700);
    chmod(&data.join("events/a.log"), 0o646);
    assert_eq!(refused_check(&data).path, data.join("events/a.log"));
}

#[test]
fn check_refuses_a_data_dir_of_another_user_and_says_it_cannot_be_trusted() {
    let root = tempfile::tempdir().unwrap();
    let data = old_data_dir(root.path());
    if !is_root() {
        // Only root can give a directory away: the variant a non-root user can make.
        chmod(&data, 0o757);
        assert_eq!(refused_check(&data).path, data);
        return;
    }
    std::os::unix::fs::chown(&data, Some(65534), None).unwrap();
    let refusal = refused_check(&data);
    assert_eq!(refusal.path, data);
    assert!(
        refusal
            .what_to_do
            .contains(&format!("chown -R root {}", data.display())),
        "{refusal}"
    );
    assert!(refusal.what_to_do.contains("untrusted"), "{refusal}");
    std::os::unix::fs::chown(&data, Some(0), None).unwrap();
    std::os::unix::fs::chown(data.join("logs/a.log"), Some(65534), None).unwrap();
    assert_eq!(refused_check(&data).path, data.join("logs/a.log"));
}

#[test]
fn check_refuses_a_parent_others_can_write_unless_it_is_sticky() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("shared");
    fs::create_dir(&parent).unwrap();
    let data = parent.join("data");
    chmod(&parent, 0o777);
    let refusal = refused_check(&data);
    assert_eq!(refusal.path, parent, "{refusal}");
    assert!(!data.exists(), "nothing is created under a parent others can write");
    chmod(&parent, 0o1777); // like /tmp: others cannot rename what is not theirs
    check_all(&data).unwrap();
    if is_root() {
        chmod(&parent, 0o755);
        std::os::unix::fs::chown(&parent, Some(65534), None).unwrap();
        let refusal = refused_check(&data);
        assert_eq!(refusal.path, parent, "{refusal}");
        assert!(refusal.problem.contains("owned by uid 65534"), "{refusal}");
    }
}

#[test]
fn check_follows_a_link_to_data_dir_and_audits_where_it_leads() {
    // systemd's StateDirectory= with DynamicUser= makes data_dir a link.
    let root = tempfile::tempdir().unwrap();
    let private = root.path().join("private");
    fs::create_dir_all(private.join("heartbeatd")).unwrap();
    let data = root.path().join("heartbeatd");
    symlink("private/heartbeatd", &data).unwrap();
    check_all(&data).unwrap();
    assert_eq!(mode(&private.join("heartbeatd")), 0o700);
    // The same link into a directory others can write is refused.
    chmod(&private, 0o777);
    assert_eq!(refused_check(&data).path, private);
}

#[test]
fn the_files_audited_are_the_ones_heartbeatd_writes() {
    assert!(check::FILES.contains(&crate::registry::REGISTRY_FILE));
    assert!(check::FILES.contains(&crate::registry::REGISTRY_LOG));
    assert!(check::FILES.contains(&crate::notify::alerter::FIRING_FILE));
    assert!(check::FILES.contains(&"checkpoint.json"));
    assert!(check::FILES.contains(&super::lock::LOCK_FILE));
}

#[test]
fn a_file_with_another_name_is_refused() {
    // A hard link made while data_dir was someone else's could name a file of heartbeatd's
    // user elsewhere: appending to it would write there.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("shadow");
    fs::write(&elsewhere, b"root:secret\n").unwrap();
    chmod(&elsewhere, 0o600);
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::hard_link(&elsewhere, data.join("registry.log")).unwrap();
    let refusal = refusal(open_append(&data.join("registry.log")));
    assert!(refusal.problem.contains("2 hard links"), "{refusal}");
    assert_eq!(refused_check(&data).path, data.join("registry.log"));
    assert_eq!(fs::read(&elsewhere).unwrap(), b"root:secret\n");
}
