//! Bounding text taken from requests before it goes anywhere else: into a job
//! record, an event, a reply, a header or a log line.
//!
//! A request may carry anything up to the size limit, and errors about it echo
//! what it carries (serde names the unknown field, a spawn error the program). Cut
//! text keeps its start, ends on a character boundary and says what is missing
//! (`… (N bytes cut)`); text for one line (a header value, a log field) has its
//! control characters, CR and LF among them, written as escapes (`\n`).

/// Most bytes of text taken from a request that a record, event, reply, header
/// or log field carries.
pub const MAX_TEXT: usize = 4096;
/// Most bytes of a request's text quoted inside a message (a program name, a key).
pub const MAX_QUOTED: usize = 256;

/// How characters are written out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// As they are.
    Nothing,
    /// Control characters as escapes, the rest as they are.
    Controls,
    /// As Rust's `{:?}` writes them inside quotes.
    Quoted,
}

impl Escape {
    /// Appends `c` to `out` as this mode writes it; returns its length there.
    fn write(self, c: char, out: Option<&mut String>) -> usize {
        let escaped = match self {
            Escape::Nothing => None,
            Escape::Controls if !c.is_control() => None,
            Escape::Controls | Escape::Quoted => Some(c.escape_debug()),
        };
        match (escaped, out) {
            (None, Some(out)) => {
                out.push(c);
                c.len_utf8()
            }
            (None, None) => c.len_utf8(),
            (Some(escaped), Some(out)) => {
                let before = out.len();
                out.extend(escaped);
                out.len() - before
            }
            (Some(escaped), None) => escaped.map(char::len_utf8).sum(),
        }
    }
}

/// What ends a cut text: how many bytes of the original were left out.
fn marker(cut_bytes: usize) -> String {
    format!("… ({cut_bytes} bytes cut)")
}

/// `text` written out with `escape`, cut to at most `max` bytes with a marker
/// (the marker included, for any `max` of 32 or more).
fn cut(text: &str, max: usize, escape: Escape) -> String {
    let full: usize = text.chars().map(|c| escape.write(c, None)).sum();
    if full <= max {
        let mut out = String::with_capacity(full);
        text.chars().for_each(|c| {
            escape.write(c, Some(&mut out));
        });
        return out;
    }
    // The marker for the whole text is at least as long as the one needed.
    let budget = max.saturating_sub(marker(text.len()).len());
    let mut out = String::with_capacity(max);
    let mut kept = 0;
    for (at, c) in text.char_indices() {
        if out.len() + escape.write(c, None) > budget {
            break;
        }
        escape.write(c, Some(&mut out));
        kept = at + c.len_utf8();
    }
    out.push_str(&marker(text.len() - kept));
    out
}

/// `text` cut to [`MAX_TEXT`] bytes, for a JSON field (which escapes control
/// characters itself).
pub fn bounded(text: &str) -> String {
    bounded_to(text, MAX_TEXT)
}

/// `text` cut to `max` bytes (marker included).
pub fn bounded_to(text: &str, max: usize) -> String {
    cut(text, max, Escape::Nothing)
}

/// `text` for one line (a header value, a log field): control characters
/// escaped, cut to [`MAX_TEXT`] bytes.
pub fn one_line(text: &str) -> String {
    one_line_to(text, MAX_TEXT)
}

/// `text` for one line, control characters escaped, cut to `max` bytes
/// (marker included): for a cell of a terminal's table.
pub fn one_line_to(text: &str, max: usize) -> String {
    cut(text, max, Escape::Controls)
}

/// `text` in quotes, escaped as `{:?}` writes it, its first [`MAX_QUOTED`] bytes
/// at most: for naming a request's value inside a message.
pub fn quoted(text: &str) -> String {
    format!("\"{}\"", cut(text, MAX_QUOTED, Escape::Quoted))
}

/// The start of `bytes`, at most `max` of them, as text: cut on a character
/// boundary, invalid UTF-8 replaced. No marker (for a field defined as a cut
/// copy, such as the payload of an invalid request).
pub fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    let mut end = bytes.len().min(max);
    loop {
        match std::str::from_utf8(&bytes[..end]) {
            Ok(text) => return text.to_owned(),
            // A character cut in two at the end: leave it out.
            Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
            Err(_) => return String::from_utf8_lossy(&bytes[..end]).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_it_is() {
        assert_eq!(bounded("hello"), "hello");
        assert_eq!(bounded_to("héllo", 6), "héllo");
        assert_eq!(bounded(""), "");
    }

    #[test]
    fn long_text_is_cut_with_a_marker_within_the_bound() {
        let text = "x".repeat(10_000);
        let cut = bounded(&text);
        assert!(cut.len() <= MAX_TEXT, "{}", cut.len());
        let kept = cut.find('…').unwrap();
        assert_eq!(&cut[kept..], format!("… ({} bytes cut)", 10_000 - kept));
        assert!(cut[..kept].bytes().all(|b| b == b'x'));
        // A bound the text just fits is not cut.
        assert_eq!(bounded_to(&text[..64], 64), text[..64]);
        assert!(bounded_to(&text[..65], 64).ends_with("bytes cut)"));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // Two-, three- and four-byte characters, cut at every possible bound.
        let text = "é€😀".repeat(100);
        for max in 32..200 {
            let cut = bounded_to(&text, max);
            assert!(cut.len() <= max, "{max}: {}", cut.len());
            let kept = cut.find('…').unwrap();
            let cut_bytes: usize = cut[kept..]
                .trim_start_matches("… (")
                .trim_end_matches(" bytes cut)")
                .parse()
                .unwrap();
            assert_eq!(kept + cut_bytes, text.len(), "{max}: {cut}");
            assert!(text.starts_with(&cut[..kept]));
        }
    }

    #[test]
    fn one_line_text_has_no_control_characters() {
        let line = one_line("a\r\nb\tc\u{1b}[31md\u{0}é");
        assert_eq!(line, "a\\r\\nb\\tc\\u{1b}[31md\\0é");
        assert!(!line.chars().any(char::is_control));
        // Escapes count against the bound.
        let controls = one_line(&"\n".repeat(MAX_TEXT));
        assert!(controls.len() <= MAX_TEXT);
        assert!(controls.starts_with("\\n\\n"));
        // 4,076 bytes of room beside the marker: 2,038 escapes.
        assert!(controls.ends_with("… (2058 bytes cut)"), "{controls}");
        assert!(!controls.chars().any(char::is_control));
    }

    #[test]
    fn quoted_text_is_escaped_and_short() {
        assert_eq!(quoted("a\"b\n"), r#""a\"b\n""#);
        let quotes = quoted(&"\"".repeat(300_000));
        assert!(quotes.len() <= MAX_QUOTED + 2, "{}", quotes.len());
        assert!(quotes.starts_with(r#""\"\""#));
        assert!(quotes.ends_with("bytes cut)\""), "{quotes}");
    }

    #[test]
    fn lossy_prefixes_drop_a_character_cut_in_two() {
        assert_eq!(lossy_prefix(b"{oops", 4096), "{oops");
        assert_eq!(lossy_prefix("aé".as_bytes(), 2), "a");
        assert_eq!(lossy_prefix(b"a\xffb", 3), "a\u{fffd}b");
    }
}
