//! How long a job's story took where its users wait: from its launch request's
//! publication to its `running` event, and from the moment the worker learnt
//! its workload ended to its terminal event. Each is noted when its event goes
//! out ([`Timing::published`]), into the worker's metrics.

use crate::observe::Metrics;
use crate::protocol::BackendKind;
use crate::state::JobState;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// When the waits a story measures began.
#[derive(Debug, Default)]
pub struct Timing {
    /// When the job's launch request was published.
    requested: Option<OffsetDateTime>,
    /// When the worker learnt its workload ended.
    workload_ended: Option<Instant>,
}

impl Timing {
    /// The launch request was published at `at`.
    pub fn requested_at(&mut self, at: OffsetDateTime) {
        self.requested = Some(at);
    }

    /// The worker learns now that the workload ended (the first time counts).
    pub fn workload_ended(&mut self) {
        self.workload_ended.get_or_insert_with(Instant::now);
    }

    /// The event of `state` went out for a job of `backend`: the wait it ends,
    /// if one began, is noted in `metrics`.
    pub fn published(&mut self, metrics: &Metrics, backend: Option<BackendKind>, state: JobState) {
        let Some(backend) = backend else {
            return;
        };
        if state == JobState::Running
            && let Some(requested) = self.requested.take()
        {
            let waited = OffsetDateTime::now_utc() - requested;
            metrics.launched_in(
                backend,
                Duration::try_from(waited).unwrap_or(Duration::ZERO),
            );
        }
        if state.is_terminal()
            && let Some(ended) = self.workload_ended.take()
        {
            metrics.ended_in(backend, ended.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &Metrics, name: &str) -> String {
        let text = metrics.render(crate::observe::metrics::Now {
            running: 0,
            lease_held: true,
            gpus_held: 0,
            gpus_free: 0,
            nats_connects: 1,
        });
        text.lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn each_wait_is_noted_once_by_the_event_that_ends_it() {
        let metrics = Metrics::new(1);
        let mut timing = Timing::default();
        let docker = Some(BackendKind::Docker);
        timing.published(&metrics, docker, JobState::Running);
        assert_eq!(count(&metrics, "flare_launcher_launch_seconds_count"), "");
        timing.requested_at(OffsetDateTime::now_utc() - time::Duration::milliseconds(30));
        timing.published(&metrics, docker, JobState::Starting);
        timing.published(&metrics, docker, JobState::Running);
        timing.published(&metrics, docker, JobState::Running);
        assert_eq!(
            count(&metrics, "flare_launcher_launch_seconds_count"),
            "flare_launcher_launch_seconds_count{backend=\"docker\"} 1"
        );
        assert!(
            count(&metrics, "flare_launcher_launch_seconds_sum")
                .ends_with(|c: char| c.is_ascii_digit())
        );
        timing.workload_ended();
        timing.published(&metrics, docker, JobState::Failed);
        timing.published(&metrics, docker, JobState::Failed);
        assert_eq!(
            count(&metrics, "flare_launcher_end_seconds_count"),
            "flare_launcher_end_seconds_count{backend=\"docker\"} 1"
        );
    }
}
