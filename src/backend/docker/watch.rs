//! Watching every container of a worker through one Docker event stream: the
//! stream (filtered by the managed-by label) notes each `oom` and hands each
//! `die` to the job that follows the container without ever waiting on it; a
//! short task then reads the end (see [`super::ending`]: from the events, an
//! inspect only when they cannot tell), copies the container's output into the
//! job's log file and reports the exit. A dropped stream reconnects with
//! backoff, replaying the events it missed (`since`), and a re-list after each
//! connection repairs whatever the replay lacks. A running container costs no
//! request while it runs.

use super::ending::{self, Ending, Seen};
use super::spec;
use crate::backend::container::followers::{Follower, Followers};
use crate::report::error_chain;
use backon::BackoffBuilder;
use bollard::Docker;
use bollard::models::{ContainerSummary, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
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
}

/// The containers this worker follows, by job id, and the engine they run on.
pub struct Watch {
    docker: Docker,
    worker: String,
    followed: Followers<Noted>,
}

impl Watch {
    /// Follows nothing yet.
    pub fn new(docker: Docker, worker: &str) -> Arc<Self> {
        Arc::new(Watch {
            docker,
            worker: worker.to_owned(),
            followed: Followers::default(),
        })
    }

    /// The jobs that follow their containers here.
    pub fn followers(&self) -> &Followers<Noted> {
        &self.followed
    }

    fn followed(&self) -> MutexGuard<'_, HashMap<String, Follower<Noted>>> {
        self.followed.lock()
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

    async fn report_end(&self, job_id: &str, ending: Ending) {
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
        match ending::read(&self.docker, &name, &log, seen).await {
            Some(observation) => self.followed.tell(job_id, observation),
            // Seen by a re-list an instant before it started again: not over.
            None => {
                if let Some(entry) = self.followed().get_mut(job_id) {
                    entry.noted.ending = false;
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
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(false)),
                ..ListContainersOptions::default()
            }))
            .await
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
                        self.take(event);
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "the Docker event stream failed");
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
