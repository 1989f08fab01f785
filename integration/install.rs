//! `make install DESTDIR=… PREFIX=/usr` and `make uninstall`, run on the Makefile as a packager
//! would: every file lands where it belongs with its mode, the unit names the installed binary,
//! the installed binary runs on the installed config, an existing config is kept, and uninstall
//! removes everything but a changed config.
//!
//! The binary installed is the one cargo built for these tests (`BIN=`), not a release build:
//! what is tested is the layout, and a second full release build only for this would cost CI
//! minutes (the .deb test, `make test-deb`, installs the release build).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::daemon::BIN;

/// The source tree (the Makefile's directory).
const TREE: &str = env!("CARGO_MANIFEST_DIR");
/// The keeper's own binary, which heartbeatd starts from its own directory once the workspace
/// builds it: make install and the .deb install it beside heartbeatd when it is there.
const KEEPER: &str = "heartbeatd-keep";

/// `make TARGET DESTDIR=dir PREFIX=/usr BIN=<the test binary>`, without the variables of a
/// `make test` this may run under (MAKEFLAGS would pass its command-line variables on).
pub fn make(target: &str, destdir: &Path) -> Output {
    make_with(target, destdir, Path::new(BIN))
}

/// [`make`] installing the heartbeatd at `bin` (and what is beside it).
fn make_with(target: &str, destdir: &Path, bin: &Path) -> Output {
    Command::new("make")
        .args(["-s", "-C", TREE, target, "PREFIX=/usr"])
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BIN={}", bin.display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .unwrap()
}

/// Installs into `destdir` and asserts make succeeded.
pub fn install_into(destdir: &Path) {
    let out = make("install", destdir);
    assert!(
        out.status.success(),
        "make install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file and symlink under `root`, by path relative to it, with its permission bits;
/// directories with their mode too, marked by a trailing `/`.
fn tree(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, u32>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                found.insert(format!("{relative}/"), mode);
                walk(root, &path, found);
            } else {
                found.insert(relative, mode);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(root, root, &mut found);
    found
}

/// The man pages the binary writes, as make install should have installed them.
fn man_pages() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Every file make install lays out with PREFIX=/usr, with its mode.
fn expected_files() -> BTreeMap<String, u32> {
    let mut files: BTreeMap<String, u32> = [
        ("usr/bin/heartbeatd", 0o755),
        ("usr/lib/systemd/system/heartbeatd.service", 0o644),
        ("usr/lib/sysusers.d/heartbeatd.conf", 0o644),
        ("usr/share/bash-completion/completions/heartbeatd", 0o644),
        ("usr/share/zsh/site-functions/_heartbeatd", 0o644),
        ("usr/share/fish/vendor_completions.d/heartbeatd.fish", 0o644),
        ("usr/share/doc/heartbeatd/README.md", 0o644),
        ("usr/share/doc/heartbeatd/LICENSE-MIT", 0o644),
        ("usr/share/doc/heartbeatd/LICENSE-APACHE", 0o644),
        ("usr/share/doc/heartbeatd/examples/heartbeatd.toml", 0o644),
        ("usr/share/doc/heartbeatd/examples/supervise-example.toml", 0o644),
        (
            "usr/share/doc/heartbeatd/examples/prometheus/heartbeatd.rules.yml",
            0o644,
        ),
        ("etc/heartbeatd/heartbeatd.toml", 0o644),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_owned(), mode))
    .collect();
    // The keeper goes beside heartbeatd wherever the build made one beside it.
    if Path::new(BIN).with_file_name(KEEPER).exists() {
        files.insert(format!("usr/bin/{KEEPER}"), 0o755);
    }
    for page in man_pages() {
        files.insert(format!("usr/share/man/man1/{page}"), 0o644);
    }
    // Whatever else the tree ships that make install picks up by glob: units added to
    // configs/ and the manual's pages under docs/.
    for entry in std::fs::read_dir(Path::new(TREE).join("configs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".service") || name.ends_with(".socket") {
            files.insert(format!("usr/lib/systemd/system/{name}"), 0o644);
        }
    }
    if let Ok(docs) = std::fs::read_dir(Path::new(TREE).join("docs")) {
        for entry in docs {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".md") {
                files.insert(format!("usr/share/doc/heartbeatd/docs/{name}"), 0o644);
            }
        }
    }
    files
}

#[test]
fn make_install_lays_out_every_file_with_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");

    install_into(&root);

    let found = tree(&root);
    let files: BTreeMap<String, u32> = found
        .iter()
        .filter(|(path, _)| !path.ends_with('/'))
        .map(|(path, mode)| (path.clone(), *mode))
        .collect();
    assert_eq!(files, expected_files());
    // No directory writable by anyone but its owner (parents made by `install -d` follow the
    // umask, so the exact mode is not asserted).
    for (path, mode) in found.iter().filter(|(path, _)| path.ends_with('/')) {
        assert_eq!(mode & 0o022, 0, "{path}: {mode:o}");
    }
    assert_eq!(found["etc/heartbeatd/"], 0o755);
}

#[test]
fn the_keeper_beside_heartbeatd_is_installed_beside_it_and_uninstalled() {
    // A build directory with heartbeatd and a keeper (any executable stands in for it), and
    // one with heartbeatd alone.
    let dir = tempfile::tempdir().unwrap();
    let with_keeper = dir.path().join("with");
    let alone = dir.path().join("alone");
    for build in [&with_keeper, &alone] {
        std::fs::create_dir(build).unwrap();
        // A link, not a copy: install copies what it points to, and the debug binary is large.
        std::os::unix::fs::symlink(BIN, build.join("heartbeatd")).unwrap();
    }
    std::fs::write(with_keeper.join(KEEPER), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(with_keeper.join(KEEPER), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root_with = dir.path().join("root-with");
    let root_alone = dir.path().join("root-alone");

    let installed = make_with("install", &root_with, &with_keeper.join("heartbeatd"));
    let installed_alone = make_with("install", &root_alone, &alone.join("heartbeatd"));

    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(installed_alone.status.success());
    let keeper = root_with.join("usr/bin").join(KEEPER);
    assert_eq!(std::fs::read(&keeper).unwrap(), b"#!/bin/sh\nexit 0\n");
    assert_eq!(std::fs::metadata(&keeper).unwrap().permissions().mode() & 0o7777, 0o755);
    assert!(!root_alone.join("usr/bin").join(KEEPER).exists());
    let bins = |root: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join("usr/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(bins(&root_with), vec!["heartbeatd".to_owned(), KEEPER.to_owned()]);
    assert_eq!(bins(&root_alone), vec!["heartbeatd".to_owned()]);
    // uninstall takes the keeper too.
    assert!(make_with("uninstall", &root_with, &with_keeper.join("heartbeatd"))
        .status
        .success());
    assert!(bins(&root_with).is_empty());
}

#[test]
fn the_installed_unit_and_config_name_the_installed_paths_and_the_binary_runs_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");

    install_into(&root);

    // The unit runs the binary where PREFIX put it; no /usr/local is left.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/heartbeatd.service")).unwrap();
    let exec: Vec<&str> = unit.lines().filter(|l| l.starts_with("Exec")).collect();
    assert!(
        exec.contains(&"ExecStart=/usr/bin/heartbeatd --config /etc/heartbeatd/heartbeatd.toml"),
        "{unit}"
    );
    assert!(
        exec.contains(&"ExecStartPre=/usr/bin/heartbeatd check-config --quiet /etc/heartbeatd/heartbeatd.toml"),
        "{unit}"
    );
    let settings = unit.lines().filter(|l| !l.starts_with('#'));
    assert!(!settings.clone().any(|l| l.contains("/usr/local")), "{unit}");
    assert!(
        settings
            .clone()
            .any(|l| l == "Documentation=man:heartbeatd(1) file:///usr/share/doc/heartbeatd/docs/operations.md"),
        "{unit}"
    );

    // The installed binary runs, and accepts the installed example config, whose data_dir is
    // the unit's state directory (so ctl finds the service's control socket).
    let installed = root.join("usr/bin/heartbeatd");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("heartbeatd {}", env!("CARGO_PKG_VERSION"))
    );
    let config = root.join("etc/heartbeatd/heartbeatd.toml");
    let checked = Command::new(&installed)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        checked.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let effective = String::from_utf8(checked.stdout).unwrap();
    assert!(effective.contains("data_dir = \"/var/lib/heartbeatd\""), "{effective}");
    let quiet = Command::new(&installed)
        .args(["check-config", "--quiet"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!((quiet.status.code(), quiet.stdout.len()), (Some(0), 0));

    // The installed completions and man page are the binary's own.
    let bash = std::fs::read(root.join("usr/share/bash-completion/completions/heartbeatd")).unwrap();
    let printed = Command::new(&installed)
        .args(["completions", "bash"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(bash, printed);
    let page = std::fs::read_to_string(root.join("usr/share/man/man1/heartbeatd-ctl.1")).unwrap();
    assert!(page.contains("heartbeatd\\-ctl\\-status"), "{page}");
}

#[test]
fn the_sysusers_file_creates_the_heartbeatd_user() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    install_into(&root);

    // What systemd-sysusers would do at boot with the installed tree as the root filesystem.
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg("--dry-run")
        .output()
        .expect("systemd-sysusers (Debian's systemd package; make test-tools installs it)");
    // It reports on stderr; a line that is neither what it creates nor what it would write
    // is a complaint about the file ("Trailing garbage", an unknown type …).
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Creating user 'heartbeatd'"), "{report}");
    assert!(
        report
            .lines()
            .all(|l| l.starts_with("Creating ") || l.starts_with("Would write ")),
        "{report}"
    );
    assert!(!root.join("etc/passwd").exists(), "a dry run writes nothing");
}

#[test]
fn an_existing_config_is_kept_and_uninstall_leaves_only_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let config = root.join("etc/heartbeatd/heartbeatd.toml");

    // An unchanged example config goes with uninstall: nothing of heartbeatd is left.
    install_into(&root);
    assert!(make("uninstall", &root).status.success());
    let left: Vec<String> = tree(&root).into_keys().filter(|p| !p.ends_with('/')).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!root.join("etc/heartbeatd").exists());
    assert!(!root.join("usr/share/doc/heartbeatd").exists());

    // The operator's changed config survives a second install and an uninstall.
    install_into(&root);
    std::fs::write(&config, "http_port = 9000\n").unwrap();
    let again = make("install", &root);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept the existing"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "http_port = 9000\n");
    assert!(make("uninstall", &root).status.success());
    let left: Vec<String> = tree(&root).into_keys().filter(|p| !p.ends_with('/')).collect();
    assert_eq!(left, vec!["etc/heartbeatd/heartbeatd.toml".to_owned()]);
}

/// The installed unit with its binary paths moved under `root`, for tools that check the paths
/// exist on this machine (the unit is otherwise the installed one, byte for byte).
pub fn unit_rooted_at(root: &Path) -> PathBuf {
    let installed = root.join("usr/lib/systemd/system/heartbeatd.service");
    let unit = std::fs::read_to_string(&installed).unwrap();
    let rooted = unit.replace(
        "=/usr/bin/heartbeatd ",
        &format!("={}/usr/bin/heartbeatd ", root.display()),
    );
    let path = root.join("heartbeatd.service");
    std::fs::write(&path, rooted).unwrap();
    path
}
