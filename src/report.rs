//! Errors shown to people: the message and every cause behind it on one line, bounded
//! and without control characters, for the command line's last words and for logs.

use std::error::Error;

/// Longest text taken from one error of a chain, in bytes; a cut is marked with `…`.
const MAX_PART_LEN: usize = 1024;
/// Most errors of a chain shown.
const MAX_PARTS: usize = 16;

/// `error`'s message followed by each cause in its source chain, joined by `": "`.
///
/// A cause whose text the line already holds is left out, so an error that writes its
/// source into its own message is not repeated. Each part is cut at 1 KiB and its
/// control characters are escaped: causes can carry text from the network, such as a
/// server's error message or the names in its certificate.
pub fn error_chain(error: &dyn Error) -> String {
    let mut line = printable(&error.to_string());
    let causes = std::iter::successors(error.source(), |cause| (*cause).source());
    for cause in causes.take(MAX_PARTS - 1) {
        let part = printable(&cause.to_string());
        if !line.contains(&part) {
            line.push_str(": ");
            line.push_str(&part);
        }
    }
    line
}

/// `text` cut at [`MAX_PART_LEN`] bytes on a character boundary, control characters
/// escaped (`\n`, `\u{1b}`).
fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len().min(MAX_PART_LEN + 3));
    for c in text.chars() {
        if shown.len() + c.len_utf8() > MAX_PART_LEN {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1
                .as_deref()
                .map(|inner| inner as &(dyn Error + 'static))
        }
    }

    #[test]
    fn joins_causes_not_already_said() {
        let root = Layer("Connection refused", None);
        let middle = Layer("IO error: Connection refused", Some(Box::new(root)));
        let top = Layer("cannot connect", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&top),
            "cannot connect: IO error: Connection refused"
        );
    }

    #[test]
    fn bounds_and_escapes_each_part() {
        let root = Layer("evil\n\u{1b}[31mred", None);
        let top = Layer("top", Some(Box::new(root)));
        assert_eq!(error_chain(&top), "top: evil\\n\\u{1b}[31mred");

        let long = "é".repeat(MAX_PART_LEN);
        let shown = printable(&long);
        assert!(
            shown.len() <= MAX_PART_LEN + '…'.len_utf8(),
            "{}",
            shown.len()
        );
        assert!(shown.ends_with("é…"));
    }
}
