//! A worker's lease: its key in the `flare_workers` bucket, written with a
//! per-message TTL and refreshed three times within it, by compare-and-set on
//! the revision the worker wrote last. While the lease lives, no other worker
//! touches this worker's jobs; once it lapses (the worker died, froze or was
//! cut off past its TTL), the pool adopts them. A worker that hands its jobs
//! over at shutdown removes its key, which the pool sees at once.
//!
//! The worker's own view is kept with a margin: the lease counts as held until
//! a fifth of the TTL before the server would let it lapse, counted from when
//! the refresh was sent. A writer asks [`LeaseHandle::held`] before it writes;
//! when the lease is not held it waits for the keeper's next verdict. A lease
//! found lost (the refresh finds another revision: it lapsed, or another run
//! with the same id took it) is taken anew under a new epoch: a job task whose
//! story was last confirmed under an older epoch checks its record before it
//! acts on its workload again (see [`crate::worker::story`]). Fencing itself is
//! the record's compare-and-set: this only keeps a worker that lost its lease
//! from acting on timing alone.

use crate::protocol::WorkerLease;
use crate::report::error_chain;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, kv};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The lease as this worker knows it.
#[derive(Debug, Clone, Copy)]
struct LeaseState {
    /// Until when it is held for sure; `None` while it is not.
    held_until: Option<Instant>,
    /// Since when it has been held without a break.
    held_since: Option<Instant>,
    /// Grows each time the lease is taken anew after being lost.
    epoch: u64,
    /// The keeper has stopped: nothing waits for it any more.
    ended: bool,
}

/// Why the lease could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The key holds another revision than the one this worker wrote last.
    #[error("the lease was lost: its key changed since this worker wrote it")]
    Lost,
    /// The server did not take the write (NATS away, or a refusal).
    #[error("could not write the lease: {0}")]
    Write(#[source] PublishError),
    /// The key could not be read.
    #[error("could not read the lease: {0}")]
    Read(#[source] kv::EntryError),
}

/// Reads the lease's state; cheap to clone.
#[derive(Clone)]
pub struct LeaseHandle {
    state: watch::Receiver<LeaseState>,
}

impl LeaseHandle {
    /// Waits until the lease is held, and returns its epoch. Returns at once
    /// once the keeper has stopped (the worker is leaving).
    pub async fn held(&self) -> u64 {
        let mut state = self.state.clone();
        loop {
            let now = *state.borrow_and_update();
            if now.ended || now.held_until.is_some_and(|until| Instant::now() < until) {
                return now.epoch;
            }
            let expires = now.held_until.unwrap_or_else(Instant::now);
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return now.epoch },
                // A refresh that went out after the last look.
                () = tokio::time::sleep_until(expires + Duration::from_millis(100)) => {}
            }
        }
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.state.borrow().epoch
    }

    /// How long the lease has been held without a break; `None` when it is not.
    pub fn held_for(&self) -> Option<Duration> {
        let state = *self.state.borrow();
        match (state.held_until, state.held_since) {
            (Some(until), Some(since)) if Instant::now() < until => Some(since.elapsed()),
            _ => None,
        }
    }
}

/// Keeps the lease alive.
pub struct LeaseKeeper {
    kv: kv::Store,
    js: jetstream::Context,
    key: String,
    lease: WorkerLease,
    ttl: Duration,
    /// The jobs the worker runs now, for the lease's value.
    running: Arc<dyn Fn() -> usize + Send + Sync>,
    /// The revision this worker wrote last.
    revision: Option<u64>,
    state: watch::Sender<LeaseState>,
}

impl LeaseKeeper {
    /// Takes the lease of `lease.worker` in `kv`, replacing whatever an earlier
    /// run with the same id left.
    ///
    /// # Errors
    /// A [`LeaseError`] when it cannot be written.
    pub async fn take(
        kv: kv::Store,
        js: jetstream::Context,
        lease: WorkerLease,
        running: Arc<dyn Fn() -> usize + Send + Sync>,
    ) -> Result<(LeaseKeeper, LeaseHandle), LeaseError> {
        let (state, receiver) = watch::channel(LeaseState {
            held_until: None,
            held_since: None,
            epoch: 0,
            ended: false,
        });
        let mut keeper = LeaseKeeper {
            key: lease.worker.clone(),
            ttl: Duration::from_secs(lease.lease_s),
            kv,
            js,
            lease,
            running,
            revision: None,
            state,
        };
        keeper.take_anew().await?;
        Ok((keeper, LeaseHandle { state: receiver }))
    }

    /// Refreshes the lease until `stop` is cancelled, taking it anew when it was
    /// lost. Returns the keeper, to release the lease or let it lapse.
    pub async fn run(mut self, stop: CancellationToken) -> LeaseKeeper {
        let every = self.ttl / 3;
        let mut next = Instant::now() + every;
        loop {
            tokio::select! {
                () = stop.cancelled() => return self,
                () = tokio::time::sleep_until(next) => {}
            }
            let outcome = match self.refresh().await {
                Err(LeaseError::Lost) => {
                    self.note_lost();
                    self.take_anew().await
                }
                other => other,
            };
            next = match outcome {
                Ok(()) => Instant::now() + every,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "could not refresh the worker's lease; trying again");
                    Instant::now() + Duration::from_secs(1).min(every)
                }
            };
        }
    }

    /// Removes the lease, so that the pool adopts this worker's jobs at once.
    pub async fn release(self) {
        let removed = self
            .kv
            .delete_expect_revision(&self.key, self.revision)
            .await;
        match removed {
            Ok(()) => tracing::info!("lease released: the pool adopts this worker's jobs"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not release the lease; the pool adopts this worker's jobs once it lapses")
            }
        }
        self.end();
    }

    /// Stops keeping the lease, leaving it to lapse.
    pub fn end(self) {
        self.state.send_modify(|state| state.ended = true);
    }

    /// Writes the lease if its key is still at the revision written last.
    async fn refresh(&mut self) -> Result<(), LeaseError> {
        let Some(revision) = self.revision else {
            return Err(LeaseError::Lost);
        };
        self.write(revision).await
    }

    /// The lease was found lost: nothing is done under the old epoch any more.
    fn note_lost(&mut self) {
        tracing::error!(
            "this worker's lease was lost (it lapsed while the worker was frozen or cut off, or another worker runs with the same id); taking it anew, and checking each job's record before acting on it"
        );
        self.revision = None;
        self.state.send_modify(|state| {
            state.held_until = None;
            state.held_since = None;
            state.epoch += 1;
        });
    }

    /// Takes the lease whatever its key holds now.
    async fn take_anew(&mut self) -> Result<(), LeaseError> {
        let found = self.kv.entry(&self.key).await.map_err(LeaseError::Read)?;
        if let Some(entry) = &found
            && entry.operation == kv::Operation::Put
            && let Ok(other) = serde_json::from_slice::<WorkerLease>(&entry.value)
            && other.instance != self.lease.instance
        {
            tracing::warn!(host = %other.host, started = %other.started, "replacing a live lease of this worker id (an earlier run of this worker, or another worker with the same id)");
        }
        self.write(found.map_or(0, |entry| entry.revision)).await
    }

    /// Writes the lease with its TTL if its key's last revision is `revision`.
    async fn write(&mut self, revision: u64) -> Result<(), LeaseError> {
        self.lease.running = (self.running)() as u64;
        let value = serde_json::to_vec(&self.lease).expect("a lease always serializes");
        let message = PublishMessage::build()
            .payload(value.into())
            .ttl(self.ttl)
            .expected_last_subject_sequence(revision);
        let prefix = self.kv.put_prefix.as_deref().unwrap_or(&self.kv.prefix);
        let sent = Instant::now();
        let acked = async {
            self.js
                .send_publish(format!("{prefix}{}", self.key), message)
                .await?
                .await
        };
        match acked.await {
            Ok(ack) => {
                self.revision = Some(ack.sequence);
                let held_until = sent + self.ttl - self.ttl / 5;
                self.state.send_modify(|state| {
                    state.held_until = Some(held_until);
                    state.held_since.get_or_insert(sent);
                });
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(LeaseError::Lost),
            Err(e) => Err(LeaseError::Write(e)),
        }
    }
}
