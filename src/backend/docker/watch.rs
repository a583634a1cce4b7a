//! Watching every container of a worker through one Docker event stream: the
//! stream (filtered by the managed-by label) notes each `oom` and hands each
//! `die` to the job that follows the container without ever waiting on it; a
//! short task then reads the end (see [`super::ending`]: from the events, an
//! inspect only when they cannot tell), lets the copy of the container's output
//! into the job's log file finish (see [`super::output`]) and reports the exit. A dropped stream reconnects with
//! backoff, replaying the events it missed (`since`), and a re-list after each
//! connection repairs whatever the replay lacks. A running container costs no
//! request while it runs. A stop signals the container until its end is seen
//! ([`Stopping`]: SIGTERM, SIGKILL after the grace, each failed try tried
//! again), else ends its job lost (`StopUnconfirmed`).

use super::ending::{self, Ending, Seen};
use super::engine::Engine;
use super::output;
use super::{engine_message, spec, status};
use crate::backend::Observation;
use crate::backend::container::followers::{Follower, Followers};
use crate::backend::container::stopping::{self, Sent, StopNotes, Stopping};
use crate::protocol::bounded::bounded;
use crate::report::error_chain;
use backon::BackoffBuilder;
use bollard::models::{ContainerSummary, EventMessage};
use bollard::query_parameters::{EventsOptions, KillContainerOptions, ListContainersOptions};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// What the watch notes of a container a job follows.
#[derive(Debug, Default)]
pub struct Noted {
    /// Whether its end is being read (a `die` and a re-list may both see it).
    ending: bool,
    /// Whether the engine reported it out of memory (an `oom` event).
    oom: bool,
    /// The stop under way, which a later stop renews.
    stopping: Option<Arc<Stopping>>,
    /// The grace of a stop asked while its end was being read: sent if the
    /// read finds it running after all.
    deferred_stop: Option<Duration>,
    /// The copy of its output into the job's log, while it runs.
    copier: Option<tokio::task::JoinHandle<bool>>,
}

impl Drop for Noted {
    /// A container no longer followed here (let go, handed over) is no longer
    /// copied here either.
    fn drop(&mut self) {
        if let Some(copier) = self.copier.take() {
            copier.abort();
        }
    }
}

impl StopNotes for Noted {
    fn stopping(&mut self) -> &mut Option<Arc<Stopping>> {
        &mut self.stopping
    }

    fn end_seen(&self) -> bool {
        self.ending
    }

    fn end_told(&mut self) {
        self.ending = true;
    }
}

/// The containers this worker follows, by job id, and the engine they run on.
pub struct Watch {
    docker: Engine,
    worker: String,
    followed: Followers<Noted>,
    /// How long a stop tries past its grace.
    stop_patience: Duration,
}

impl Watch {
    /// Follows nothing yet: the containers of `worker`, stopped with
    /// `stop_patience` past their grace.
    pub fn new(docker: Engine, worker: &str, stop_patience: Duration) -> Arc<Self> {
        Arc::new(Watch {
            docker,
            worker: worker.to_owned(),
            followed: Followers::default(),
            stop_patience,
        })
    }

    /// Stops `container`, the container of `job_id`: SIGTERM now and SIGKILL
    /// once `grace` is over (at once without one), each tried until the
    /// container's end is seen or the patience runs out, in the background. A
    /// stop under way is renewed.
    pub fn stop(self: &Arc<Self>, job_id: &str, container: &str, grace: Duration) {
        let stopping = match self.followed().get_mut(job_id) {
            Some(entry) => {
                if entry.noted.ending && entry.noted.stopping.is_none() {
                    // Its end is being read (a container adopted or found
                    // again is inspected first): what the read finds decides.
                    entry.noted.deferred_stop = Some(grace);
                }
                stopping::begin(entry, grace, self.stop_patience)
            }
            None => None,
        };
        let Some(stopping) = stopping else {
            return;
        };
        let (watch, job_id, container) = (self.clone(), job_id.to_owned(), container.to_owned());
        tokio::spawn(async move {
            let attempt = |grace: Duration| {
                let (watch, job_id, container) = (&watch, &job_id, &container);
                async move {
                    let (signal, sent) = if grace.is_zero() {
                        ("SIGKILL", Sent::Finally)
                    } else {
                        ("SIGTERM", Sent::Politely)
                    };
                    let options = KillContainerOptions {
                        signal: signal.to_owned(),
                    };
                    let killed = watch
                        .docker
                        .api
                        .kill_container(container, Some(options))
                        .await;
                    match watch.docker.counted("kill_container", killed) {
                        Ok(()) => Ok(sent),
                        Err(e) => {
                            // Gone (404), or not running (409, also said of a
                            // paused one): its end, if any, is read now.
                            if matches!(status(&e), Some(404 | 409)) {
                                watch.ended(job_id);
                            }
                            if status(&e) == Some(404) {
                                return Ok(Sent::Finally);
                            }
                            Err(bounded(&format!("{signal}: {}", engine_message(&e))))
                        }
                    }
                }
            };
            let workload = ("container", container.as_str());
            stopping::follow(&watch.followed, &job_id, workload, &stopping, attempt).await;
        });
    }

    /// The jobs that follow their containers here.
    pub fn followers(&self) -> &Followers<Noted> {
        &self.followed
    }

    fn followed(&self) -> MutexGuard<'_, HashMap<String, Follower<Noted>>> {
        self.followed.lock()
    }

    /// The container of `job_id` runs: tells its job, and copies its output
    /// into the job's log as it comes (unless that copy runs already).
    pub fn running(&self, job_id: &str) {
        self.followed.tell(job_id, Observation::Running);
        if let Some(entry) = self.followed().get_mut(job_id)
            && entry.noted.copier.is_none()
        {
            let copier = output::follow(&self.docker, &entry.name, entry.log.clone());
            entry.noted.copier = Some(copier);
        }
    }

    /// The container of `job_id` ended (or may have): unless its end is being
    /// read already, reads it (with an inspect) and reports it, in a task of its own.
    pub fn ended(self: &Arc<Self>, job_id: &str) {
        self.end(job_id, Ending::Unread);
    }

    /// The container of `job_id` ended as `ending` says: unless its end is
    /// being read already, reads what is missing and reports it, in a task of
    /// its own.
    fn end(self: &Arc<Self>, job_id: &str, ending: Ending) {
        {
            let mut followed = self.followed();
            match followed.get_mut(job_id) {
                Some(entry) if !entry.noted.ending => entry.noted.ending = true,
                _ => return,
            }
        }
        let watch = self.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move { watch.report_end(&job_id, ending).await });
    }

    async fn report_end(self: &Arc<Self>, job_id: &str, ending: Ending) {
        let Some((name, log, seen)) = self.followed().get(job_id).map(|f| {
            let seen = Seen {
                ending,
                oom: f.noted.oom,
                stopped: f.stopped.load(Ordering::SeqCst),
            };
            (f.name.clone(), f.log.clone(), seen)
        }) else {
            return;
        };
        match ending::read(&self.docker, &name, seen).await {
            Some(observation) => {
                let copier = self
                    .followed()
                    .get_mut(job_id)
                    .and_then(|entry| entry.noted.copier.take());
                output::finish(&self.docker, &name, &log, copier).await;
                self.followed.tell(job_id, observation);
            }
            // Seen by a re-list an instant before it started again, or
            // inspected when adopted: not over. A stop asked meanwhile goes now.
            None => {
                let deferred = self.followed().get_mut(job_id).and_then(|entry| {
                    entry.noted.ending = false;
                    let grace = entry.noted.deferred_stop.take()?;
                    Some((grace, entry.name.clone()))
                });
                if let Some((grace, name)) = deferred {
                    self.stop(job_id, &name, grace);
                }
            }
        }
    }

    /// Takes one event of the stream: an `oom` is noted for the container's
    /// end, a `die` ends it.
    fn take(self: &Arc<Self>, event: EventMessage) {
        let Some(mut attributes) = event.actor.and_then(|actor| actor.attributes) else {
            return;
        };
        let Some(job_id) = attributes.remove(spec::JOB_ID) else {
            return;
        };
        match event.action.as_deref() {
            Some("oom") => {
                if let Some(entry) = self.followed().get_mut(&job_id) {
                    entry.noted.oom = true;
                }
            }
            Some("die") => {
                let ending = Ending::of_die(attributes.get("exitCode").map(String::as_str));
                self.end(&job_id, ending);
            }
            _ => {}
        }
    }

    /// Re-lists this worker's containers and reads the end of every followed one
    /// that is not running.
    async fn repair(self: &Arc<Self>) {
        let containers = match self.list().await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot list this worker's containers");
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
        let listed = self
            .docker
            .api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(false)),
                ..ListContainersOptions::default()
            }))
            .await;
        self.docker.counted("list_containers", listed)
    }

    /// The label filters of this worker's containers; for the event stream, the
    /// `oom` and `die` events of every managed container (one this worker
    /// adopted may carry another worker's label; the jobs it does not follow are
    /// passed over).
    fn filters(&self, events: bool) -> HashMap<String, Vec<String>> {
        let managed = format!("{}={}", spec::MANAGED_BY, spec::MANAGED_BY_VALUE);
        if events {
            return HashMap::from([
                ("label".to_owned(), vec![managed]),
                ("type".to_owned(), vec!["container".to_owned()]),
                ("event".to_owned(), vec!["oom".to_owned(), "die".to_owned()]),
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
            let mut events = self.docker.api.events(Some(EventsOptions {
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
                        self.take(event);
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "the Docker event stream failed");
                        break;
                    }
                }
            }
            // However it ended, the stream is over: the engine went, or failed it.
            self.docker.count("events", true);
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
