//! The settings' tests: defaults, layers, bounds, errors that name the key.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn load_text(text: &str) -> Result<Loaded, SettingsError> {
    let file = write_config(text);
    load(Some(file.path()), Vec::new(), &Overrides::default())
}

#[test]
fn defaults_match_the_documentation() {
    let s = load(None, Vec::new(), &Overrides::default()).unwrap().settings;
    assert_eq!(s.http_port, 0);
    assert_eq!(s.http_bind, "127.0.0.1");
    assert_eq!(s.workers, 10);
    assert_eq!(s.queue_capacity(), 10_000);
    assert_eq!(s.data_dir, PathBuf::from("./data"));
    assert_eq!(s.history_len, 1440);
    assert_eq!(s.flush_interval_ms, 1000);
    assert_eq!(s.checkpoint_interval_s, 60);
    assert_eq!(s.log_level, LogLevel::Info);
    assert_eq!(s.log_format, LogFormat::Term);
    assert_eq!(s.shutdown_timeout_s, 30);
    assert_eq!(s.adopt_timeout_s, 60);
    assert_eq!(s.http_workers, 1);
    assert!(s.agents.is_empty());
}

#[test]
fn layers_apply_in_order_file_env_flags() {
    let file = write_config("http_port = 1000\nworkers = 4\ndata_dir = \"/from/file\"\n");
    let env = vec![
        ("HEARTBEATD_HTTP_PORT".to_owned(), "2000".to_owned()),
        ("HEARTBEATD_WORKERS".to_owned(), "6".to_owned()),
        ("HEARTBEATD_NO_SUCH_KEY".to_owned(), "x".to_owned()),
        ("HEARTBEATD_URL".to_owned(), "http://ctl-only".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let overrides = Overrides {
        http_port: Some(3000),
        data_dir: None,
    };
    let loaded = load(Some(file.path()), env, &overrides).unwrap();
    assert_eq!(loaded.settings.http_port, 3000, "flag wins over env and file");
    assert_eq!(loaded.settings.workers, 6, "env wins over file");
    assert_eq!(loaded.settings.queue_capacity(), 6000, "capacity follows workers");
    assert_eq!(loaded.settings.data_dir, PathBuf::from("/from/file"));
    assert_eq!(
        loaded.ignored_env,
        ["HEARTBEATD_NO_SUCH_KEY"],
        "ctl's variables are not warned about"
    );
}

#[test]
fn agents_are_read_from_the_file() {
    let s = load_text("[[agents]]\nid = \"a-1\"\nname = \"A\"\ntype = \"filebeat\"\n\n[[agents]]\nid = \"b\"\n")
        .unwrap()
        .settings;
    assert_eq!(s.agents.len(), 2);
    assert_eq!(s.agents[0].agent_type, "filebeat");
    assert_eq!(s.agents[1].name, "");
}

#[test]
fn bad_configurations_name_the_key() {
    let cases = [
        ("htp_port = 1", "htp_port"),
        ("workers = \"ten\"", "workers"),
        ("workers = 0", "workers"),
        ("queue_capacity = 0", "queue_capacity"),
        ("history_len = 0", "history_len"),
        ("http_port = 70000", "http_port"),
        ("http_bind = \"not-an-ip\"", "http_bind"),
        ("log_level = \"loud\"", "log_level"),
        ("log_format = \"xml\"", "log_format"),
        ("shutdown_timeout_s = 0", "shutdown_timeout_s"),
        ("adopt_timeout_s = 86401", "adopt_timeout_s"),
        ("checkpoint_interval_s = 0", "checkpoint_interval_s"),
        ("[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"", "agents[1].id"),
        ("[[agents]]\nid = \"a/b\"", "agents[0].id"),
        ("[[agents]]\nid = \"\"", "agents[0].id"),
        ("[[agents]]\nname = \"no id\"", "id"),
        ("[[agents]]\nid = \"a\"\ncolour = \"red\"", "colour"),
        ("http_port = ", "http_port"),
        ("auto_register = \"yes\"", "auto_register"),
        ("workers = 1.5", "workers"),
        (
            "[[agents]]\nid = \"a\"\nheartbeat_interval_s = 2.5",
            "agents[0].heartbeat_interval_s",
        ),
    ];
    for (text, key) in cases {
        let err = load_text(text)
            .err()
            .unwrap_or_else(|| panic!("{text:?} must be refused"));
        let message = err.to_string();
        assert!(message.contains(key), "{text:?}: {message:?} does not name {key}");
        assert!(
            message.contains(".toml"),
            "{text:?}: {message:?} does not name the file"
        );
    }
}

#[test]
fn every_number_is_bounded_and_the_error_names_the_key() {
    let defaults = load(None, Vec::new(), &Overrides::default()).unwrap().settings;
    for (key, _, min, max) in defaults.numeric_bounds() {
        let mut values = vec![max + 1, u64::MAX >> 1];
        if min > 0 {
            values.push(min - 1);
        }
        for value in values {
            let text = format!("{key} = {value}");
            let message = load_text(&text)
                .err()
                .unwrap_or_else(|| panic!("{text} must be refused"))
                .to_string();
            assert!(message.contains(key), "{text}: {message}");
        }
        for value in [min, max] {
            // queue_capacity's default follows workers; the rest stand alone.
            let text = format!("{key} = {value}");
            assert!(load_text(&text).is_ok(), "{text} must be accepted");
        }
    }
}

#[test]
fn a_syntax_error_never_quotes_the_line() {
    let message = load_text("workers = 2\nadmin_token = \"hunter2-secret\nx = 1\n")
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("line 2") && message.contains("admin_token"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn environment_values_are_typed_strictly() {
    for (name, value) in [
        ("HEARTBEATD_WORKERS", "1.5"),
        ("HEARTBEATD_AUTO_REGISTER", "yes"),
        ("HEARTBEATD_HTTP_PORT", "80a"),
    ] {
        let env = vec![(name.to_owned(), value.to_owned())];
        let message = load(None, env, &Overrides::default()).err().unwrap().to_string();
        assert!(message.contains(name), "{message}");
    }
    let env = vec![("HEARTBEATD_AUTO_REGISTER".to_owned(), "true".to_owned())];
    assert!(load(None, env, &Overrides::default()).unwrap().settings.auto_register);
    // Strings that look like other types stay strings where the key is a string.
    let env: Vec<(String, String)> = [
        ("HEARTBEATD_ADMIN_TOKEN", "12345"),
        ("HEARTBEATD_HTTP_BIND", "0.0.0.0"),
        ("HEARTBEATD_DATA_DIR", "/var/lib/heartbeatd"),
        ("HEARTBEATD_GRACE_S", "5"),
        ("HEARTBEATD_LOG_LEVEL", "debug"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let s = load(None, env, &Overrides::default()).unwrap().settings;
    assert_eq!(s.admin_token.as_deref(), Some("12345"));
    assert_eq!(s.http_bind, "0.0.0.0");
    assert_eq!(s.grace_s, Some(5));
    let bad_level = vec![("HEARTBEATD_LOG_LEVEL".to_owned(), "loud".to_owned())];
    let message = load(None, bad_level, &Overrides::default()).err().unwrap().to_string();
    assert!(message.contains("log_level"), "{message}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let env = vec![("HEARTBEATD_WORKERS".to_owned(), "many".to_owned())];
    let err = load(None, env, &Overrides::default()).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains("HEARTBEATD_WORKERS") && message.contains("workers"),
        "{message}"
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let err = load(Some(Path::new("/no/such/file.toml")), Vec::new(), &Overrides::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("/no/such/file.toml"), "{err}");
}
