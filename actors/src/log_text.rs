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

#[cfg(test)]
mod tests {
    use super::*;

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
