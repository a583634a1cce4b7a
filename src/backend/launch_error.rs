//! Why a workload could not be launched ([`LaunchError`]): its kind, which maps
//! to the `reason` of the job's `error` event and to a short stable
//! [`LaunchError::label`] that failures are counted by; what failed, in words;
//! and the error that made it fail ([`Failure`]), kept as the error's source so
//! that a log shows the whole chain. The message (the job's event's) quotes
//! what the request holds only in part (a program name of any length, a working
//! directory), so it always fits in the job's record.

use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use std::fmt;

/// The error behind a failure (the engine's, the cluster's, the operating
/// system's, ...).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What failed, in words, and the error that made it fail when there is one:
/// shown as `WORDS: CAUSE`, bounded.
#[derive(Debug)]
pub struct Failure {
    what: String,
    cause: Option<Cause>,
}

impl Failure {
    /// `what` failed because of `cause`.
    pub fn because(what: impl Into<String>, cause: impl Into<Cause>) -> Failure {
        Failure {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// A failure its cause tells whole.
    pub fn of(cause: impl Into<Cause>) -> Failure {
        Failure {
            what: String::new(),
            cause: Some(cause.into()),
        }
    }
}

impl From<String> for Failure {
    fn from(what: String) -> Failure {
        Failure { what, cause: None }
    }
}

impl From<&str> for Failure {
    fn from(what: &str) -> Failure {
        Failure::from(what.to_owned())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = match (&self.cause, self.what.is_empty()) {
            (Some(cause), true) => cause.to_string(),
            (Some(cause), false) => format!("{}: {cause}", self.what),
            (None, _) => self.what.clone(),
        };
        f.write_str(&bounded(&whole))
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|cause| cause as _)
    }
}

/// Why a workload could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The request asks for something this backend cannot do.
    #[error(transparent)]
    Unsupported(Failure),
    /// The workload could not be created or started: why, as the operating
    /// system, the engine or the cluster said it.
    #[error(transparent)]
    Spawn(Failure),
    /// The backend is not available on this worker.
    #[error(transparent)]
    Unavailable(Failure),
    /// The workload's image is not there and cannot be had.
    #[error(transparent)]
    ImageNotFound(Failure),
    /// The workload's image could not be pulled.
    #[error(transparent)]
    ImagePullFailed(Failure),
    /// A mount the worker's configuration does not allow.
    #[error(transparent)]
    MountNotAllowed(Failure),
    /// A Secret, claim, volume or label the operator's allow-lists do not
    /// allow.
    #[error(transparent)]
    NotAllowed(Failure),
}

impl LaunchError {
    /// The `reason` the job's `error` event carries.
    pub fn reason(&self) -> &'static str {
        match self {
            LaunchError::Unsupported(_) => reason::INVALID_REQUEST,
            LaunchError::Spawn(_) => reason::SPAWN_FAILED,
            LaunchError::Unavailable(_) => reason::BACKEND_UNAVAILABLE,
            LaunchError::ImageNotFound(_) => reason::IMAGE_NOT_FOUND,
            LaunchError::ImagePullFailed(_) => reason::IMAGE_PULL_FAILED,
            LaunchError::MountNotAllowed(_) => reason::MOUNT_NOT_ALLOWED,
            LaunchError::NotAllowed(_) => reason::NOT_ALLOWED,
        }
    }

    /// A short name of the kind of failure that never changes, to count
    /// failures by.
    pub fn label(&self) -> &'static str {
        match self {
            LaunchError::Unsupported(_) => "unsupported",
            LaunchError::Spawn(_) => "spawn",
            LaunchError::Unavailable(_) => "unavailable",
            LaunchError::ImageNotFound(_) => "image_not_found",
            LaunchError::ImagePullFailed(_) => "image_pull",
            LaunchError::MountNotAllowed(_) => "mount_not_allowed",
            LaunchError::NotAllowed(_) => "not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::bounded::MAX_TEXT;
    use crate::report::error_chain;
    use std::error::Error;

    #[test]
    fn launch_errors_quote_the_request_only_in_part() {
        let spawn = LaunchError::Spawn(
            format!(
                "could not start the job: its working directory {} is not a directory",
                "d".repeat(100_000)
            )
            .into(),
        );
        let message = spawn.to_string();
        assert!(message.len() <= MAX_TEXT, "{}", message.len());
        assert!(message.starts_with("could not start the job: its working directory ddd"));
        assert!(message.ends_with("bytes cut)"), "{message}");
        let unsupported = LaunchError::Unsupported("u".repeat(100_000).into());
        assert!(unsupported.to_string().len() <= MAX_TEXT);
        let caused = LaunchError::Spawn(Failure::because(
            "could not create the job's log directory",
            std::io::Error::other("e".repeat(100_000)),
        ));
        assert!(caused.to_string().len() <= MAX_TEXT);
    }

    #[test]
    fn a_launch_error_keeps_its_cause_and_says_it_once() {
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let error = LaunchError::Spawn(Failure::because(
            "could not create the job's log directory",
            denied,
        ));
        assert_eq!(
            error.to_string(),
            "could not create the job's log directory: denied"
        );
        let cause = error.source().expect("a cause");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            error_chain(&error),
            "could not create the job's log directory: denied"
        );
        let told_whole = LaunchError::ImagePullFailed(Failure::of(std::io::Error::other("gone")));
        assert_eq!(told_whole.to_string(), "gone");
        assert_eq!(told_whole.label(), "image_pull");
    }
}
