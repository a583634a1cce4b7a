//! A job's story: its record in the `flare_jobs` bucket and its events on
//! `P.events.JOB_ID`, told by one author. [`Author`] creates records (the claim,
//! the tombstone) and reads them back as [`Story`]s; a [`Story`] takes the job
//! from state to state ([`change::apply`]), writes each record and publishes each
//! event. Intake, control, recovery and the job tasks tell a job's story only
//! through here: nothing else writes a record or publishes a job event.
//!
//! Every write is a compare-and-set on the revision its writer last saw: the
//! claim creates the record (there must be none), and each later write replaces
//! the revision the story read or wrote last. A write that finds the record
//! changed by someone else comes back as [`Superseded`]: the job's story is no
//! longer this writer's to tell, and it writes and publishes nothing more. Where
//! such a race is part of the protocol (a terminate racing a launch, two
//! deliveries of one launch), the outcome says who won ([`Claimed`],
//! [`Tombstoned`], [`TombstoneEnded`]).
//!
//! A record names its backend from the claim on, so its event needs nothing
//! else; only a tombstone names none (and announces nothing).
//!
//! Every log line of a job's story is written within the job's span
//! ([`Author::span`]), which carries the job id, the backend and the worker.

mod change;
mod events;
mod rejected;
mod timing;

pub use change::{Change, fresh_record};
pub use events::OWNER_PUBLISH_BOUND;
pub use rejected::Refusal;

use change::apply;
use rejected::minimal_record;
use timing::Timing;

use crate::backend::Progress;
use crate::nats::setup::Layout;
use crate::nats::subjects::Subjects;
use crate::observe::Metrics;
use crate::pool::lease::LeaseHandle;
use crate::pool::owners::OwnerIndex;
use crate::protocol::{BackendKind, BackendRef, JobEvent, JobId, JobRecord, reason};
use crate::report::error_chain;
use crate::state::JobState;
use crate::store::{Claim, JobStore, Replaced, StoreError};
use async_nats::jetstream;
use events::{EventPublisher, EventRejected};
use std::sync::Arc;
use std::time::Duration;

/// The record of a job this writer was telling changed under it: someone else
/// writes the job's story now. The fence of every write after the claim.
#[derive(Debug, thiserror::Error)]
#[error("the record of job {job_id} was changed by another writer")]
pub struct Superseded {
    /// The job.
    pub job_id: JobId,
    /// The record found instead, when there is a readable one.
    pub found: Option<Box<JobRecord>>,
}

/// When a state change is written to the job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Before its event is published.
    Now,
    /// With the change that follows at once (already observed): a record
    /// passing through a state only for an instant is written once, not twice.
    WithNext,
}

/// The outcome of a claim.
pub enum Claimed {
    /// The record is created: the job is this worker's, and its story goes on.
    Created(Box<Story>),
    /// A record was there already.
    Found {
        /// The story found, at the revision read.
        found: Box<Story>,
        /// The record that was to be created (a minimal one, should the server
        /// have refused the first for good).
        opening: Box<Opening>,
    },
}

/// The outcome of recording a terminate for a job no record exists of.
pub enum Tombstoned {
    /// The tombstone is recorded.
    Recorded,
    /// A record came first (the launch won the race): the record found.
    Found(Box<JobRecord>),
}

/// How ending a tombstoned job went.
pub enum TombstoneEnded {
    /// The launch's record replaced the tombstone, and its event went out.
    Ended,
    /// Another delivery of the launch replaced the tombstone first: the record
    /// it wrote.
    Lost(Box<JobRecord>),
    /// The tombstone went (its retention ran out, or an operator removed it)
    /// between reading and replacing it.
    Gone,
}

/// The first record of a job, to be claimed ([`Author::claim`]).
pub struct Opening {
    job_id: JobId,
    /// The record; the caller may add what it knows of the job (its site, its
    /// GPUs) before the claim.
    pub record: JobRecord,
}

impl Opening {
    /// The job.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }
}

/// The one writer of every job's record and events, for one worker.
pub struct Author {
    store: JobStore,
    owners: OwnerIndex,
    lease: LeaseHandle,
    events: EventPublisher,
    metrics: Arc<Metrics>,
    worker_id: String,
    pool: String,
}

/// What an [`Author`] writes with.
pub struct AuthorParts {
    /// The job records.
    pub store: JobStore,
    /// The index of unfinished jobs by owner.
    pub owners: OwnerIndex,
    /// The worker's lease, which every write waits for.
    pub lease: LeaseHandle,
    /// The JetStream context events are published with.
    pub js: jetstream::Context,
    /// The events stream.
    pub events: jetstream::stream::Stream,
    /// Subject names.
    pub subjects: Subjects,
    /// The streams and buckets, to create them again should they go.
    pub layout: Layout,
    /// The worker.
    pub worker_id: String,
    /// Its pool.
    pub pool: String,
    /// Where each event published is counted.
    pub metrics: Arc<Metrics>,
}

impl Author {
    /// The author for the worker `worker_id` of `pool`, writing records into
    /// `store` and publishing events on `js` into the events `stream` of
    /// `layout`, under `subjects`.
    pub fn new(parts: AuthorParts) -> Self {
        Author {
            store: parts.store,
            owners: parts.owners,
            lease: parts.lease,
            events: EventPublisher::new(parts.js, parts.events, parts.subjects, parts.layout),
            metrics: parts.metrics,
            worker_id: parts.worker_id,
            pool: parts.pool,
        }
    }

    /// The worker this author writes for.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The span every log line of a job's story is written in: the job, its
    /// backend (once known) and this worker.
    pub fn span(&self, job_id: &JobId, backend: Option<BackendKind>) -> tracing::Span {
        let span = tracing::info_span!(
            "job",
            job_id = %job_id,
            backend = tracing::field::Empty,
            worker = %self.worker_id
        );
        if let Some(backend) = backend {
            span.record("backend", tracing::field::display(backend));
        }
        span
    }

    /// The first record of a job this worker takes on, to be claimed: its first
    /// state (seq 1) on `backend`, in this worker's pool.
    pub fn opening(
        &self,
        job_id: &JobId,
        backend: BackendKind,
        state: JobState,
        change: Change,
    ) -> Opening {
        let mut record = fresh_record(job_id, &self.worker_id, state);
        record.pool = Some(self.pool.clone());
        record.backend = Some(backend);
        apply(&mut record, state, change).expect("a record's first change is always allowed");
        Opening {
            job_id: job_id.clone(),
            record,
        }
    }

    /// Claims a job by creating its `opening` record ([`Author::opening`]). A
    /// record the server refuses for good gives way to a minimal one that ends
    /// the job (see [`minimal_record`]).
    ///
    /// # Errors
    /// The [`StoreError`] when no record could be created or read back.
    pub async fn claim(self: &Arc<Self>, opening: Opening) -> Result<Claimed, StoreError> {
        // Indexed before the record exists, so that no unfinished job is
        // missing from the index (see `crate::pool::owners`).
        let indexed = !opening.record.state.is_terminal();
        if indexed {
            self.owners
                .add(&self.pool, &self.worker_id, opening.job_id.as_str())
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        self.lease.held().await;
        let (opening, claim) = match Box::pin(self.store.claim(&opening.record)).await {
            Err(refused @ StoreError::Rejected { .. }) => {
                let refused = Refusal::from(refused);
                tracing::error!(error = %error_chain(&refused), "the server refused the job's first record for good; the job ends");
                let minimal = Opening {
                    record: minimal_record(&opening.record, &refused),
                    ..opening
                };
                let claim = Box::pin(self.store.claim(&minimal.record)).await?;
                (minimal, claim)
            }
            claim => (opening, claim?),
        };
        Ok(match claim {
            Claim::Created { revision } => Claimed::Created(Box::new(self.story(
                opening.job_id,
                opening.record,
                revision,
            ))),
            Claim::Exists { record, revision } => {
                let still_mine = record.worker == self.worker_id
                    && !record.tombstone
                    && !record.state.is_terminal();
                if indexed && !still_mine {
                    self.unindex(&self.worker_id, &opening.job_id).await;
                }
                Claimed::Found {
                    found: Box::new(self.story(opening.job_id.clone(), *record, revision)),
                    opening: Box::new(opening),
                }
            }
        })
    }

    /// Takes over the unfinished job of `story`, whose owner is gone (its lease
    /// lapsed or was released), by compare-and-set on its record: the record
    /// names this worker from now on, and the job's story goes on from here
    /// (its `seq` continues; nothing is published for the take-over itself).
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record first (another worker
    /// of the pool took the job over, or its owner came back).
    pub async fn take_over(self: &Arc<Self>, mut story: Story) -> Result<Story, Superseded> {
        let previous = story.record.worker.clone();
        if previous != self.worker_id
            && let Err(e) = self
                .owners
                .add(&self.pool, &self.worker_id, story.job_id.as_str())
                .await
        {
            tracing::error!(error = %error_chain(&e), "cannot index the job under this worker; it is not taken over now");
            return Err(Superseded {
                job_id: story.job_id.clone(),
                found: None,
            });
        }
        story.record.worker = self.worker_id.clone();
        story.behind = false;
        match story.write().await {
            Ok(()) => {
                if previous != self.worker_id {
                    self.unindex(&previous, &story.job_id).await;
                }
                Ok(story)
            }
            Err(written) => {
                if previous != self.worker_id {
                    self.unindex(&self.worker_id, &story.job_id).await;
                }
                Err(match written {
                    Written::Superseded(superseded) => superseded,
                    Written::Refused(refusal) => {
                        tracing::error!(error = %error_chain(&refusal), "the server refused the taken-over record");
                        Superseded {
                            job_id: story.job_id.clone(),
                            found: None,
                        }
                    }
                })
            }
        }
    }

    /// Removes `owner`'s index entry of `job_id` (one whose record says the
    /// job ended or is another's).
    pub async fn unindex(&self, owner: &str, job_id: &JobId) {
        self.owners.remove(&self.pool, owner, job_id.as_str()).await;
    }

    /// Records a terminate for `job_id`, of which no record exists, as a
    /// tombstone: the launch, when it comes, ends at once.
    ///
    /// # Errors
    /// The [`StoreError`] when the tombstone could not be created or the record
    /// found instead read.
    pub async fn tombstone(&self, job_id: &JobId) -> Result<Tombstoned, StoreError> {
        let mut tombstone = fresh_record(job_id, &self.worker_id, JobState::Terminated);
        tombstone.tombstone = true;
        tombstone.reason = Some(reason::TERMINATE_REQUESTED.into());
        tombstone.message = Some("terminated before its launch came".into());
        Ok(match Box::pin(self.store.claim(&tombstone)).await? {
            Claim::Created { .. } => Tombstoned::Recorded,
            Claim::Exists { record, .. } => Tombstoned::Found(record),
        })
    }

    /// The story of `job_id` as stored now, if there is a record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored value is not a record.
    pub async fn open(self: &Arc<Self>, job_id: &JobId) -> Result<Option<Story>, StoreError> {
        Ok(self
            .store
            .get_with_revision(job_id.as_str())
            .await?
            .map(|(record, revision)| self.story(job_id.clone(), record, revision)))
    }

    /// The stories `owner` (this worker, or one that went) owns that have not
    /// ended, found through the owner index; an entry whose record ended, went
    /// or names another owner is removed from the index, and a record whose
    /// job id is not one is passed over.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the index or a record cannot be read.
    pub async fn unfinished_of(self: &Arc<Self>, owner: &str) -> Result<Vec<Story>, StoreError> {
        let indexed = self
            .owners
            .jobs_of(&self.pool, owner)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let mut stories = Vec::new();
        for job_id in indexed {
            let job_id = match JobId::new(job_id.as_str()) {
                Ok(job_id) => job_id,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "an index entry whose job id is not one is passed over");
                    continue;
                }
            };
            match self.open(&job_id).await? {
                Some(story)
                    if story.record.worker == owner
                        && !story.record.tombstone
                        && !story.record.state.is_terminal() =>
                {
                    stories.push(story);
                }
                _ => self.unindex(owner, &job_id).await,
            }
        }
        Ok(stories)
    }

    fn story(self: &Arc<Self>, job_id: JobId, record: JobRecord, revision: u64) -> Story {
        Story {
            epoch: self.lease.epoch(),
            workload_stored: record.backend_ref.is_some(),
            author: self.clone(),
            job_id,
            record,
            revision,
            behind: false,
            timing: Timing::default(),
        }
    }

    /// For a job another delivery of its launch (or another worker) ended: its
    /// owner may have died after writing the final record and before publishing
    /// its event, or may be publishing it right now (the docs of the module
    /// `events` say how that is told apart). Returns how long to wait before
    /// looking again, while the owner may still publish the event; a job not
    /// ended (or a tombstone) needs nothing.
    pub async fn settle_final_event(&self, ended: &JobRecord) -> Option<Duration> {
        if !(ended.state.is_terminal() && ended.seq > 0 && !ended.tombstone) {
            return None;
        }
        self.events.settle_final_event(&event_of(ended)?).await
    }

    /// Publishes the event of `record`, and counts it.
    async fn publish(&self, record: &JobRecord) -> Result<(), EventRejected> {
        let Some(event) = event_of(record) else {
            return Ok(());
        };
        Box::pin(self.events.publish(&event)).await?;
        self.metrics.job_event(record);
        Ok(())
    }
}

/// The event of `record`; none, and a line in the log, for a record that
/// names no backend (none but a tombstone should, and a tombstone announces
/// nothing).
fn event_of(record: &JobRecord) -> Option<JobEvent> {
    let event = record.event();
    if event.is_none() {
        tracing::error!(
            seq = record.seq,
            "a record naming no backend has no event; nothing published"
        );
    }
    event
}

/// A job's record as this worker last saw it (with its revision, which its next
/// write must find), and the means to go on with it.
pub struct Story {
    author: Arc<Author>,
    job_id: JobId,
    record: JobRecord,
    revision: u64,
    /// The lease's epoch when this story last knew the record was its own.
    epoch: u64,
    /// The stored record names the job's workload.
    workload_stored: bool,
    /// The record holds a change not yet written (see [`Persist::WithNext`]).
    behind: bool,
    /// When the waits its events end began.
    timing: Timing,
}

impl Story {
    /// The job.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The record, with the changes made so far.
    pub fn record(&self) -> &JobRecord {
        &self.record
    }

    /// The job's span (see [`Author::span`]).
    pub fn span(&self) -> tracing::Span {
        self.author.span(&self.job_id, self.record.backend)
    }

    /// Takes the job to state `to` with `change`, writes the record (now, or
    /// with the change that follows: `persist`) and publishes the change's event.
    /// Should the server refuse either for good, the job ends at once with a
    /// minimal record instead. Returns `false` (and changes nothing) when the
    /// state machine forbids the change.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn advance(
        &mut self,
        to: JobState,
        change: Change,
        persist: Persist,
    ) -> Result<bool, Superseded> {
        if let Err(error) = apply(&mut self.record, to, change) {
            tracing::error!(error = %error_chain(&error), "refusing a state change");
            return Ok(false);
        }
        tracing::debug!(seq = self.record.seq, state = %to, "job state changed");
        self.behind = persist == Persist::WithNext;
        let written = match persist {
            Persist::Now => self.write().await,
            Persist::WithNext => Ok(()),
        };
        let refusal = match written {
            Ok(()) => match self.author.publish(&self.record).await {
                Ok(()) => {
                    self.timing
                        .published(&self.author.metrics, self.record.backend, to);
                    None
                }
                Err(rejected) => Some(Refusal::from(rejected)),
            },
            Err(Written::Refused(refusal)) => Some(refusal),
            Err(Written::Superseded(superseded)) => return Err(superseded),
        };
        if let Some(refusal) = refusal {
            self.end_refused(&refusal).await?;
        }
        Ok(true)
    }

    /// The job's launch request was published at `at`: its `running` event
    /// will note how long the launch took.
    pub fn note_requested_at(&mut self, at: time::OffsetDateTime) {
        self.timing.requested_at(at);
    }

    /// The worker learns now that the job's workload ended: its terminal
    /// event will note how long it took to tell.
    pub fn note_workload_ended(&mut self) {
        self.timing.workload_ended();
    }

    /// Counts a launch the job's backend refused with an error of kind
    /// `error` (see [`crate::backend::LaunchError::label`]).
    pub fn note_launch_failure(&self, error: &'static str) {
        if let Some(backend) = self.record.backend {
            self.author.metrics.launch_failed(backend, error);
        }
    }

    /// Makes sure the job is still this worker's before it acts on the workload:
    /// when the worker's lease was lost since the story last wrote or read the
    /// record, the record is read again, and must be the one this story wrote.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn confirm_owned(&mut self) -> Result<(), Superseded> {
        let epoch = self.author.lease.held().await;
        if epoch == self.epoch {
            return Ok(());
        }
        let found = Box::pin(self.author.store.get_with_revision(self.job_id.as_str())).await;
        match found {
            Ok(Some((record, revision)))
                if revision == self.revision && record.worker == self.author.worker_id =>
            {
                tracing::info!("the job's record is still this worker's after its lease was lost");
                self.epoch = epoch;
                Ok(())
            }
            // Meanwhile another worker recorded a stop for the job (its
            // terminate found this worker gone) and nothing else: the job is
            // still this worker's, and the stop is its to carry out.
            Ok(Some((record, revision))) if self.only_stop_recorded_in(&record) => {
                tracing::info!(stop_reason = ?record.stop_reason, "the job's record is still this worker's after its lease was lost, with a stop recorded meanwhile");
                self.record.stop_reason = record.stop_reason;
                self.revision = revision;
                self.epoch = epoch;
                Ok(())
            }
            Ok(found) => Err(Superseded {
                job_id: self.job_id.clone(),
                found: found.map(|(record, _)| Box::new(record)),
            }),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot read the job's record to confirm it is still this worker's; leaving the job");
                Err(Superseded {
                    job_id: self.job_id.clone(),
                    found: None,
                })
            }
        }
    }

    /// Whether `found`, the stored record, is this story's with nothing but a
    /// stop added by another worker (the one way a record changes under a
    /// worker without taking the job from it).
    fn only_stop_recorded_in(&self, found: &JobRecord) -> bool {
        if self.behind || found.stop_reason.is_none() || self.record.stop_reason.is_some() {
            return false;
        }
        let mut without_stop = found.clone();
        without_stop.stop_reason = None;
        without_stop == self.record
    }

    /// Whether the stored record names the job's workload, or ends the job: its
    /// launch request is no longer needed.
    pub fn launch_settled(&self) -> bool {
        self.workload_stored || (self.record.state.is_terminal() && !self.behind)
    }

    /// Gives the job the GPUs this worker placed it on (a launch taken over
    /// from a worker that went); written with the next change.
    pub fn assign_gpus(&mut self, gpus: Option<Vec<crate::protocol::AssignedGpu>>) {
        self.record.gpus = gpus;
    }

    /// Names the job's workload; written with the next change.
    pub fn name_workload(&mut self, backend_ref: BackendRef) {
        self.record.backend_ref = Some(backend_ref);
    }

    /// Sets when the job's `run_s` runs out; written with the next change (its
    /// `running`).
    pub fn set_run_deadline(&mut self, deadline: String) {
        self.record.run_deadline = Some(deadline);
    }

    /// Records the first stop asked of the workload (its `reason`), so that its
    /// end is reported with that cause, also by a worker that restarts first.
    /// A write the server refuses is only logged: the job's next change writes
    /// the record again, and ends the job if that is refused too.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn record_stop(&mut self, reason: &str) -> Result<(), Superseded> {
        self.record.stop_reason = Some(reason.to_owned());
        self.behind = false;
        self.write_or_log().await.map(drop)
    }

    /// Records how the launch goes (the workload's name as soon as it exists,
    /// what the launch is doing), refusals only logged as for
    /// [`Story::record_stop`]. Returns whether the stored record holds it.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn record_progress(&mut self, progress: Progress) -> Result<bool, Superseded> {
        self.record.backend_ref = progress.backend_ref;
        self.record.message = progress.step;
        self.behind = false;
        self.write_or_log().await
    }

    /// Writes a change that was to be written with the next one
    /// ([`Persist::WithNext`]), should that not have come.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn catch_up(&mut self) -> Result<(), Superseded> {
        if !self.behind {
            return Ok(());
        }
        self.behind = false;
        self.write_or_log().await.map(drop)
    }

    /// The event of the record's current state, to be published while the
    /// story goes on elsewhere (a launch's progress is recorded meanwhile).
    pub fn announcement(&self) -> Announcement {
        Announcement {
            author: self.author.clone(),
            record: self.record.clone(),
        }
    }

    /// Publishes the event of the record's current state; should the server
    /// refuse it for good, the job ends with a minimal record instead.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn announce(&mut self) -> Result<(), Superseded> {
        match self.announcement().publish().await {
            Ok(()) => Ok(()),
            Err(refusal) => self.end_refused(&refusal).await,
        }
    }

    /// Ends the job after the server refused its latest record or event for
    /// good: writes the minimal record (see [`minimal_record`]) and publishes
    /// its event, each retried only while it fails in a way that may pass.
    ///
    /// # Errors
    /// [`Superseded`] when someone else wrote the record meanwhile.
    pub async fn end_refused(&mut self, refusal: &Refusal) -> Result<(), Superseded> {
        tracing::error!(error = %error_chain(&refusal), "the server refused the job's record or event for good; the job ends");
        self.record = minimal_record(&self.record, refusal);
        self.behind = false;
        match self.write().await {
            Ok(()) => {}
            Err(Written::Superseded(superseded)) => return Err(superseded),
            Err(Written::Refused(error)) => {
                tracing::error!(error = %error_chain(&error), "the server refused even the job's minimal record");
            }
        }
        if let Err(error) = self.author.publish(&self.record).await {
            tracing::error!(error = %error_chain(&error), "the server refused even the job's minimal event");
        }
        Ok(())
    }

    /// Ends a job whose terminate came before its launch: the launch's
    /// `opening` record (see [`Author::opening`]), ended in `terminated` with
    /// `message`, replaces this story's tombstone, and its event goes out. When
    /// two deliveries of the launch race, one replaces it and publishes; the
    /// other gets [`TombstoneEnded::Lost`] with the record it lost to.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record found instead cannot be read,
    /// [`StoreError::Rejected`] when the server refuses the record for good.
    pub async fn end_tombstone(
        self,
        opening: Opening,
        message: &str,
    ) -> Result<TombstoneEnded, StoreError> {
        let mut opening = opening.record;
        opening.created = self.record.created.clone();
        opening.seq = 0;
        apply(
            &mut opening,
            JobState::Terminated,
            Change::because(reason::TERMINATE_REQUESTED, message),
        )
        .expect("a record's first change is always allowed");
        let Story {
            author,
            job_id,
            revision,
            ..
        } = self;
        match Box::pin(author.store.replace(&opening, revision)).await? {
            Replaced::Done { revision } => {
                let mut ended = author.story(job_id, opening, revision);
                // A refused event ends the job with a minimal record; no one
                // else writes a record this story just wrote.
                if let Err(superseded) = ended.announce().await {
                    tracing::error!(%superseded, "the job's story was taken over while it ended");
                }
                Ok(TombstoneEnded::Ended)
            }
            Replaced::Lost(Some(winner)) => Ok(TombstoneEnded::Lost(winner)),
            Replaced::Lost(None) => Ok(TombstoneEnded::Gone),
        }
    }

    /// Publishes the event of a job this worker ended before it restarted,
    /// unless the stream holds it.
    pub async fn republish_unless_stored(&self) {
        if let Some(event) = event_of(&self.record) {
            self.author.events.publish_unless_stored(&event).await;
        }
    }

    /// Writes the record, logging a refusal for good; whether it was written.
    async fn write_or_log(&mut self) -> Result<bool, Superseded> {
        match self.write().await {
            Ok(()) => Ok(true),
            Err(Written::Superseded(superseded)) => Err(superseded),
            Err(Written::Refused(error)) => {
                // The job's next change writes it again, and ends the job if refused.
                tracing::error!(error = %error_chain(&error), "could not write the job's record");
                Ok(false)
            }
        }
    }

    /// Writes the record if the stored one is still at the revision this story
    /// saw last. A record gone meanwhile (its bucket removed and created again)
    /// is created anew.
    async fn write(&mut self) -> Result<(), Written> {
        // The store's and the publisher's futures are boxed throughout this
        // module: they are large (retries, backoff, the client's request), and a
        // job task awaits them at many points, so inline they would keep room for
        // the largest in every job's task for its whole life (about 4 KiB a job).
        self.author.lease.held().await;
        let store = &self.author.store;
        let replaced = Box::pin(store.replace(&self.record, self.revision)).await;
        let found = match replaced.map_err(|e| self.refused_or_superseded(e))? {
            Replaced::Done { revision } => {
                self.revision = revision;
                self.workload_stored = self.record.backend_ref.is_some();
                if self.record.state.is_terminal() {
                    self.author.unindex(&self.record.worker, &self.job_id).await;
                }
                return Ok(());
            }
            Replaced::Lost(found) => found,
        };
        if found.is_none() {
            match Box::pin(store.claim(&self.record))
                .await
                .map_err(|e| self.refused_or_superseded(e))?
            {
                Claim::Created { revision } => {
                    self.revision = revision;
                    if self.record.state.is_terminal() {
                        self.author.unindex(&self.record.worker, &self.job_id).await;
                    }
                    return Ok(());
                }
                Claim::Exists { record, .. } => {
                    return Err(Written::Superseded(Superseded {
                        job_id: self.job_id.clone(),
                        found: Some(record),
                    }));
                }
            }
        }
        Err(Written::Superseded(Superseded {
            job_id: self.job_id.clone(),
            found,
        }))
    }

    /// A failed write: refused for good, or (the record found instead being
    /// unreadable) overtaken.
    fn refused_or_superseded(&self, error: StoreError) -> Written {
        match error {
            refused @ StoreError::Rejected { .. } => Written::Refused(refused.into()),
            _ => Written::Superseded(Superseded {
                job_id: self.job_id.clone(),
                found: None,
            }),
        }
    }
}

/// Why a write did not happen.
enum Written {
    /// The server refused the record for good.
    Refused(Refusal),
    /// Someone else wrote the record.
    Superseded(Superseded),
}

/// The event of a story's state at one moment (see [`Story::announcement`]).
pub struct Announcement {
    author: Arc<Author>,
    record: JobRecord,
}

impl Announcement {
    /// Publishes the event.
    ///
    /// # Errors
    /// The [`Refusal`] when the server refuses it for good; the story ends
    /// with [`Story::end_refused`] then.
    pub async fn publish(self) -> Result<(), Refusal> {
        Ok(self.author.publish(&self.record).await?)
    }
}
