//! Adoption: a worker takes over the unfinished jobs of the workers of its pool
//! that went (their lease lapsed, or was released at a hand-over).
//!
//! It hears of a lease that goes at once (a watch of the leases' bucket), and
//! looks every half lease anyway (a watch can miss what happened while it was
//! being set up). It looks only once its own lease has been held for a whole
//! lease period, so that after an outage of NATS the workers whose leases
//! lapsed meanwhile have had time to take them anew.
//!
//! The gone worker's jobs come from the owner index (`crate::pool::owners`),
//! never from a scan of every record. Each is taken over by compare-and-set on
//! its record ([`super::story::Author::take_over`]), so exactly one survivor gets
//! it; each survivor takes at most its share (the jobs over the live workers of
//! the pool), within its capacity, and leaves the rest to the others or its next
//! look. While it has no room for its share, its intake takes no new request,
//! so the room that frees goes to these jobs first. What it does with a job
//! depends on its backend:
//!
//! - a workload any worker can adopt (Docker, Kubernetes) is looked up by its
//!   name and followed on ([`super::job::Job::reattach`]): its `seq`, run
//!   deadline and recorded stop carry on;
//! - a job whose launch had not yet named its workload is left alone: its
//!   request was not acknowledged, so it comes again and is launched then (see
//!   [`super::request_ack`]);
//! - a local process, which no other host can follow, stays its host's: once
//!   its worker has been gone for `--owner-lost-after` without a worker of its
//!   host taking it back, the job ends `lost` (reason `OwnerLost`). So does a
//!   launch that went as far as handing its process to the host's supervisor
//!   ([`crate::backend::started_on_host`]): the process may run there.
//!
//! GPUs: an adopter takes a Docker job's GPUs into its own accounting (its
//! resource policy holds only devices it manages); a pod's belong to the cluster.

use super::job::{Job, Reattach};
use super::recovery::Recovery;
use super::story::{Change, Story};
use crate::backend::{Backend, started_on_host};
use crate::observe::metrics::{Adopted, Metrics};
use crate::pool::lease::LeaseHandle;
use crate::pool::members::Members;
use crate::pool::owners::OwnerIndex;
use crate::protocol::{BackendKind, JobId, reason};
use crate::report::error_chain;
use crate::state::JobState;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Shortest time between two looks.
const MIN_LOOK_EVERY: Duration = Duration::from_secs(1);

/// What adoption needs of its worker.
pub struct Adoption {
    /// The jobs' stories, backends, registry and resources.
    pub recovery: Recovery,
    /// The pool's live workers.
    pub members: Members,
    /// Who owns which unfinished job.
    pub owners: OwnerIndex,
    /// This worker's lease.
    pub lease: LeaseHandle,
    /// The worker's capacity, which adopted jobs take their share of.
    pub capacity: Arc<Semaphore>,
    /// Most jobs the worker runs at once.
    pub max_jobs: usize,
    /// Where the adopted jobs' tasks run.
    pub tracker: TaskTracker,
    /// This worker's pool.
    pub pool: String,
    /// How long a lease lives.
    pub lease_ttl: Duration,
    /// How long a process job's worker may be gone before the job ends `lost`.
    pub owner_lost_after: Duration,
    /// Whether jobs of gone workers wait for room here: intake takes no new
    /// request meanwhile, so that they come first.
    pub waiting: watch::Sender<bool>,
    /// Where each job taken over is counted.
    pub metrics: Arc<Metrics>,
}

/// Takes over the jobs of the workers that go, until `stop` is cancelled.
pub async fn run(adoption: Adoption, stop: CancellationToken) {
    let every = (adoption.lease_ttl / 2).max(MIN_LOOK_EVERY);
    let mut gone_since: HashMap<String, Instant> = HashMap::new();
    let mut departures = None;
    let mut next = Instant::now();
    loop {
        if departures.is_none() {
            departures = match adoption.members.departures().await {
                Ok(watch) => Some(Box::pin(watch)),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot watch the pool's leases; looking every {every:?} only");
                    None
                }
            };
        }
        tokio::select! {
            () = stop.cancelled() => return,
            departed = async { departures.as_mut()?.next().await }, if departures.is_some() => match departed {
                Some(departed) => {
                    tracing::info!(worker = %departed.worker, released = departed.released, "a worker of the pool went");
                    adoption.metrics.departed(departed.released);
                }
                None => departures = None,
            },
            () = tokio::time::sleep_until(next) => {}
        }
        look(&adoption, &mut gone_since).await;
        next = Instant::now() + every;
    }
}

/// Takes over what is due of the jobs of the workers that went.
async fn look(adoption: &Adoption, gone_since: &mut HashMap<String, Instant>) {
    let waiting = look_for_room(adoption, gone_since).await;
    adoption
        .waiting
        .send_if_modified(|was| std::mem::replace(was, waiting) != waiting);
}

/// Takes over what is due of the jobs of the workers that went; whether some
/// of them are left waiting for room here.
async fn look_for_room(adoption: &Adoption, gone_since: &mut HashMap<String, Instant>) -> bool {
    // Until its own lease has been held a whole period, a worker cannot tell a
    // worker that went from one that is taking its lease anew after an outage.
    if adoption
        .lease
        .held_for()
        .is_none_or(|held| held < adoption.lease_ttl)
    {
        return false;
    }
    let live = match adoption.members.live().await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "cannot read the pool's leases; looking again later");
            return false;
        }
    };
    let owners = match adoption.owners.owners(&adoption.pool).await {
        Ok(owners) => owners,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "cannot read the owner index; looking again later");
            return false;
        }
    };
    let me = adoption.recovery.author.worker_id();
    let peers = live
        .iter()
        .filter(|lease| lease.pool == adoption.pool)
        .count()
        .max(1);
    let is_live = |worker: &str| live.iter().any(|lease| lease.worker == worker);
    gone_since.retain(|worker, _| owners.contains_key(worker) && !is_live(worker));
    let mut waiting = false;
    for (owner, jobs) in owners {
        if owner == me || is_live(&owner) {
            continue;
        }
        let since = *gone_since.entry(owner.clone()).or_insert_with(Instant::now);
        waiting |= take_over(adoption, &owner, jobs, since.elapsed(), peers).await;
    }
    waiting
}

/// What becomes of one job of a worker that went.
enum Fate {
    /// Its workload is adopted and followed.
    Follow(Arc<dyn Backend>),
    /// It ends now, with this state and change.
    End(JobState, Change),
}

/// Takes over this worker's share of `owner`'s `jobs`, `owner` gone for `gone`;
/// whether some of that share is left for want of room.
async fn take_over(
    adoption: &Adoption,
    owner: &str,
    mut jobs: Vec<String>,
    gone: Duration,
    peers: usize,
) -> bool {
    let share = jobs.len().div_ceil(peers);
    // Survivors start at different places, so that they contend less.
    if !jobs.is_empty() {
        let start = rand::random_range(0..jobs.len());
        jobs.rotate_left(start);
    }
    let mut taken = 0;
    for job in jobs {
        if taken >= share {
            break;
        }
        let Ok(job_id) = JobId::new(job.as_str()) else {
            continue;
        };
        if adoption.recovery.registry.get(job_id.as_str()).is_some() {
            continue;
        }
        let story = match adoption.recovery.author.open(&job_id).await {
            Ok(Some(story)) => story,
            Ok(None) => {
                adoption.recovery.author.unindex(owner, &job_id).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(%job_id, error = %error_chain(&e), "cannot read the record of a job whose worker went");
                continue;
            }
        };
        let record = story.record();
        if record.worker != owner || record.tombstone || record.state.is_terminal() {
            adoption.recovery.author.unindex(owner, &job_id).await;
            continue;
        }
        let Some(fate) = fate_of(adoption, &story, owner, gone) else {
            continue;
        };
        let Some(registration) = adoption.recovery.registry.register(&job_id) else {
            continue;
        };
        // A job with a stop recorded is taken for that stop, room or not: it
        // ends at once, and frees what its workload holds.
        let stopping = story.record().stop_reason.is_some();
        let permit = match &fate {
            // No room here: the pool's other workers, or a later look, take it.
            Fate::Follow(_)
                if !stopping && adoption.recovery.registry.count() > adoption.max_jobs =>
            {
                return true;
            }
            // The permits intake holds while it waits for requests are not
            // jobs: an adopted job takes one when one is free, and counts
            // against the capacity in the registry all the same.
            Fate::Follow(_) => adoption.capacity.clone().try_acquire_owned().ok(),
            Fate::End(..) => None,
        };
        let story = match adoption.recovery.author.take_over(story).await {
            Ok(story) => story,
            Err(superseded) => {
                tracing::debug!(%superseded, "another worker took the job over first");
                continue;
            }
        };
        taken += 1;
        let span = story.span();
        let recovery = &adoption.recovery;
        match fate {
            Fate::Follow(backend) => {
                let gpus = (backend.kind() == BackendKind::Docker)
                    .then(|| {
                        recovery
                            .resources
                            .hold(job_id.as_str(), story.record().gpus.as_deref())
                    })
                    .flatten();
                span.in_scope(|| tracing::info!(%owner, "taking over a job whose worker went"));
                adoption
                    .metrics
                    .adopted(Some(backend.kind()), Adopted::Followed);
                let job =
                    Job::new(recovery.jobs.clone(), story, registration, permit).holding(gpus);
                adoption
                    .tracker
                    .spawn(job.reattach(backend, Reattach::Adoption).instrument(span));
            }
            Fate::End(to, change) => {
                span.in_scope(|| tracing::warn!(%owner, ended = %to, "ending a job whose worker went and that no other host can follow"));
                adoption
                    .metrics
                    .adopted(story.record().backend, Adopted::Ended);
                let job = Job::new(recovery.jobs.clone(), story, registration, None);
                adoption.tracker.spawn(job.end(to, change).instrument(span));
            }
        }
    }
    false
}

/// What becomes of `story`'s job, its worker `owner` gone for `gone`; `None`:
/// nothing yet.
fn fate_of(adoption: &Adoption, story: &Story, owner: &str, gone: Duration) -> Option<Fate> {
    let record = story.record();
    let backend = record
        .backend
        .and_then(|kind| adoption.recovery.jobs.backends.get(kind))?;
    let launching = record.state == JobState::Starting && record.backend_ref.is_none();
    if backend.adoptable_anywhere() && !launching {
        return Some(Fate::Follow(backend));
    }
    if gone < adoption.owner_lost_after {
        return None;
    }
    // A launch that went as far as starting its workload on its worker's host
    // may have started it there: it ends as a workload nobody can follow.
    if launching && !started_on_host(record) {
        // Its request never came again (removed from the queue by hand?).
        return Some(Fate::End(
            JobState::Error,
            Change::because(
                reason::LAUNCH_INTERRUPTED,
                format!(
                    "its worker {owner} went while launching it, and its request did not come again within {} s; it never ran",
                    adoption.owner_lost_after.as_secs()
                ),
            ),
        ));
    }
    Some(Fate::End(
        JobState::Lost,
        Change::because(
            reason::OWNER_LOST,
            format!(
                "its worker {owner} went {} s ago and no worker of its host took the job back; its {} workload cannot be followed from another host",
                gone.as_secs(),
                backend.kind()
            ),
        ),
    ))
}
