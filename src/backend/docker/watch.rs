//! Watching every container of a worker through one Docker event stream: the
//! stream (filtered by the managed-by label) hands each `die` to the job that
//! follows the container without ever waiting on it; a short task then reads the
//! end with one inspect (exit code, `OOMKilled`), copies the container's output
//! into the job's log file and reports the exit. A dropped stream reconnects with
//! backoff, replaying the events it missed (`since`), and a re-list after each
//! connection repairs whatever the replay lacks. A running container costs no
//! request while it runs.

use super::spec;
use crate::backend::Observation;
use crate::backend::job_output::JobLog;
use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use crate::state::Exit;
use backon::BackoffBuilder;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptions};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most observations a job gets (running, then its end): the channel never fills.
const OBSERVATIONS: usize = 4;

/// A container a job task follows.
struct Followed {
    /// The container's name.
    name: String,
    /// Where its output goes once it ended.
    log: PathBuf,
    /// Where its observations go.
    observe: mpsc::Sender<Observation>,
    /// Whether the worker asked it to stop.
    stopped: Arc<AtomicBool>,
    /// Whether its end is being read (a `die` and a re-list may both see it).
    ending: bool,
}

/// What a new follower gets: its observations, and the flag its control sets.
pub struct Following {
    /// The job's observations.
    pub observations: mpsc::Receiver<Observation>,
    /// Set when the worker asks the container to stop.
    pub stopped: Arc<AtomicBool>,
}

/// The containers this worker follows, by job id, and the engine they run on.
pub struct Watch {
    docker: Docker,
    worker: String,
    followed: Mutex<HashMap<String, Followed>>,
}

impl Watch {
    /// Follows nothing yet.
    pub fn new(docker: Docker, worker: &str) -> Arc<Self> {
        Arc::new(Watch {
            docker,
            worker: worker.to_owned(),
            followed: Mutex::new(HashMap::new()),
        })
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Followed>> {
        self.followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts following the container `name` of `job_id` (before it exists, so
    /// that no event of it is missed).
    pub fn follow(&self, job_id: &str, name: &str, log: PathBuf) -> Following {
        let (observe, observations) = mpsc::channel(OBSERVATIONS);
        let stopped = Arc::new(AtomicBool::new(false));
        self.followed().insert(
            job_id.to_owned(),
            Followed {
                name: name.to_owned(),
                log,
                observe,
                stopped: stopped.clone(),
                ending: false,
            },
        );
        Following {
            observations,
            stopped,
        }
    }

    /// Tells the job following `job_id` what happened; never waits.
    pub fn tell(&self, job_id: &str, observation: Observation) {
        if let Some(followed) = self.followed().get(job_id)
            && followed.observe.try_send(observation).is_err()
        {
            tracing::warn!(%job_id, "a container observation found no room; dropped");
        }
    }

    /// Whether a job follows its container here.
    pub fn follows(&self, job_id: &str) -> bool {
        self.followed().contains_key(job_id)
    }

    /// Stops following `job_id`; returns its container's name.
    pub fn forget(&self, job_id: &str) -> Option<String> {
        self.followed().remove(job_id).map(|followed| followed.name)
    }

    /// The container of `job_id` ended (or may have): unless its end is being
    /// read already, reads it and reports it, in a task of its own.
    pub fn ended(self: &Arc<Self>, job_id: &str) {
        {
            let mut followed = self.followed();
            match followed.get_mut(job_id) {
                Some(entry) if !entry.ending => entry.ending = true,
                _ => return,
            }
        }
        let watch = self.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move { watch.report_end(&job_id).await });
    }

    async fn report_end(&self, job_id: &str) {
        let Some((name, log, stopped)) = self.followed().get(job_id).map(|f| {
            (
                f.name.clone(),
                f.log.clone(),
                f.stopped.load(Ordering::SeqCst),
            )
        }) else {
            return;
        };
        let observation = match self.docker.inspect_container(&name, None).await {
            Ok(inspected) => {
                let state = inspected.state.unwrap_or_default();
                if state.running == Some(true) {
                    // Seen by a re-list an instant before it started again: not over.
                    if let Some(entry) = self.followed().get_mut(job_id) {
                        entry.ending = false;
                    }
                    return;
                }
                copy_logs(&self.docker, &name, &log).await;
                let code = state.exit_code.unwrap_or(-1);
                Observation::Exited {
                    exit: Exit::Code(i32::try_from(code).unwrap_or(-1)),
                    stopped,
                    reason: (state.oom_killed == Some(true)).then_some(reason::OOM_KILLED),
                }
            }
            Err(e) => Observation::Vanished {
                reason: reason::WORKLOAD_VANISHED,
                message: bounded(&format!(
                    "its container {name} cannot be inspected any more: {e}"
                )),
            },
        };
        self.tell(job_id, observation);
    }

    /// Re-lists this worker's containers and reads the end of every followed one
    /// that is not running.
    async fn repair(self: &Arc<Self>) {
        let containers = match self.list().await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this worker's containers");
                return;
            }
        };
        for container in containers {
            let Some(job_id) = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(spec::JOB_ID))
            else {
                continue;
            };
            let state = container.state.map(|s| s.to_string()).unwrap_or_default();
            if matches!(state.as_str(), "exited" | "dead") {
                self.ended(job_id);
            }
        }
    }

    /// Every container of this worker, whatever its state.
    ///
    /// # Errors
    /// The engine's error.
    pub async fn list(&self) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(false)),
                ..ListContainersOptions::default()
            }))
            .await
    }

    /// The label filters of this worker's containers; for the event stream, the
    /// `die` events of every managed container (one this worker adopted may carry
    /// another worker's label; the jobs it does not follow are passed over).
    fn filters(&self, events: bool) -> HashMap<String, Vec<String>> {
        let managed = format!("{}={}", spec::MANAGED_BY, spec::MANAGED_BY_VALUE);
        if events {
            return HashMap::from([
                ("label".to_owned(), vec![managed]),
                ("type".to_owned(), vec!["container".to_owned()]),
                ("event".to_owned(), vec!["die".to_owned()]),
            ]);
        }
        HashMap::from([(
            "label".to_owned(),
            vec![managed, format!("{}={}", spec::WORKER, self.worker)],
        )])
    }

    /// Follows the engine's event stream until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut since = unix_now();
        let mut backoff = reconnect_backoff();
        loop {
            let mut events = self.docker.events(Some(EventsOptions {
                since: Some(since.clone()),
                filters: Some(self.filters(true)),
                ..EventsOptions::default()
            }));
            // Events missed while the stream was down come from `since`; the
            // re-list covers what the engine no longer replays.
            self.repair().await;
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        backoff = reconnect_backoff();
                        if let Some(nanos) = event.time_nano {
                            since =
                                format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
                        }
                        let job_id = event
                            .actor
                            .and_then(|actor| actor.attributes)
                            .and_then(|mut attributes| attributes.remove(spec::JOB_ID));
                        if let Some(job_id) = job_id {
                            self.ended(&job_id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the Docker event stream failed");
                        break;
                    }
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(?delay, "the Docker event stream ended; reconnecting");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The delays between reconnections of the event stream: from 100 ms, doubling
/// up to 5 s, for ever.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

/// Seconds since the epoch, as the event stream's `since` takes them.
fn unix_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Appends the container's output (stdout and stderr, as they came) to `log`.
async fn copy_logs(docker: &Docker, name: &str, log: &Path) {
    let Some(mut file) = JobLog::open(log).await else {
        return;
    };
    let mut output = docker.logs(
        name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..LogsOptions::default()
        }),
    );
    while let Some(chunk) = output.next().await {
        let bytes = match chunk {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => message,
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::warn!(container = name, error = %e, "cannot read the container's output");
                break;
            }
        };
        if !file.write(&bytes).await {
            return;
        }
    }
    file.finish().await;
}
