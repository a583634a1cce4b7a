//! Reading how a container ended, with as few Engine API requests as the
//! events allow: the `die` event carries the exit code, and an `oom` event of
//! the same container usually comes before it, so a container that exited 0, or
//! was stopped by the worker, or whose `oom` was seen, costs no inspect. One
//! inspect reads the end when the events cannot tell: an end seen only by a
//! re-list or on a container found again, a `die` without an exit code, or a
//! failure (non-zero exit) that neither the worker asked for nor an `oom` event
//! explained: the out-of-memory killer may have killed another process of the
//! container, and the engine may report it after the `die` (the memory events
//! and the exits reach it by different paths).

use super::engine::Engine;
use crate::backend::Observation;
use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use crate::state::Exit;

/// What the worker knows of a container's end before it reads anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its `die` event said it exited with this code.
    Died(i64),
    /// Only that it may have ended (a re-list, a container found again, a `die`
    /// without an exit code).
    Unread,
}

impl Ending {
    /// The ending a `die` event's `exitCode` attribute tells.
    pub fn of_die(exit_code: Option<&str>) -> Ending {
        exit_code
            .and_then(|code| code.parse().ok())
            .map_or(Ending::Unread, Ending::Died)
    }
}

/// What is known of the container when its end is read.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The ending the events gave.
    pub ending: Ending,
    /// Whether an `oom` event of the container came.
    pub oom: bool,
    /// Whether the worker asked it to stop.
    pub stopped: bool,
}

/// A container's end, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    code: i64,
    oom_killed: bool,
}

/// Why a container's end cannot be read (yet).
enum Unreadable {
    /// It runs (a re-list saw it an instant before it started again).
    Running,
    /// It is gone, or the engine cannot say: the observation that ends the job.
    Vanished(Observation),
}

impl Seen {
    /// The end the events alone tell, when they tell enough.
    fn end(self) -> Option<End> {
        let Ending::Died(code) = self.ending else {
            return None;
        };
        let unexplained_failure = code != 0 && !self.oom && !self.stopped;
        (!unexplained_failure).then_some(End {
            code,
            oom_killed: self.oom,
        })
    }
}

/// Reads the end of the container `name` (one inspect only when the events do
/// not tell it) and returns the observation to report; `None` when the
/// container runs after all.
pub async fn read(docker: &Engine, name: &str, seen: Seen) -> Option<Observation> {
    let end = match seen.end() {
        Some(end) => end,
        None => match inspect(docker, name).await {
            Ok(end) => End {
                oom_killed: end.oom_killed || seen.oom,
                ..end
            },
            Err(Unreadable::Running) => return None,
            Err(Unreadable::Vanished(observation)) => return Some(observation),
        },
    };
    Some(Observation::Exited {
        exit: Exit::Code(i32::try_from(end.code).unwrap_or(-1)),
        stopped: seen.stopped,
        reason: end.oom_killed.then_some(reason::OOM_KILLED),
    })
}

/// The end as the engine keeps it (`State.ExitCode`, `State.OOMKilled`).
async fn inspect(docker: &Engine, name: &str) -> Result<End, Unreadable> {
    let inspected = docker.api.inspect_container(name, None).await;
    match docker.counted("inspect_container", inspected) {
        Ok(inspected) => {
            let state = inspected.state.unwrap_or_default();
            if state.running == Some(true) {
                return Err(Unreadable::Running);
            }
            Ok(End {
                code: state.exit_code.unwrap_or(-1),
                oom_killed: state.oom_killed == Some(true),
            })
        }
        Err(e) => Err(Unreadable::Vanished(Observation::Vanished {
            reason: reason::WORKLOAD_VANISHED,
            message: bounded(&format!(
                "its container {name} cannot be inspected any more: {e}"
            )),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ending: Ending, oom: bool, stopped: bool) -> Seen {
        Seen {
            ending,
            oom,
            stopped,
        }
    }

    #[test]
    fn a_die_event_tells_the_end_without_an_inspect() {
        let end = |code, oom_killed| Some(End { code, oom_killed });
        assert_eq!(seen(Ending::Died(0), false, false).end(), end(0, false));
        assert_eq!(seen(Ending::Died(137), true, false).end(), end(137, true));
        assert_eq!(seen(Ending::Died(1), true, false).end(), end(1, true));
        // Killed because the worker stopped it: nothing to explain.
        assert_eq!(seen(Ending::Died(137), false, true).end(), end(137, false));
    }

    #[test]
    fn an_unexplained_failure_or_an_unread_end_needs_an_inspect() {
        assert_eq!(seen(Ending::Died(137), false, false).end(), None);
        // Another process of the container may have been killed for memory.
        assert_eq!(seen(Ending::Died(3), false, false).end(), None);
        assert_eq!(seen(Ending::Unread, true, true).end(), None);
    }

    #[test]
    fn a_die_without_a_readable_code_is_unread() {
        assert_eq!(Ending::of_die(Some("101")), Ending::Died(101));
        assert_eq!(Ending::of_die(Some("x")), Ending::Unread);
        assert_eq!(Ending::of_die(None), Ending::Unread);
    }
}
