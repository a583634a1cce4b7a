//! Container exit → terminal event, for a Docker bench: the engine's `die`
//! events of managed containers (one event stream, as a worker has) give the
//! moment each job's container exited, the bench's event reader the moment its
//! terminal event arrived; both are wall-clock times of this host, matched by
//! job id whichever comes first.

use crate::backend::docker::{JOB_ID_LABEL, MANAGED_BY, MANAGED_BY_VALUE};
use crate::cli::CliError;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Exits and terminal events not matched yet, by job id.
#[derive(Default)]
pub struct ExitMatcher {
    exits: HashMap<String, SystemTime>,
    terminals: HashMap<String, SystemTime>,
}

impl ExitMatcher {
    /// `job_id`'s container exited at `at`; returns the latency once its
    /// terminal event is known too.
    pub fn exited(&mut self, job_id: &str, at: SystemTime) -> Option<Duration> {
        match self.terminals.remove(job_id) {
            Some(terminal) => Some(terminal.duration_since(at).unwrap_or_default()),
            None => {
                self.exits.insert(job_id.to_owned(), at);
                None
            }
        }
    }

    /// `job_id`'s terminal event arrived at `at`; returns the latency once its
    /// container's exit is known too.
    pub fn terminal(&mut self, job_id: &str, at: SystemTime) -> Option<Duration> {
        match self.exits.remove(job_id) {
            Some(exit) => Some(at.duration_since(exit).unwrap_or_default()),
            None => {
                self.terminals.insert(job_id.to_owned(), at);
                None
            }
        }
    }
}

/// Follows the engine's `die` events of managed containers, calling `on_exit`
/// with each one's job id and time, until the task is aborted.
///
/// # Errors
/// A [`CliError`] when the engine cannot be reached.
pub async fn watch(
    on_exit: impl Fn(&str, SystemTime) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let docker = super::engine_floor::connect().await?;
    let filters = HashMap::from([
        (
            "label".to_owned(),
            vec![format!("{MANAGED_BY}={MANAGED_BY_VALUE}")],
        ),
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned()]),
    ]);
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..EventsOptions::default()
    }));
    Ok(tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let Some(nanos) = event.time_nano.and_then(|n| u64::try_from(n).ok()) else {
                continue;
            };
            let job_id = event
                .actor
                .and_then(|actor| actor.attributes)
                .and_then(|mut attributes| attributes.remove(JOB_ID_LABEL));
            if let Some(job_id) = job_id {
                on_exit(
                    &job_id,
                    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
                );
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_terminal_events_match_in_either_order() {
        let mut matcher = ExitMatcher::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(matcher.exited("a", t0), None);
        assert_eq!(
            matcher.terminal("a", t0 + Duration::from_millis(7)),
            Some(Duration::from_millis(7))
        );
        assert_eq!(matcher.terminal("b", t0 + Duration::from_millis(3)), None);
        assert_eq!(matcher.exited("b", t0), Some(Duration::from_millis(3)));
        assert!(matcher.exits.is_empty() && matcher.terminals.is_empty());
    }
}
