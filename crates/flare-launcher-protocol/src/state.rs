//! The job state machine and NVFlare's return codes, as pure functions.
//!
//! Every other module asks this one whether a transition is allowed and which
//! `return_code` a terminal state carries, so the table in docs/protocol.md lives in
//! exactly one place.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// NVFlare `JobReturnCode` values used on the wire.
pub mod return_code {
    /// The job ended with exit code 0.
    pub const SUCCESS: i32 = 0;
    /// Any failure that is not one of NVFlare's own codes.
    pub const EXECUTION_ERROR: i32 = 1;
    /// Stopped on purpose.
    pub const ABORTED: i32 = 9;
    /// NVFlare's job process raised an exception.
    pub const EXCEPTION: i32 = 101;
    /// NVFlare refused an unsafe component.
    pub const UNSAFE_COMPONENT: i32 = 102;
    /// NVFlare found the job's configuration invalid.
    pub const CONFIG_ERROR: i32 = 103;
    /// The job could not be started or run by the infrastructure, or its
    /// workload was lost (since revision 2 of the protocol; see docs/protocol.md).
    pub const INFRASTRUCTURE_ERROR: i32 = 104;
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; the workload is being created (or the pod is Pending).
    Starting,
    /// The workload runs.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited with a non-zero code, or was killed by a signal nobody asked for.
    Failed,
    /// Stopped on purpose (terminate request, run timeout, worker shutdown).
    Terminated,
    /// Could not be started.
    Error,
    /// Its worker died and nobody can find the workload again.
    Lost,
}

impl JobState {
    /// Every state, in the order of the protocol's table.
    pub const ALL: [JobState; 7] = [
        JobState::Starting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Terminated,
        JobState::Error,
        JobState::Lost,
    ];

    /// Whether the job's story is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Starting | JobState::Running)
    }

    /// Whether a job in `self` may move to `next`:
    ///
    /// ```text
    /// starting ──> running ──> succeeded | failed | terminated | lost
    ///     └──────> error | terminated | lost
    /// ```
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        match self {
            Starting => matches!(next, Running | Error | Terminated | Lost),
            Running => matches!(next, Succeeded | Failed | Terminated | Lost),
            _ => false,
        }
    }

    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Terminated => "terminated",
            JobState::Error => "error",
            JobState::Lost => "lost",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The state the job is in.
    pub from: JobState,
    /// The state that was asked for.
    pub to: JobState,
}

/// Checks a transition, for callers that want an error rather than a bool.
pub fn transition(from: JobState, to: JobState) -> Result<JobState, InvalidTransition> {
    if from.can_become(to) {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

/// How a workload that ran came to an end, as far as the backend could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It exited by itself with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The raw exit code to report: the code itself, or 128 + signal as shells and
    /// Docker report it.
    pub fn exit_code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

/// The terminal state of a workload that ended: `stopped` says whether it had
/// been asked to stop (terminate request, run timeout, shutdown) before it ended.
/// Then it is `terminated`, whatever its code, even 0 from a clean shutdown on
/// SIGTERM; otherwise its code decides.
pub fn state_after_exit(exit: Exit, stopped: bool) -> JobState {
    match exit {
        _ if stopped => JobState::Terminated,
        Exit::Code(0) => JobState::Succeeded,
        _ => JobState::Failed,
    }
}

/// The NVFlare return code a terminal state carries, `None` while the job is not
/// terminal. `exit_code` matters only for `failed`.
pub fn return_code_for(state: JobState, exit_code: Option<i32>) -> Option<i32> {
    use return_code::*;
    match state {
        JobState::Starting | JobState::Running => None,
        JobState::Succeeded => Some(SUCCESS),
        JobState::Failed => Some(match exit_code {
            Some(
                code @ (ABORTED | EXCEPTION | UNSAFE_COMPONENT | CONFIG_ERROR
                | INFRASTRUCTURE_ERROR),
            ) => code,
            _ => EXECUTION_ERROR,
        }),
        JobState::Terminated => Some(ABORTED),
        JobState::Error | JobState::Lost => Some(INFRASTRUCTURE_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn allowed_transitions_are_exactly_the_protocols() {
        let allowed = [
            (Starting, Running),
            (Starting, Error),
            (Starting, Terminated),
            (Starting, Lost),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Terminated),
            (Running, Lost),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                assert_eq!(transition(from, to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out_and_carry_a_return_code() {
        for state in JobState::ALL {
            assert_eq!(
                state.is_terminal(),
                !matches!(state, Starting | Running),
                "{state}"
            );
            assert_eq!(
                return_code_for(state, Some(0)).is_some(),
                state.is_terminal()
            );
            if state.is_terminal() {
                assert!(JobState::ALL.iter().all(|&to| !state.can_become(to)));
            }
        }
    }

    #[test]
    fn return_code_table() {
        assert_eq!(return_code_for(Succeeded, Some(0)), Some(0));
        for code in [9, 101, 102, 103, 104] {
            assert_eq!(return_code_for(Failed, Some(code)), Some(code));
        }
        for code in [1, 2, 3, 8, 10, 100, 105, 127, 137, 255, -1] {
            assert_eq!(return_code_for(Failed, Some(code)), Some(1), "{code}");
        }
        assert_eq!(return_code_for(Failed, None), Some(1));
        assert_eq!(return_code_for(Terminated, Some(143)), Some(9));
        assert_eq!(return_code_for(Error, None), Some(104));
        assert_eq!(return_code_for(Lost, None), Some(104));
        assert_eq!(return_code_for(Running, None), None);
        assert_eq!(return_code_for(Starting, None), None);
    }

    #[test]
    fn exits_map_to_states() {
        assert_eq!(state_after_exit(Exit::Code(0), false), Succeeded);
        assert_eq!(state_after_exit(Exit::Code(0), true), Terminated);
        assert_eq!(state_after_exit(Exit::Code(3), false), Failed);
        assert_eq!(state_after_exit(Exit::Code(3), true), Terminated);
        assert_eq!(state_after_exit(Exit::Signal(9), false), Failed);
        assert_eq!(state_after_exit(Exit::Signal(15), true), Terminated);
        // A signal nobody asked for is an execution error, whatever its number.
        let killed = Exit::Signal(9);
        assert_eq!(killed.exit_code(), 137);
        assert_eq!(
            return_code_for(state_after_exit(killed, false), Some(killed.exit_code())),
            Some(1)
        );
    }

    #[test]
    fn wire_names_match_serde() {
        for state in JobState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }
}
