//! A job's identity, [`JobId`]: the one place where the protocol's rule for a
//! usable `job_id` is written (1 to 128 characters of `A-Z a-z 0-9 . _ -`, and one
//! NATS can put in a subject: not starting or ending with `.`, no `..`). Whatever
//! holds a `JobId` holds an id that was checked; the wire types keep plain strings
//! and are checked against it when they are decoded.

use super::MAX_JOB_ID_LEN;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a text is not a usable job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIdError {
    /// Empty, or longer than [`MAX_JOB_ID_LEN`].
    #[error("job_id must be 1 to {MAX_JOB_ID_LEN} characters, got {0}")]
    Length(usize),
    /// A character outside the alphabet.
    #[error("job_id may contain only A-Z a-z 0-9 . _ -, found {0:?}")]
    Character(char),
    /// Dots NATS cannot put in a subject (its tokens cannot be empty).
    #[error(
        "job_id {0:?} cannot be used in a NATS subject: it may not start or end with '.' or contain '..'"
    )]
    NotSubjectSafe(String),
}

/// A job id that follows the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Checks `id` and takes it as a job id.
    ///
    /// # Errors
    /// A [`JobIdError`] naming the rule `id` breaks.
    pub fn new(id: impl Into<String>) -> Result<JobId, JobIdError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
            return Err(JobIdError::Length(id.len()));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(JobIdError::Character(bad));
        }
        if id.starts_with('.') || id.ends_with('.') || id.contains("..") {
            return Err(JobIdError::NotSubjectSafe(id));
        }
        Ok(JobId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for JobId {
    type Err = JobIdError;
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        JobId::new(id)
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        JobId::new(id)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for JobId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_the_alphabet_and_length_are_taken() {
        for good in ["j1", "a.B_c-9", "a.b.c", &"a".repeat(MAX_JOB_ID_LEN)] {
            assert_eq!(JobId::new(good).unwrap(), good);
        }
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(JobId::new(""), Err(JobIdError::Length(0)));
        assert_eq!(
            JobId::new("a".repeat(MAX_JOB_ID_LEN + 1)),
            Err(JobIdError::Length(MAX_JOB_ID_LEN + 1))
        );
        assert_eq!(JobId::new("a b"), Err(JobIdError::Character(' ')));
        assert_eq!(JobId::new("a/b"), Err(JobIdError::Character('/')));
        assert_eq!(JobId::new("é"), Err(JobIdError::Character('é')));
        for unsafe_in_a_subject in [".a", "a.", "a..b", "."] {
            assert!(
                matches!(
                    JobId::new(unsafe_in_a_subject),
                    Err(JobIdError::NotSubjectSafe(_))
                ),
                "{unsafe_in_a_subject}"
            );
        }
        assert!(
            JobIdError::NotSubjectSafe("a..b".into())
                .to_string()
                .contains("'..'")
        );
    }

    #[test]
    fn it_decodes_only_when_valid() {
        let id: JobId = serde_json::from_str(r#""a.b""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""a.b""#);
        assert!(serde_json::from_str::<JobId>(r#""a b""#).is_err());
    }
}
