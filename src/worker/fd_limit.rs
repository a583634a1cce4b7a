//! The open-files limit a worker needs: it holds one file descriptor per running
//! job (the handle it waits on the process with), besides a few of its own, so
//! `--max-jobs` in the thousands needs more than the common soft limit of 1024.
//!
//! At start-up the worker raises its soft limit to what `max_jobs` needs, never
//! beyond the hard limit and never lower than it is. Jobs inherit the raised limit.

use crate::report::error_chain;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors a worker uses besides one per running job: its connections, log
/// output and runtime.
const RESERVED: u64 = 256;

/// What [`ensure_open_files`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFiles {
    /// The soft limit was enough already.
    Enough {
        /// The soft limit.
        soft: u64,
    },
    /// The soft limit was raised.
    Raised {
        /// The limit before.
        from: u64,
        /// The limit now.
        to: u64,
    },
    /// The limit could not be read.
    Unknown {
        /// The system's error.
        error: nix::errno::Errno,
    },
    /// Even the hard limit is lower than `max_jobs` needs (or it could not be
    /// raised): jobs beyond it fail to start.
    TooLow {
        /// The soft limit now.
        soft: u64,
        /// What `max_jobs` needs.
        needed: u64,
    },
}

/// The open-files limit `max_jobs` running jobs need.
pub fn needed(max_jobs: usize) -> u64 {
    max_jobs as u64 + RESERVED
}

/// The soft limit to set: `needed`, within `hard`, never lowering `soft`.
fn target(soft: u64, hard: u64, needed: u64) -> u64 {
    soft.max(needed.min(hard))
}

/// Raises this process's soft open-files limit to what `max_jobs` needs.
pub fn ensure_open_files(max_jobs: usize) -> OpenFiles {
    let needed = needed(max_jobs);
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => return OpenFiles::Unknown { error },
    };
    let to = target(soft, hard, needed);
    if to == soft {
        return if soft >= needed {
            OpenFiles::Enough { soft }
        } else {
            OpenFiles::TooLow { soft, needed }
        };
    }
    if setrlimit(Resource::RLIMIT_NOFILE, to, hard).is_err() {
        return OpenFiles::TooLow { soft, needed };
    }
    if to >= needed {
        OpenFiles::Raised { from: soft, to }
    } else {
        OpenFiles::TooLow { soft: to, needed }
    }
}

impl OpenFiles {
    /// Logs the outcome: a warning when the limit is too low.
    pub fn log(self) {
        match self {
            OpenFiles::Enough { soft } => tracing::debug!(soft, "open-files limit is enough"),
            OpenFiles::Raised { from, to } => {
                tracing::info!(from, to, "raised the open-files limit for --max-jobs")
            }
            OpenFiles::Unknown { error } => {
                tracing::warn!(error = %error_chain(&error), "could not read the open-files limit")
            }
            OpenFiles::TooLow { soft, needed } => tracing::warn!(
                soft,
                needed,
                "the open-files limit is lower than --max-jobs needs, and the hard limit does not allow more: jobs beyond it fail to start (raise it with `ulimit -n` or LimitNOFILE=)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_what_is_needed_within_the_hard_limit_and_never_lower() {
        assert_eq!(target(1024, 524_288, needed(64)), 1024, "enough already");
        assert_eq!(target(1024, 524_288, needed(5000)), 5256, "raised to need");
        assert_eq!(target(1024, 4096, needed(5000)), 4096, "capped by hard");
        assert_eq!(target(8192, 8192, needed(100)), 8192, "never lowered");
    }
}
