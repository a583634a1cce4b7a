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
//! - `flare_launcher_launch_failures_total{backend, error}`: launches a
//!   backend refused, by the kind of its error;
//! - `flare_launcher_launch_seconds{backend}`: from a launch request's
//!   publication to its job's `running` event (a histogram);
//! - `flare_launcher_end_seconds{backend}`: from the moment the worker learns a
//!   workload ended to its job's terminal event (a histogram);
//! - `flare_launcher_api_requests_total{api, kind}` and
//!   `flare_launcher_api_errors_total{api, kind}`: requests to the Docker engine
//!   and the Kubernetes API server, and those that failed;
//! - `flare_launcher_departures_total{how}`: workers of the pool seen going,
//!   `handed_over` (their lease released) or `lapsed`;
//! - `flare_launcher_nats_reconnects_total`: reconnections to NATS;
//! - `flare_launcher_jobs_running`: the jobs this worker follows now;
//! - `flare_launcher_capacity_jobs`: its `--max-jobs`;
//! - `flare_launcher_gpus{state}`: its GPUs `held` by jobs and `free`;
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
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

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

/// Labels of a job's backend alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// A refused launch's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    backend: String,
    error: String,
}

/// An API request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
    kind: String,
}

/// A departure's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepartureLabels {
    how: String,
}

/// A GPU count's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    state: String,
}

/// Upper bounds of the launch latency's buckets, in seconds: a process starts
/// in milliseconds, a pod whose image is pulled in minutes.
const LAUNCH_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds of the end latency's buckets, in seconds.
const END_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram family's maker, for `Family::new_with_constructor`.
type MakeHistogram = fn() -> Histogram;

fn launch_histogram() -> Histogram {
    Histogram::new(LAUNCH_BUCKETS)
}

fn end_histogram() -> Histogram {
    Histogram::new(END_BUCKETS)
}

/// Notes `latency` of a job of `backend` in the histogram family `family`.
fn observe(
    family: &Family<BackendLabels, Histogram, MakeHistogram>,
    backend: BackendKind,
    latency: Duration,
) {
    family
        .get_or_create(&BackendLabels {
            backend: backend.to_string(),
        })
        .observe(latency.as_secs_f64());
}

/// Counts one API's requests (the Docker engine's, or the Kubernetes API
/// server's), by kind; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiCalls {
    api: &'static str,
    requests: Family<ApiLabels, Counter>,
    errors: Family<ApiLabels, Counter>,
}

impl ApiCalls {
    /// Counts a request of `kind` (e.g. `inspect_container`, `get pods`),
    /// and whether it `failed`.
    pub fn count(&self, kind: &str, failed: bool) {
        let labels = ApiLabels {
            api: self.api.to_owned(),
            kind: kind.to_owned(),
        };
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a request of `kind` that gave `result`, and hands it back.
    pub fn counted<T, E>(&self, kind: &str, result: Result<T, E>) -> Result<T, E> {
        self.count(kind, result.is_err());
        result
    }
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
    /// Its GPUs held by jobs.
    pub gpus_held: usize,
    /// Its GPUs free.
    pub gpus_free: usize,
    /// How often its NATS connection was made, the first time included.
    pub nats_connects: u64,
}

/// The worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    ended: Family<EndLabels, Counter>,
    adoptions: Family<AdoptionLabels, Counter>,
    launch_failures: Family<FailureLabels, Counter>,
    launch_seconds: Family<BackendLabels, Histogram, MakeHistogram>,
    end_seconds: Family<BackendLabels, Histogram, MakeHistogram>,
    api_requests: Family<ApiLabels, Counter>,
    api_errors: Family<ApiLabels, Counter>,
    departures: Family<DepartureLabels, Counter>,
    nats_reconnects: Counter,
    running: Gauge,
    gpus: Family<GpuLabels, Gauge>,
    lease_held: Gauge,
    /// Held while the gauges are set and the counters caught up, so that two
    /// scrapes at once count a reconnection once.
    rendering: std::sync::Mutex<()>,
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
        let launch_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "launch_failures",
            "Launches a backend refused, by backend and kind of error",
            launch_failures.clone(),
        );
        let launch_seconds =
            Family::<BackendLabels, Histogram, MakeHistogram>::new_with_constructor(
                launch_histogram,
            );
        registry.register(
            "launch_seconds",
            "From a launch request's publication to its job's running event",
            launch_seconds.clone(),
        );
        let end_seconds =
            Family::<BackendLabels, Histogram, MakeHistogram>::new_with_constructor(end_histogram);
        registry.register(
            "end_seconds",
            "From the moment the worker learns a workload ended to its job's terminal event",
            end_seconds.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the Docker engine and the Kubernetes API server, by API and kind",
            api_requests.clone(),
        );
        let api_errors = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_errors",
            "Requests to the Docker engine and the Kubernetes API server that failed",
            api_errors.clone(),
        );
        let departures = Family::<DepartureLabels, Counter>::default();
        registry.register(
            "departures",
            "Workers of the pool seen going, handed_over or lapsed",
            departures.clone(),
        );
        let nats_reconnects = Counter::default();
        registry.register(
            "nats_reconnects",
            "Reconnections to NATS",
            nats_reconnects.clone(),
        );
        let gpus = Family::<GpuLabels, Gauge>::default();
        registry.register(
            "gpus",
            "This worker's GPUs, held by jobs or free",
            gpus.clone(),
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
            launch_failures,
            launch_seconds,
            end_seconds,
            api_requests,
            api_errors,
            departures,
            nats_reconnects,
            running,
            gpus,
            lease_held,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// What counts the requests to `api` (`docker`, `kubernetes`).
    pub fn api_calls(&self, api: &'static str) -> ApiCalls {
        ApiCalls {
            api,
            requests: self.api_requests.clone(),
            errors: self.api_errors.clone(),
        }
    }

    /// Counts a launch `backend` refused with an error of kind `error`.
    pub fn launch_failed(&self, backend: BackendKind, error: &'static str) {
        self.launch_failures
            .get_or_create(&FailureLabels {
                backend: backend.to_string(),
                error: error.to_owned(),
            })
            .inc();
    }

    /// Notes how long a job of `backend` took from its request's publication
    /// to `running`.
    pub fn launched_in(&self, backend: BackendKind, latency: Duration) {
        observe(&self.launch_seconds, backend, latency);
    }

    /// Notes how long a job of `backend` took from its workload's end, as the
    /// worker learnt it, to its terminal event.
    pub fn ended_in(&self, backend: BackendKind, latency: Duration) {
        observe(&self.end_seconds, backend, latency);
    }

    /// Counts a worker of the pool that went: `released` its lease (a
    /// hand-over), or let it lapse.
    pub fn departed(&self, released: bool) {
        let how = if released { "handed_over" } else { "lapsed" };
        self.departures
            .get_or_create(&DepartureLabels {
                how: how.to_owned(),
            })
            .inc();
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
        let _rendering = crate::locked::lock(&self.rendering);
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.running.set(gauge(now.running));
        self.lease_held.set(i64::from(now.lease_held));
        for (state, n) in [("held", now.gpus_held), ("free", now.gpus_free)] {
            self.gpus
                .get_or_create(&GpuLabels {
                    state: state.to_owned(),
                })
                .set(gauge(n));
        }
        // The counter only rises: it catches up with the connection's count.
        let reconnects = now.nats_connects.saturating_sub(1);
        let counted = self.nats_reconnects.get();
        if reconnects > counted {
            self.nats_reconnects.inc_by(reconnects - counted);
        }
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
        metrics.launch_failed(BackendKind::Docker, "image_not_found");
        metrics.launched_in(BackendKind::Docker, Duration::from_millis(70));
        metrics.ended_in(BackendKind::Docker, Duration::from_millis(3));
        metrics.departed(true);
        let calls = metrics.api_calls("docker");
        calls.count("inspect_container", false);
        let failed: Result<(), ()> = calls.counted("inspect_container", Err(()));
        assert!(failed.is_err());
        let now = Now {
            running: 3,
            lease_held: true,
            gpus_held: 1,
            gpus_free: 2,
            nats_connects: 3,
        };
        metrics.render(now);
        let text = metrics.render(now);
        for line in [
            "flare_launcher_job_events_total{state=\"starting\",backend=\"docker\"} 1",
            "flare_launcher_job_events_total{state=\"failed\",backend=\"docker\"} 2",
            "flare_launcher_jobs_ended_total{state=\"failed\",reason=\"OOMKilled\",backend=\"docker\"} 2",
            "flare_launcher_adoptions_total{backend=\"process\",outcome=\"ended\"} 1",
            "flare_launcher_launch_failures_total{backend=\"docker\",error=\"image_not_found\"} 1",
            "flare_launcher_launch_seconds_bucket{le=\"0.05\",backend=\"docker\"} 0",
            "flare_launcher_launch_seconds_bucket{le=\"0.1\",backend=\"docker\"} 1",
            "flare_launcher_end_seconds_bucket{le=\"0.0025\",backend=\"docker\"} 0",
            "flare_launcher_end_seconds_bucket{le=\"0.005\",backend=\"docker\"} 1",
            "flare_launcher_api_requests_total{api=\"docker\",kind=\"inspect_container\"} 2",
            "flare_launcher_api_errors_total{api=\"docker\",kind=\"inspect_container\"} 1",
            "flare_launcher_departures_total{how=\"handed_over\"} 1",
            // Rendered twice, three connections are two reconnections.
            "flare_launcher_nats_reconnects_total 2",
            "flare_launcher_gpus{state=\"held\"} 1",
            "flare_launcher_gpus{state=\"free\"} 2",
            "flare_launcher_jobs_running 3",
            "flare_launcher_capacity_jobs 8",
            "flare_launcher_lease_held 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("state=\"starting\",reason"), "{text}");
    }
}
