//! Which of the worker's environment variables its jobs inherit: a policy
//! (`--job-env-allow` or `--job-env-deny`, names or prefixes ending in `*`) and
//! the pure function that turns it, with the worker's environment, into the names
//! a job's environment goes without. The worker computes that list once at
//! start-up.
//!
//! `FLARE_*` variables, the worker's own settings (NATS credentials among them),
//! are withheld whatever the policy says.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::str::FromStr;

/// The prefix of the worker's own variables, never passed to jobs.
pub const WORKER_ENV_PREFIX: &str = "FLARE_";
/// Longest pattern shown in an error.
const MAX_SHOWN_LEN: usize = 128;

/// A variable name, or a prefix followed by `*` (`LC_*`; `*` alone is every name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPattern {
    /// The name, or the prefix without its `*`.
    text: String,
    /// Whether `text` is a prefix.
    prefix: bool,
}

impl EnvPattern {
    /// Whether the variable `name` matches.
    pub fn matches(&self, name: &[u8]) -> bool {
        if self.prefix {
            name.starts_with(self.text.as_bytes())
        } else {
            name == self.text.as_bytes()
        }
    }
}

impl FromStr for EnvPattern {
    type Err = JobEnvError;

    /// Parses a pattern; whitespace around it is dropped.
    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let trimmed = pattern.trim();
        let (text, prefix) = match trimmed.strip_suffix('*') {
            Some(text) => (text, true),
            None => (trimmed, false),
        };
        let problem = if trimmed.is_empty() {
            Some("it is empty")
        } else if text.contains('*') {
            Some("`*` may only end it")
        } else if text.contains(['=', '\0']) {
            Some("a variable name holds no `=` or NUL")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(JobEnvError::BadPattern {
                pattern: pattern.chars().take(MAX_SHOWN_LEN).collect(),
                problem,
            }),
            None => Ok(EnvPattern {
                text: text.to_owned(),
                prefix,
            }),
        }
    }
}

/// Which of the worker's variables jobs inherit (besides `FLARE_*`, which they never do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnvPolicy {
    /// Only the variables that match.
    Allow(Vec<EnvPattern>),
    /// Every variable but those that match.
    Deny(Vec<EnvPattern>),
}

impl Default for JobEnvPolicy {
    /// Every variable (but `FLARE_*`).
    fn default() -> Self {
        JobEnvPolicy::Deny(Vec::new())
    }
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JobEnvError {
    /// Both lists are given.
    #[error(
        "--job-env-allow and --job-env-deny (job_env_allow, job_env_deny) exclude each other; give one"
    )]
    BothLists,
    /// A pattern is not a name or a prefix followed by `*`.
    #[error("job environment pattern {pattern:?}: {problem}")]
    BadPattern {
        /// The pattern, cut to a readable length.
        pattern: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl JobEnvPolicy {
    /// The policy from the allow-list or the deny-list (neither: the default).
    /// Blank entries are skipped, so an empty allow-list (`--job-env-allow ''`)
    /// passes nothing.
    ///
    /// # Errors
    /// [`JobEnvError::BothLists`], or [`JobEnvError::BadPattern`] for the first
    /// bad pattern.
    pub fn from_lists(
        allow: Option<&[String]>,
        deny: Option<&[String]>,
    ) -> Result<JobEnvPolicy, JobEnvError> {
        let parse = |list: &[String]| -> Result<Vec<EnvPattern>, JobEnvError> {
            list.iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.parse::<EnvPattern>())
                .collect()
        };
        match (allow, deny) {
            (Some(_), Some(_)) => Err(JobEnvError::BothLists),
            (Some(allow), None) => Ok(JobEnvPolicy::Allow(parse(allow)?)),
            (None, Some(deny)) => Ok(JobEnvPolicy::Deny(parse(deny)?)),
            (None, None) => Ok(JobEnvPolicy::default()),
        }
    }

    /// Whether a job inherits the worker's variable `name`.
    fn passes(&self, name: &[u8]) -> bool {
        if name.starts_with(WORKER_ENV_PREFIX.as_bytes()) {
            return false;
        }
        let matched = |patterns: &[EnvPattern]| patterns.iter().any(|p| p.matches(name));
        match self {
            JobEnvPolicy::Allow(patterns) => matched(patterns),
            JobEnvPolicy::Deny(patterns) => !matched(patterns),
        }
    }
}

/// The names, among the worker's variables `worker_env`, that a job's environment
/// goes without under `policy`.
pub fn withheld(
    worker_env: impl IntoIterator<Item = OsString>,
    policy: &JobEnvPolicy,
) -> Vec<OsString> {
    worker_env
        .into_iter()
        .filter(|name| !policy.passes(name.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(names: &[&str]) -> Vec<OsString> {
        names.iter().map(OsString::from).collect()
    }

    fn policy(allow: Option<&[&str]>, deny: Option<&[&str]>) -> JobEnvPolicy {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (allow, deny) = (allow.map(owned), deny.map(owned));
        JobEnvPolicy::from_lists(allow.as_deref(), deny.as_deref()).unwrap()
    }

    const WORKER_ENV: &[&str] = &[
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "FLARE_NATS_TOKEN",
        "FLARE_POOL",
        "HOME",
    ];

    /// Asserts what the policy from `allow` and `deny` withholds of [`WORKER_ENV`].
    fn assert_withholds(allow: Option<&[&str]>, deny: Option<&[&str]>, expected: &[&str]) {
        let withheld = withheld(env(WORKER_ENV), &policy(allow, deny));
        assert_eq!(withheld, env(expected), "allow {allow:?}, deny {deny:?}");
    }

    #[test]
    fn by_default_only_the_workers_own_settings_are_withheld() {
        assert_withholds(None, None, &["FLARE_NATS_TOKEN", "FLARE_POOL"]);
    }

    #[test]
    fn a_deny_list_withholds_its_matches_too() {
        let expected = [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "FLARE_NATS_TOKEN",
            "FLARE_POOL",
            "HOME",
        ];
        assert_withholds(None, Some(&["AWS_*", "HOME"]), &expected);
    }

    #[test]
    fn an_allow_list_passes_only_its_matches() {
        let expected = [
            "LANG",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "FLARE_NATS_TOKEN",
            "FLARE_POOL",
            "HOME",
        ];
        assert_withholds(Some(&["PATH", "LC_*"]), None, &expected);
    }

    #[test]
    fn flare_settings_are_withheld_whatever_the_lists_say() {
        assert_withholds(Some(&["*"]), None, &["FLARE_NATS_TOKEN", "FLARE_POOL"]);
        let explicit = policy(Some(&["FLARE_NATS_TOKEN", "PATH"]), None);
        assert!(withheld(env(WORKER_ENV), &explicit).contains(&"FLARE_NATS_TOKEN".into()));
    }

    #[test]
    fn an_empty_allow_list_passes_nothing() {
        assert_eq!(
            policy(Some(&["", " "]), None),
            JobEnvPolicy::Allow(Vec::new())
        );
        assert_withholds(Some(&[""]), None, WORKER_ENV);
    }

    #[test]
    fn names_match_whole_and_prefixes_match_starts() {
        let exact: EnvPattern = "LANG".parse().unwrap();
        assert!(exact.matches(b"LANG"));
        assert!(!exact.matches(b"LANGUAGE"));
        assert!(!exact.matches(b"LAN"));
        let prefix: EnvPattern = " LC_* ".parse().unwrap();
        assert!(prefix.matches(b"LC_ALL"));
        assert!(prefix.matches(b"LC_"));
        assert!(!prefix.matches(b"LANG"));
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(b"X_\xff".to_vec());
        let policy = policy(None, Some(&["X_*"]));
        assert_eq!(withheld([odd.clone()], &policy), [odd]);
    }

    #[test]
    fn bad_patterns_and_both_lists_are_refused() {
        for bad in ["", "  ", "A*B", "**", "A=B", "*X"] {
            assert!(
                matches!(
                    bad.parse::<EnvPattern>(),
                    Err(JobEnvError::BadPattern { .. })
                ),
                "{bad:?}"
            );
        }
        let list = vec!["PATH".to_string()];
        assert!(matches!(
            JobEnvPolicy::from_lists(Some(&list), Some(&list)),
            Err(JobEnvError::BothLists)
        ));
        let long = format!("{}=", "A".repeat(10_000));
        let error = long.parse::<EnvPattern>().unwrap_err();
        assert!(error.to_string().len() < 300, "cut: {error}");
    }
}
