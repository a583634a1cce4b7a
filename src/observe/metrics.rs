//! The worker's metrics, in the OpenMetrics text format that Prometheus reads,
//! on `/metrics` (the `prometheus-client` crate encodes them):
//!
//! - `flare_launcher_job_events_total{state, backend}`: every job event this
//!   worker published (a job's launch is its `starting` event);
//! - `flare_launcher_jobs_ended_total{state, reason, backend}`: the terminal
//!   ones, by end and reason (`reason` empty when the event has none);
//! - `flare_launcher_adoptions_total{backend, outcome}`: jobs of gone workers
//!   this worker took over, `followed` (their workloads adopted) or `ended`
//!   (`lost`, for a process job no other host can follow);
//! - `flare_launcher_jobs_running`: the jobs this worker follows now;
//! - `flare_launcher_capacity_jobs`: its `--max-jobs`;
//! - `flare_launcher_lease_held`: 1 while it holds its lease.
//!
//! Counting costs an atomic increment per event; the gauges are read when
//! scraped.

use crate::protocol::BackendKind;
use crate::protocol::JobRecord;
use crate::protocol::bounded::bounded_to;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Longest reason taken into a label: reasons are short names, and a backend's
/// own (a kubelet's) is bounded before it is recorded anyway.
const MAX_REASON_LABEL: usize = 64;

/// A job event's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    state: String,
    backend: String,
}

/// A job's end's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    state: String,
    reason: String,
    backend: String,
}

/// What became of a job taken over from a gone worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adopted {
    /// Its workload is followed here now.
    Followed,
    /// It was ended (no worker of this host can follow it).
    Ended,
}

impl Adopted {
    /// Its label value.
    fn as_str(self) -> &'static str {
        match self {
            Adopted::Followed => "followed",
            Adopted::Ended => "ended",
        }
    }
}

/// An adoption's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdoptionLabels {
    backend: String,
    outcome: String,
}

/// What the gauges show when scraped.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// The jobs the worker follows.
    pub running: usize,
    /// Whether it holds its lease.
    pub lease_held: bool,
}

/// The worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    ended: Family<EndLabels, Counter>,
    adoptions: Family<AdoptionLabels, Counter>,
    running: Gauge,
    lease_held: Gauge,
}

impl Metrics {
    /// The metrics of a worker that runs at most `max_jobs` jobs at once.
    pub fn new(max_jobs: usize) -> Metrics {
        let mut registry = Registry::with_prefix("flare_launcher");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "job_events",
            "Job events this worker published, by state and backend",
            events.clone(),
        );
        let ended = Family::<EndLabels, Counter>::default();
        registry.register(
            "jobs_ended",
            "Jobs this worker ended, by final state, reason and backend",
            ended.clone(),
        );
        let adoptions = Family::<AdoptionLabels, Counter>::default();
        registry.register(
            "adoptions",
            "Jobs of gone workers this worker took over, by backend and outcome",
            adoptions.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs this worker follows now",
            running.clone(),
        );
        let capacity: Gauge = Gauge::default();
        capacity.set(i64::try_from(max_jobs).unwrap_or(i64::MAX));
        registry.register(
            "capacity_jobs",
            "Most jobs this worker runs at once",
            capacity,
        );
        let lease_held = Gauge::default();
        registry.register(
            "lease_held",
            "1 while this worker holds its lease, else 0",
            lease_held.clone(),
        );
        Metrics {
            registry,
            events,
            ended,
            adoptions,
            running,
            lease_held,
        }
    }

    /// Counts a job of `backend` taken over from a gone worker.
    pub fn adopted(&self, backend: Option<BackendKind>, outcome: Adopted) {
        let backend = backend.map(|kind| kind.to_string()).unwrap_or_default();
        self.adoptions
            .get_or_create(&AdoptionLabels {
                backend,
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts the event of `record`, just published.
    pub fn job_event(&self, record: &JobRecord) {
        let state = record.state.as_str().to_owned();
        let backend = record
            .backend
            .map(|backend| backend.to_string())
            .unwrap_or_default();
        if record.state.is_terminal() {
            let reason = record
                .reason
                .as_deref()
                .map(|reason| bounded_to(reason, MAX_REASON_LABEL))
                .unwrap_or_default();
            self.ended
                .get_or_create(&EndLabels {
                    state: state.clone(),
                    reason,
                    backend: backend.clone(),
                })
                .inc();
        }
        self.events
            .get_or_create(&EventLabels { state, backend })
            .inc();
    }

    /// The metrics as text, the gauges showing `now`.
    pub fn render(&self, now: Now) -> String {
        self.running
            .set(i64::try_from(now.running).unwrap_or(i64::MAX));
        self.lease_held.set(i64::from(now.lease_held));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobId;
    use crate::state::JobState;
    use crate::worker::story::fresh_record;

    fn event(state: JobState, reason: Option<&str>) -> JobRecord {
        let mut record = fresh_record(&JobId::new("j1").unwrap(), "w1", state);
        record.backend = Some(BackendKind::Docker);
        record.reason = reason.map(str::to_owned);
        record
    }

    #[test]
    fn events_and_ends_are_counted_by_their_labels_and_gauges_read_when_rendered() {
        let metrics = Metrics::new(8);
        metrics.job_event(&event(JobState::Starting, None));
        metrics.job_event(&event(JobState::Failed, Some("OOMKilled")));
        metrics.job_event(&event(JobState::Failed, Some("OOMKilled")));
        metrics.adopted(Some(BackendKind::Process), Adopted::Ended);
        let text = metrics.render(Now {
            running: 3,
            lease_held: true,
        });
        for line in [
            "flare_launcher_job_events_total{state=\"starting\",backend=\"docker\"} 1",
            "flare_launcher_job_events_total{state=\"failed\",backend=\"docker\"} 2",
            "flare_launcher_jobs_ended_total{state=\"failed\",reason=\"OOMKilled\",backend=\"docker\"} 2",
            "flare_launcher_adoptions_total{backend=\"process\",outcome=\"ended\"} 1",
            "flare_launcher_jobs_running 3",
            "flare_launcher_capacity_jobs 8",
            "flare_launcher_lease_held 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("state=\"starting\",reason"), "{text}");
    }
}
