//! What a request may ask of the site beyond its own workload, as the
//! operator's allow-lists say: the Secrets, claims and named volumes it may
//! mount (by exact name or glob, `*` any run of characters and `?` any one),
//! and the label keys it may set (by exact key or prefix). Nothing listed,
//! nothing allowed. A refusal is a [`LaunchError::NotAllowed`] naming the
//! option to change.

use crate::backend::LaunchError;
use crate::protocol::bounded::quoted;
use std::collections::BTreeMap;

/// An allow-list of names and the option that sets it.
#[derive(Debug, Clone, Copy)]
pub struct NameList<'a> {
    /// What the names are, plural (`secrets`, `claims`, ...).
    pub what: &'static str,
    /// The flag that sets the list, without its dashes.
    pub option: &'static str,
    /// Exact names or globs.
    pub patterns: &'a [String],
}

impl NameList<'_> {
    /// Whether `name` is on the list.
    ///
    /// # Errors
    /// [`LaunchError::NotAllowed`] when no pattern matches it.
    pub fn check(&self, name: &str) -> Result<(), LaunchError> {
        if self.patterns.iter().any(|pattern| glob(pattern, name)) {
            return Ok(());
        }
        let why = if self.patterns.is_empty() {
            format!("this worker allows no {}", self.what)
        } else {
            "it matches none of the names this worker allows".to_owned()
        };
        Err(not_allowed(format!(
            "mount of {} {}: {why} (--{} lists them)",
            self.what.trim_end_matches('s'),
            quoted(name),
            self.option
        )))
    }
}

/// The label keys a request may set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelPolicy {
    /// Keys that start with one of these.
    pub prefixes: Vec<String>,
    /// These keys.
    pub keys: Vec<String>,
}

impl LabelPolicy {
    /// Whether every key of `labels` is allowed.
    ///
    /// # Errors
    /// [`LaunchError::NotAllowed`] naming the first key that is not.
    pub fn check(&self, labels: &BTreeMap<String, String>) -> Result<(), LaunchError> {
        let refused = labels.keys().find(|key| {
            !self.keys.contains(key)
                && !self
                    .prefixes
                    .iter()
                    .any(|prefix| key.starts_with(prefix.as_str()))
        });
        match refused {
            None => Ok(()),
            Some(key) => Err(not_allowed(format!(
                "label key {} is not allowed: it is not one of --allowed-label-keys nor under one of --allowed-label-prefixes",
                quoted(key)
            ))),
        }
    }
}

/// `name` refused whatever the allow-list says, being the worker's own
/// credentials, and the option that names them.
pub fn never_mountable(what: &str, name: &str, option: &str) -> LaunchError {
    not_allowed(format!(
        "mount of {what} {}: it holds this worker's own credentials, which no job may mount (--{option} names it)",
        quoted(name)
    ))
}

fn not_allowed(message: String) -> LaunchError {
    LaunchError::NotAllowed(message.into())
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` any one,
/// anything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and where in `name` it was tried last.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((at, tried)) => {
                    p = at + 1;
                    n = tried + 1;
                    star = Some((at, tried + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name, matches) in [
            ("data", "data", true),
            ("data", "data2", false),
            ("data-*", "data-1", true),
            ("data-*", "data-", true),
            ("data-*", "models", false),
            ("*", "anything", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-nats", "flare-launcher-nats", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob(pattern, name), matches, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn nothing_listed_nothing_allowed_and_the_option_is_named() {
        let none = NameList {
            what: "secrets",
            option: "k8s-allowed-secrets",
            patterns: &[],
        };
        let refused = none.check("creds").unwrap_err();
        assert_eq!(refused.reason(), "NotAllowed");
        assert!(
            refused.to_string().contains("--k8s-allowed-secrets"),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("allows no secrets"),
            "{refused}"
        );
        let some = ["creds".to_string(), "job-*".to_string()];
        let list = NameList {
            patterns: &some,
            ..none
        };
        assert!(list.check("creds").is_ok());
        assert!(list.check("job-1").is_ok());
        assert!(list.check("other").is_err());
    }

    #[test]
    fn labels_need_an_allowed_key_or_prefix() {
        let labels = |key: &str| BTreeMap::from([(key.to_owned(), "v".to_owned())]);
        let nothing = LabelPolicy::default();
        assert!(nothing.check(&BTreeMap::new()).is_ok());
        let refused = nothing.check(&labels("team")).unwrap_err();
        assert_eq!(refused.reason(), "NotAllowed");
        assert!(
            refused.to_string().contains("--allowed-label-prefixes"),
            "{refused}"
        );
        let policy = LabelPolicy {
            prefixes: vec!["fl.example.org/".into()],
            keys: vec!["team".into()],
        };
        assert!(policy.check(&labels("team")).is_ok());
        assert!(policy.check(&labels("fl.example.org/run")).is_ok());
        assert!(policy.check(&labels("teams")).is_err());
        assert!(policy.check(&labels("app")).is_err());
    }
}
