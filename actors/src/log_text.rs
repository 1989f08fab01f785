//! Agent- and client-supplied text on its way into a log line: cut to a bounded length and
//! with control characters escaped, so one request can neither flood the log with a 64 KB id
//! nor forge a log line of its own with an embedded `\n`.

use std::borrow::Cow;

/// The most characters of one supplied string a log line carries.
pub const MAX_LOGGED_CHARS: usize = 128;

/// `text` as a log line may carry it: at most [`MAX_LOGGED_CHARS`] characters (then `…` and
/// the original length), control characters escaped (`\n`, `\u{1b}`, …).
pub fn clip(text: &str) -> Cow<'_, str> {
    let plain = text.len() <= MAX_LOGGED_CHARS && !text.chars().any(char::is_control);
    if plain {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(MAX_LOGGED_CHARS + 16);
    for (chars, c) in text.chars().enumerate() {
        if chars == MAX_LOGGED_CHARS {
            out.push_str(&format!("…({} bytes)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A log value that may be absent: logged when it is there, left out (key and all) when it
/// is not, instead of a bare `None` in the line.
pub struct Present<T>(pub Option<T>);

impl<T: slog::Value> slog::Value for Present<T> {
    fn serialize(
        &self,
        record: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        match &self.0 {
            Some(value) => value.serialize(record, key, serializer),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_value_leaves_its_key_out() {
        use slog::Drain;
        use std::sync::{Arc, Mutex};
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let decorator = slog_term::PlainSyncDecorator::new(Sink(Arc::clone(&lines)));
        let drain = slog_term::FullFormat::new(decorator).build();
        let log = slog::Logger::root(std::sync::Mutex::new(drain).map(slog::Fuse), slog::o!());
        slog::info!(log, "line"; "pid" => Present(None::<i64>), "code" => Present(Some(3)));
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("code: 3") && !text.contains("pid") && !text.contains("None"),
            "{text}"
        );
    }

    #[test]
    fn supplied_text_is_cut_and_escaped() {
        assert!(matches!(clip("agent-1"), Cow::Borrowed("agent-1")));
        assert_eq!(clip("a\nFAKE LOG LINE"), "a\\nFAKE LOG LINE");
        assert_eq!(clip("\u{1b}[31mred"), "\\u{1b}[31mred");
        let long = "x".repeat(65_536);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"x".repeat(128)), "{clipped}");
        assert!(clipped.ends_with("…(65536 bytes)"), "{clipped}");
        assert!(clipped.len() < 160);
    }
}
