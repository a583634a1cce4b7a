//! Every pod of a worker through one watch (a kube-runtime watcher on the
//! worker's label selector, with its backoff, re-listing after `410 Gone`),
//! fanned out to the jobs that follow the pods without ever waiting on one: an
//! observation goes into the job's own small channel with `try_send`. A running
//! pod costs no request; its end costs one log read, in a task of its own, before
//! the exit is reported. A pod missing from a re-list is read once to tell a gap
//! in the watch from a pod that is gone; one that cannot be read within a fixed
//! time, or that was replaced, ends its job as vanished, as a gone one does. A
//! followed pod the watch shows deleted though nobody here stopped it is read
//! the same way: another worker may have adopted it (relabelled it to itself, so
//! it left this worker's selection). Such a pod is this worker's no more: its
//! job is told nothing further (no end: another worker tells it now), and
//! nothing here stops or deletes it. A stop deletes the pod until its end is
//! confirmed ([`Stopping`]), else ends the job lost (`StopUnconfirmed`).
//! Every pod of the worker the watch shows, followed or not, is kept by name for
//! the orphan sweep, which so costs no request either.
//!
//! Beside it, the nodes' watch ([`Nodes`]) and a check of the followed pods
//! every [`LOST_CHECK`]: a job whose pod's node has been not ready, or whose
//! pod's graceful deletion has gone unconfirmed past its grace period, for
//! longer than `--node-lost-after` ends (`NodeLost`, or `StopUnconfirmed` when
//! this worker stopped it) and its pod is deleted without grace, since no
//! kubelet will confirm anything of it.

use super::manifest::{CONTAINER, JOB_ID_ANNOTATION};
use super::name::label_value;
use super::nodes::{Nodes, PodWatch, verdict};
use super::status::{PodState, classify};
use super::{api, logs};
use crate::backend::Observation;
use crate::backend::container::followers::{Follower, Followers, Following, send};
use crate::backend::container::stopping::{self, Sent, StopNotes, Stopping};
use crate::backend::container::workload::WORKER;
use crate::locked::lock;
use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use crate::report::error_chain;
use crate::state::Exit;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;

/// Longest a pod missing from a re-list is read (retrying transient failures,
/// and waiting its turn behind the client's other requests) before its job
/// ends as vanished: the API answered the re-list moments ago.
const UNLISTED_READ_PATIENCE: Duration = Duration::from_secs(60);

/// How often the followed pods are checked for a lost node or an unconfirmed
/// deletion.
const LOST_CHECK: Duration = Duration::from_millis(500);

/// How far the job has been told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Told {
    #[default]
    Nothing,
    Running,
    /// Its end (or its failure to start) is told or being read.
    Over,
}

/// What the watch notes of a pod a job follows.
#[derive(Debug, Default)]
struct Noted {
    /// Known once the pod is created (or found).
    uid: Option<String>,
    told: Told,
    /// Why the pod waits, as the scheduler said.
    blocked: Option<(String, String)>,
    /// A delete of the pod was taken: its release sends none.
    deleted: bool,
    /// The stop under way, which a later stop renews.
    stopping: Option<Arc<Stopping>>,
    /// The pod left this worker's watch though nobody here stopped it (another
    /// worker may have adopted it): this one stops and deletes nothing of it
    /// any more, and tells its job only that it is gone, if it is.
    left: bool,
    /// The copy of its output under way since the worker stopped it.
    output: Option<JoinHandle<()>>,
    /// Seen in the re-list under way.
    listed: bool,
    /// The node it is bound to.
    node: Option<String>,
    /// When its graceful deletion was first seen, and its grace period.
    deletion: Option<(Instant, Duration)>,
}

impl StopNotes for Noted {
    fn stopping(&mut self) -> &mut Option<Arc<Stopping>> {
        &mut self.stopping
    }

    fn end_seen(&self) -> bool {
        self.told == Told::Over || self.left
    }

    fn end_told(&mut self) {
        self.told = Told::Over;
        if let Some(output) = self.output.take() {
            output.abort();
        }
    }
}

/// A pod a job follows.
type Followed = Follower<Noted>;

/// What a job lets go of: its pod, if a delete is still to be sent.
pub struct Released {
    /// The pod's name.
    pub pod: String,
    /// Its uid.
    pub uid: String,
}

/// A pod of this worker as the watch last showed it.
#[derive(Debug, Clone)]
pub struct SeenPod {
    /// Its job.
    pub job_id: String,
    /// Its uid.
    pub uid: String,
    /// When it was created.
    pub created: Option<SystemTime>,
    /// The Secret of its own it takes variables from, if any.
    pub secret: Option<String>,
}

impl SeenPod {
    /// The pod's name and what the sweep needs of it, if it is a job's pod.
    fn of(pod: &Pod) -> Option<(String, SeenPod)> {
        let seen = SeenPod {
            job_id: job_of(pod)?.to_owned(),
            uid: pod.metadata.uid.clone()?,
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|at| SystemTime::from(at.0)),
            secret: super::secret::of_pod(pod),
        };
        Some((pod.metadata.name.clone()?, seen))
    }
}

/// The pods this worker follows, by job id, and every pod of it the watch
/// shows, by name.
pub struct Watch {
    api: Api<Pod>,
    selector: String,
    /// The worker label of this worker's pods.
    worker: String,
    /// How long a stop tries past its grace.
    stop_patience: Duration,
    followed: Followers<Noted>,
    seen: Mutex<HashMap<String, SeenPod>>,
    /// How many re-lists have begun: a check of pods one re-list lacked gives
    /// way to the next re-list's.
    relists: AtomicU64,
    /// The readiness of the nodes.
    nodes: Nodes,
    /// How long a pod's node may be unready (or its deletion unconfirmed past
    /// its grace period) before its job ends lost.
    node_lost_after: Duration,
}

impl Watch {
    /// Follows nothing yet: the pods of `worker` (with its `selector`), stopped
    /// with `stop_patience` past their grace; a job ends lost once its pod's
    /// node has been not ready for longer than `node_lost_after`.
    pub fn new(
        api: Api<Pod>,
        worker: &str,
        selector: String,
        stop_patience: Duration,
        node_lost_after: Duration,
    ) -> Arc<Self> {
        Arc::new(Watch {
            api,
            selector,
            worker: label_value(worker),
            stop_patience,
            followed: Followers::default(),
            seen: Mutex::new(HashMap::new()),
            relists: AtomicU64::new(0),
            nodes: Nodes::default(),
            node_lost_after,
        })
    }

    fn seen_pods(&self) -> MutexGuard<'_, HashMap<String, SeenPod>> {
        lock(&self.seen)
    }

    /// Every pod of this worker the watch shows now, by name.
    pub fn seen(&self) -> HashMap<String, SeenPod> {
        self.seen_pods().clone()
    }

    /// Whether a job of this worker follows its pod.
    pub fn follows(&self, job_id: &str) -> bool {
        self.followed().contains_key(job_id)
    }

    fn followed(&self) -> MutexGuard<'_, HashMap<String, Followed>> {
        self.followed.lock()
    }

    /// Starts following pod `pod` of `job_id` (before it exists, so that no
    /// change of it is missed).
    pub fn follow(&self, job_id: &str, pod: &str, log: PathBuf) -> Following {
        self.followed.follow(job_id, pod, log)
    }

    /// Stops following `job_id`; returns its pod unless a delete was taken,
    /// or the pod is another worker's now.
    pub fn forget(&self, job_id: &str) -> Option<Released> {
        let followed = self.followed.forget(job_id)?;
        if let Some(output) = followed.noted.output {
            output.abort();
        }
        if followed.noted.deleted || followed.noted.left {
            return None;
        }
        Some(Released {
            pod: followed.name,
            uid: followed.noted.uid?,
        })
    }

    /// Why the pod of `job_id` has not started, as the scheduler said.
    pub fn blocked(&self, job_id: &str) -> Option<(String, String)> {
        self.followed().get(job_id)?.noted.blocked.clone()
    }

    /// The uid of the pod of `job_id`, once known.
    pub fn uid(&self, job_id: &str) -> Option<String> {
        self.followed().get(job_id)?.noted.uid.clone()
    }

    /// Whether `pod` carries this worker's label.
    pub fn is_ours(&self, pod: &Pod) -> bool {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(WORKER))
            == Some(&self.worker)
    }

    /// The worker label of this worker's pods.
    pub fn worker_label(&self) -> &str {
        &self.worker
    }

    /// Takes in the current state of a pod of this worker: tells its job what
    /// changed, and reads its end in a task of its own.
    pub fn observe(self: &Arc<Self>, pod: &Pod) {
        let Some(job_id) = job_of(pod) else { return };
        let state = classify(pod);
        let mut followed = self.followed();
        let Some(entry) = followed.get_mut(job_id) else {
            return;
        };
        if !is_the_pod(entry, pod) || entry.noted.left {
            return;
        }
        entry.noted.listed = true;
        if entry.noted.uid.is_none() {
            entry.noted.uid = pod.metadata.uid.clone();
        }
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
            entry.noted.node.get_or_insert_with(|| node.clone());
        }
        if pod.metadata.deletion_timestamp.is_some() && entry.noted.deletion.is_none() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
            let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            entry.noted.deletion = Some((Instant::now(), grace));
        }
        if entry.noted.told == Told::Over {
            return;
        }
        match state {
            PodState::Pending { blocked } => entry.noted.blocked = blocked,
            PodState::Running => {
                if entry.noted.told == Told::Nothing {
                    entry.noted.told = Told::Running;
                    send(&entry.observe, job_id, Observation::Running);
                }
            }
            PodState::StartFailed { reason, message } => {
                entry.noted.told = Told::Over;
                send(
                    &entry.observe,
                    job_id,
                    Observation::StartFailed { reason, message },
                );
            }
            PodState::Unknown { message } => {
                let ran = entry.noted.told == Told::Running;
                entry.noted.told = Told::Over;
                let message =
                    format!("its pod's node stopped reporting on it (phase Unknown): {message}");
                let observation = if ran {
                    Observation::Vanished {
                        reason: reason::WORKLOAD_VANISHED,
                        message,
                    }
                } else {
                    Observation::StartFailed {
                        reason: "Unknown".into(),
                        message,
                    }
                };
                send(&entry.observe, job_id, observation);
            }
            PodState::Ended { exit_code, reason } => {
                // Its container ran, though no change showed it running (it
                // ended between two watch events, or before it was found).
                if entry.noted.told == Told::Nothing {
                    send(&entry.observe, job_id, Observation::Running);
                }
                entry.noted.told = Told::Over;
                let stopped = entry.stopped.load(Ordering::SeqCst)
                    || reason == Some(reason::DEADLINE_EXCEEDED);
                let end = Observation::Exited {
                    exit: Exit::Code(exit_code),
                    stopped,
                    reason,
                };
                self.report_end(entry, job_id, end);
            }
        }
    }

    /// The pod of `job_id` left the watch before its end was seen: deleted,
    /// as expected once this worker stopped it; else it is read once (another
    /// worker may have adopted it).
    fn gone(self: &Arc<Self>, job_id: &str, pod: &Pod) {
        let mut followed = self.followed();
        let Some(entry) = followed.get_mut(job_id) else {
            return;
        };
        if !is_the_pod(entry, pod) || entry.noted.told == Told::Over {
            return;
        }
        if entry.stopped.load(Ordering::SeqCst) {
            let why = deleted_before_its_end(&entry.name);
            return self.end_unseen(entry, job_id, why);
        }
        entry.noted.left = true;
        let name = entry.name.clone();
        drop(followed);
        self.read_again(job_id.to_owned(), name, Lacking::Watch);
    }

    /// The pod of `job_id`, lacking from the watch as `lacking` says, can no
    /// longer be seen (`why`), its end unknown: unless the watch has shown it
    /// since, or another re-list has begun (which checks again).
    fn lost_sight(self: &Arc<Self>, job_id: &str, pod: &str, lacking: Lacking, why: String) {
        let mut followed = self.followed();
        let Some(entry) = followed.get_mut(job_id) else {
            return;
        };
        let seen_since = match lacking {
            Lacking::Relist(relist) => {
                entry.noted.listed || self.relists.load(Ordering::SeqCst) != relist
            }
            Lacking::Watch => false,
        };
        if entry.name == pod && !seen_since {
            self.end_unseen(entry, job_id, why);
        }
    }

    /// The pod `pod` of `job_id` carries another worker's label now: that
    /// worker adopted it. Its job here is told nothing more, and nothing here
    /// stops or deletes it.
    fn moved_away(&self, job_id: &str, pod: &str) {
        let mut followed = self.followed();
        let Some(entry) = followed.get_mut(job_id) else {
            return;
        };
        if entry.name != pod {
            return;
        }
        entry.noted.left = true;
        if let Some(output) = entry.noted.output.take() {
            output.abort();
        }
        tracing::info!(%job_id, pod, "the pod was adopted by another worker; no longer followed here");
    }

    /// The pod of `job_id`, read after it left the watch or a re-list, is
    /// still this worker's: its state is taken in.
    fn in_sight_again(self: &Arc<Self>, job_id: &str, pod: &Pod) {
        if let Some(entry) = self.followed().get_mut(job_id) {
            entry.noted.left = false;
        }
        self.observe(pod);
    }

    /// Ends a job whose pod went without its end being seen: killed, if this
    /// worker stopped it (a delete without a grace reports nothing), else
    /// vanished.
    fn end_unseen(&self, entry: &mut Followed, job_id: &str, why: String) {
        if entry.noted.told == Told::Over {
            return;
        }
        entry.noted.told = Told::Over;
        let end = if entry.stopped.load(Ordering::SeqCst) {
            Observation::Exited {
                exit: Exit::Signal(9),
                stopped: true,
                reason: None,
            }
        } else {
            Observation::Vanished {
                reason: reason::WORKLOAD_VANISHED,
                message: why,
            }
        };
        self.report_end(entry, job_id, end);
    }

    /// Copies the pod's output into the job's log (or waits for the copy under
    /// way), then tells the job its end.
    fn report_end(&self, entry: &mut Followed, job_id: &str, end: Observation) {
        let copying = entry.noted.output.take();
        let api = self.api.clone();
        let pod = entry.name.clone();
        let log = entry.log.clone();
        let observe = entry.observe.clone();
        let job_id = job_id.to_owned();
        let vanished = matches!(end, Observation::Vanished { .. });
        tokio::spawn(async move {
            match copying {
                Some(copying) => {
                    let _ = copying.await;
                }
                None if !vanished => logs::copy_log(&api, &pod, CONTAINER, &log, false).await,
                None => {}
            }
            send(&observe, &job_id, end);
        });
    }

    /// Stops the pod of `job_id`: its output followed into the job's log from
    /// now, then, once that stream is open, a delete with `grace` (its uid the
    /// precondition), tried until the pod's end is seen or the patience runs
    /// out, in the background. A stop under way is renewed.
    pub fn stop(self: &Arc<Self>, job_id: &str, grace: Duration) {
        let mut followed = self.followed();
        let Some(entry) = followed.get_mut(job_id) else {
            return;
        };
        let Some(uid) = entry.noted.uid.clone() else {
            entry.stopped.store(true, Ordering::SeqCst);
            return;
        };
        let Some(stopping) = stopping::begin(entry, grace, self.stop_patience) else {
            return;
        };
        let api = self.api.clone();
        let pod = entry.name.clone();
        // The output is followed from a stream opened before the delete is
        // sent: a pod deleted first may be gone, with its log, before a later
        // read reaches it.
        let (opened, following) = tokio::sync::oneshot::channel();
        if entry.noted.told == Told::Running {
            let (api, pod, log) = (api.clone(), pod.clone(), entry.log.clone());
            entry.noted.output = Some(tokio::spawn(async move {
                let output = logs::open_log(&api, &pod, CONTAINER, true).await;
                let _ = opened.send(());
                if let Some(output) = output {
                    logs::append(output, &pod, &log).await;
                }
            }));
        } else {
            let _ = opened.send(());
        }
        let (watch, job_id) = (self.clone(), job_id.to_owned());
        tokio::spawn(async move {
            let _ = following.await;
            let attempt = |grace: Duration| {
                let (watch, api, pod, uid, job_id) = (&watch, &api, &pod, &uid, &job_id);
                async move {
                    api::delete_once(api, pod, uid, grace)
                        .await
                        .map_err(|e| bounded(&api::message(&e)))?;
                    if let Some(entry) = watch.followed().get_mut(job_id) {
                        entry.noted.deleted = true;
                    }
                    Ok(Sent::Finally)
                }
            };
            stopping::follow(&watch.followed, &job_id, ("pod", &pod), &stopping, attempt).await;
        });
    }

    /// Follows the pods (and, through `nodes`, the nodes), and checks the
    /// followed pods for lost ones, until the task is aborted.
    pub async fn run(self: Arc<Self>, nodes: Api<Node>) {
        tokio::join!(
            self.clone().follow_pods(),
            self.nodes.run(nodes),
            self.check_lost()
        );
    }

    /// Every [`LOST_CHECK`], ends the jobs whose pods are lost.
    async fn check_lost(self: &Arc<Self>) {
        let mut tick = tokio::time::interval(LOST_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.end_lost();
        }
    }

    /// Ends each followed job whose pod is lost: its pod deleted without
    /// grace, its output no longer followed, its end told.
    fn end_lost(&self) {
        let mut followed = self.followed();
        for (job_id, entry) in followed.iter_mut() {
            if entry.noted.told == Told::Over {
                continue;
            }
            let Some(uid) = entry.noted.uid.clone() else {
                continue;
            };
            let ran = entry.noted.told == Told::Running;
            let pod = PodWatch {
                node: entry
                    .noted
                    .node
                    .as_deref()
                    .map(|node| (node, self.nodes.unready_for(node))),
                deletion: entry
                    .noted
                    .deletion
                    .map(|(seen, grace)| (seen.elapsed(), grace)),
                stopped: entry.stopped.load(Ordering::SeqCst),
                ran,
            };
            let Some(lost) = verdict(&pod, self.node_lost_after) else {
                continue;
            };
            tracing::warn!(%job_id, pod = %entry.name, "{}", lost.message);
            // Its end is told: a stop under way stops trying.
            entry.noted.end_told();
            let (api, name) = (self.api.clone(), entry.name.clone());
            tokio::spawn(async move { api::delete(&api, &name, &uid, Duration::ZERO).await });
            let end = if ran {
                Observation::Vanished {
                    reason: lost.reason,
                    message: lost.message,
                }
            } else {
                Observation::StartFailed {
                    reason: lost.reason.to_owned(),
                    message: lost.message,
                }
            };
            send(&entry.observe, job_id, end);
        }
    }

    /// Follows the pod watch until the task is aborted.
    async fn follow_pods(self: Arc<Self>) {
        let config = watcher::Config::default().labels(&self.selector);
        let mut events =
            std::pin::pin!(watcher::watcher(self.api.clone(), config).default_backoff());
        // The pods of a re-list under way, which replace the seen ones once it is done.
        let mut relisted: HashMap<String, SeenPod> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(pod)) => {
                    self.observe(&pod);
                    self.seen_pods().extend(SeenPod::of(&pod));
                }
                Ok(Event::InitApply(pod)) => {
                    self.observe(&pod);
                    relisted.extend(SeenPod::of(&pod));
                }
                Ok(Event::Delete(pod)) => {
                    if let Some(job_id) = job_of(&pod) {
                        self.gone(job_id, &pod);
                    }
                    if let Some(name) = &pod.metadata.name {
                        self.seen_pods().remove(name);
                    }
                }
                Ok(Event::Init) => {
                    self.relists.fetch_add(1, Ordering::SeqCst);
                    relisted.clear();
                    for entry in self.followed().values_mut() {
                        entry.noted.listed = false;
                    }
                }
                Ok(Event::InitDone) => {
                    *self.seen_pods() = std::mem::take(&mut relisted);
                    self.check_unlisted();
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "the pod watch failed; it resumes with backoff")
                }
            }
        }
    }

    /// After a re-list: each followed pod it lacked is read once; one that is
    /// gone, replaced, or that cannot be read within [`UNLISTED_READ_PATIENCE`],
    /// ends its job as vanished.
    fn check_unlisted(self: &Arc<Self>) {
        let unlisted: Vec<(String, String)> = self
            .followed()
            .iter()
            .filter(|(_, entry)| {
                !entry.noted.listed
                    && entry.noted.uid.is_some()
                    && entry.noted.told != Told::Over
                    && !entry.noted.left
            })
            .map(|(job_id, entry)| (job_id.clone(), entry.name.clone()))
            .collect();
        let relist = self.relists.load(Ordering::SeqCst);
        for (job_id, pod) in unlisted {
            self.read_again(job_id, pod, Lacking::Relist(relist));
        }
    }

    /// Reads once the pod `pod` of `job_id`, lacking from the watch as
    /// `lacking` says, in a task of its own: still this worker's, its state is
    /// taken in; another worker's, it moved away; gone, replaced, or that cannot
    /// be read within [`UNLISTED_READ_PATIENCE`], its job ends as vanished.
    fn read_again(self: &Arc<Self>, job_id: String, pod: String, lacking: Lacking) {
        let watch = self.clone();
        tokio::spawn(async move {
            let read =
                tokio::time::timeout(UNLISTED_READ_PATIENCE, api::get(&watch.api, &pod)).await;
            let what = lacking.what();
            let why = match read {
                Ok(Ok(found)) if found.metadata.uid == watch.uid(&job_id) => {
                    if !watch.is_ours(&found) {
                        return watch.moved_away(&job_id, &pod);
                    }
                    return watch.in_sight_again(&job_id, &found);
                }
                Ok(Ok(_)) => format!("its pod {pod} was replaced by another of that name"),
                Ok(Err(e)) if api::status(&e) == Some(404) => deleted_before_its_end(&pod),
                Ok(Err(e)) => bounded(&format!(
                    "its pod {pod} {what} and cannot be read: {}",
                    api::message(&e)
                )),
                Err(_) => format!(
                    "its pod {pod} {what} and could not be read within {}s",
                    UNLISTED_READ_PATIENCE.as_secs()
                ),
            };
            tracing::warn!(%job_id, "{why}");
            watch.lost_sight(&job_id, &pod, lacking, why);
        });
    }
}

/// How a followed pod went missing from the watch.
#[derive(Debug, Clone, Copy)]
enum Lacking {
    /// The re-list of this number lacked it.
    Relist(u64),
    /// The watch showed it deleted, though nobody here stopped it.
    Watch,
}

impl Lacking {
    /// Says how, after "its pod NAME".
    fn what(self) -> &'static str {
        match self {
            Lacking::Relist(_) => "was missing from a re-list",
            Lacking::Watch => "left the watch",
        }
    }
}

/// Why a job whose pod was deleted before its end was seen ended.
fn deleted_before_its_end(pod: &str) -> String {
    format!("its pod {pod} was deleted before it ended")
}

/// The job a pod runs, from its annotation.
pub fn job_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(JOB_ID_ANNOTATION)
        .map(String::as_str)
}

/// Whether `pod` is the one `entry` follows (same name, and same uid once known).
fn is_the_pod(entry: &Followed, pod: &Pod) -> bool {
    pod.metadata.name.as_deref() == Some(entry.name.as_str())
        && (entry.noted.uid.is_none() || entry.noted.uid == pod.metadata.uid)
}
