//! Job records in the `flare_jobs` KV bucket: the claim (create, which fails if the
//! record exists), reads, and replacements.
//!
//! Creating the record is what claims a job, so a second delivery of the same
//! launch finds the record and starts nothing. Every later write is a
//! compare-and-set on the revision its writer last saw, so a writer that was
//! overtaken (another delivery ending a tombstone first, another worker taking
//! the job over) learns so and writes nothing. Only the job's story
//! ([`crate::worker::story`]) writes records.
//!
//! Records do not stay forever: a record that will not change again (a job's
//! end, a tombstone) is written with a per-message TTL of the retention, so the
//! server removes it when that has passed, at no cost that grows with the number
//! of jobs ever run; a record of a job still going has none. The final record of
//! a job also rolls up its key (`Nats-Rollup: sub`), removing the earlier
//! revisions (`starting`, `running`), which have no TTL and would otherwise be
//! the job's record again once the final one expired.
//!
//! Why per-message TTL: the server does the removal, so nothing lists or scans
//! the records and they expire even while no worker runs; a bucket-wide
//! `max_age` would also remove the records of jobs running longer than it, and
//! an index of end times to sweep would be a second write per job.
//!
//! Failures that may pass (see [`crate::nats::failure`]) are retried; a write the
//! server refuses for good is not, and comes back as [`StoreError::Rejected`].

use crate::nats::failure::is_permanent;
use crate::nats::setup::{EVENTS_MAX_AGE, Layout};
use crate::protocol::JobRecord;
use crate::retry::retry_transient;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use std::time::Duration;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record exists already (the answer to a create).
    #[error("a record for job {0} exists already")]
    AlreadyExists(String),
    /// NATS did not answer, or failed in a way that may pass; worth retrying.
    #[error("job store unavailable: {0}")]
    Unavailable(#[source] async_nats::Error),
    /// The server refused the record for good (e.g. it is larger than the server
    /// takes); retrying cannot help.
    #[error("the job store refused the record of job {job_id} for good: {source}")]
    Rejected {
        /// The job.
        job_id: String,
        /// The server's refusal.
        #[source]
        source: async_nats::Error,
    },
    /// The record changed since it was read (the answer to a compare-and-set).
    #[error("the record of job {0} changed meanwhile")]
    Changed(String),
    /// The stored value is not a record.
    #[error("record of job {job_id} is corrupt: {error}")]
    Corrupt {
        /// The job.
        job_id: String,
        /// The decoding error.
        error: String,
    },
}

impl StoreError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A failed write of `job_id`'s record: a refusal for good, or a failure
    /// that may pass.
    fn failed_write(job_id: &str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        if is_permanent(&error) {
            StoreError::Rejected {
                job_id: job_id.to_owned(),
                source: Box::new(error),
            }
        } else {
            StoreError::Unavailable(Box::new(error))
        }
    }
}

/// The outcome of trying to claim a job.
#[derive(Debug)]
pub enum Claim {
    /// The record was created: the job is ours.
    Created {
        /// The record's revision, for the next [`JobStore::replace`].
        revision: u64,
    },
    /// A record was there already.
    Exists {
        /// The record found.
        record: Box<JobRecord>,
        /// Its revision, for [`JobStore::replace`].
        revision: u64,
    },
}

/// How a conditional write ended.
enum Written {
    /// The record is stored, at this revision.
    Stored(u64),
    /// The condition failed: the record found instead, if any.
    Refused(Option<(Box<JobRecord>, u64)>),
}

/// How replacing a record ended.
#[derive(Debug, PartialEq)]
pub enum Replaced {
    /// The new record is stored.
    Done {
        /// Its revision, for the next [`JobStore::replace`].
        revision: u64,
    },
    /// Someone else changed the record first; nothing was written. Holds the
    /// record found instead, if there is one.
    Lost(Option<Box<JobRecord>>),
}

/// The `flare_jobs` bucket.
#[derive(Clone)]
pub struct JobStore {
    kv: kv::Store,
    layout: Layout,
    /// How long the records of ended jobs, and tombstones, are kept.
    retention: Duration,
}

impl JobStore {
    /// Wraps an opened bucket of `layout`, keeping the records of ended jobs as
    /// long as the events stream keeps events.
    pub fn new(kv: kv::Store, layout: Layout) -> Self {
        JobStore {
            kv,
            layout,
            retention: EVENTS_MAX_AGE,
        }
    }

    /// The same store, keeping the records of ended jobs, and tombstones, for
    /// `retention` (whole seconds, at least one).
    pub fn with_retention(self, retention: Duration) -> Self {
        JobStore {
            retention: retention.max(Duration::from_secs(1)),
            ..self
        }
    }

    /// Passes a write's result on; when the write failed (not merely refused,
    /// as a create of an existing record is), first creates the bucket again
    /// should it be gone (an operator removed it), so that the retry can succeed.
    async fn healed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.layout.restore_if_missing().await;
        }
        result
    }

    /// The key of a job's record. Job ids may hold dots, which KV keys treat as
    /// separators and forbid at the ends, so every `.` becomes `=2E` (`=` is not in
    /// the job-id alphabet, so no two ids share a key).
    pub fn key(job_id: &str) -> String {
        job_id.replace('.', "=2E")
    }

    /// Claims a job by creating its record, retrying transient failures. A create
    /// whose acknowledgement was lost and that finds its own record on the retry
    /// counts as created.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when an existing record cannot be read,
    /// [`StoreError::Rejected`] when the server refuses the record for good.
    pub async fn claim(&self, record: &JobRecord) -> Result<Claim, StoreError> {
        let written = self
            .write_conditionally("claiming a job record", record, |key, value| async move {
                let created = self.create(key, value, record).await;
                self.healed(created.map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => {
                        StoreError::AlreadyExists(record.job_id.clone())
                    }
                    _ => StoreError::failed_write(&record.job_id, e),
                }))
                .await
            })
            .await?;
        match written {
            Written::Stored(revision) => Ok(Claim::Created { revision }),
            Written::Refused(Some((existing, revision))) => Ok(Claim::Exists {
                record: existing,
                revision,
            }),
            // Deleted in between (by an operator): the job is still not ours to run.
            Written::Refused(None) => Err(StoreError::Unavailable(
                format!("record of job {} vanished while claiming it", record.job_id).into(),
            )),
        }
    }

    /// Replaces a record if it is still at `revision` (compare-and-set), retrying
    /// transient failures. A replace whose acknowledgement was lost and that finds
    /// its own record on the retry counts as done.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record found instead cannot be read,
    /// [`StoreError::Rejected`] when the server refuses the record for good.
    pub async fn replace(&self, record: &JobRecord, revision: u64) -> Result<Replaced, StoreError> {
        let written = self
            .write_conditionally("replacing a job record", record, |key, value| async move {
                let updated = self.update(key, value, revision, record).await;
                self.healed(updated.map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => {
                        StoreError::Changed(record.job_id.clone())
                    }
                    _ => StoreError::failed_write(&record.job_id, e),
                }))
                .await
            })
            .await?;
        Ok(match written {
            Written::Stored(revision) => Replaced::Done { revision },
            Written::Refused(found) => Replaced::Lost(found.map(|(record, _)| record)),
        })
    }

    /// Runs a conditional write of `record` (create, compare-and-set), retrying
    /// transient failures. When the condition fails, returns the record found
    /// instead, unless it is `record` itself: an earlier attempt stored it and only
    /// its acknowledgement was lost.
    async fn write_conditionally<Fut>(
        &self,
        what: &str,
        record: &JobRecord,
        write: impl Fn(String, bytes::Bytes) -> Fut,
    ) -> Result<Written, StoreError>
    where
        Fut: std::future::Future<Output = Result<u64, StoreError>>,
    {
        let key = Self::key(&record.job_id);
        let value = bytes::Bytes::from(encode(record));
        let written = retry_transient(
            what,
            || write(key.clone(), value.clone()),
            StoreError::is_transient,
        )
        .await;
        match written {
            Ok(revision) => Ok(Written::Stored(revision)),
            Err(StoreError::AlreadyExists(_) | StoreError::Changed(_)) => {
                match self.get_with_revision(&record.job_id).await? {
                    Some((found, revision)) if found == *record => Ok(Written::Stored(revision)),
                    found => Ok(Written::Refused(
                        found.map(|(record, revision)| (Box::new(record), revision)),
                    )),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Reads a job's record, retrying transient failures.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored value is not a record.
    pub async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .get_with_revision(job_id)
            .await?
            .map(|(record, _)| record))
    }

    /// Reads a job's record and its revision, retrying transient failures.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored value is not a record.
    pub async fn get_with_revision(
        &self,
        job_id: &str,
    ) -> Result<Option<(JobRecord, u64)>, StoreError> {
        let key = Self::key(job_id);
        let entry = retry_transient(
            "reading a job record",
            || async {
                self.kv
                    .entry(&key)
                    .await
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))
            },
            StoreError::is_transient,
        )
        .await?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&entry.value).map_err(|e| StoreError::Corrupt {
            job_id: job_id.to_owned(),
            error: e.to_string(),
        })?;
        Ok(Some((record, entry.revision)))
    }

    /// The TTL a record is written with: the retention for one that will not
    /// change again, none for the record of a job still going.
    fn ttl(&self, record: &JobRecord) -> Option<Duration> {
        record.state.is_terminal().then_some(self.retention)
    }

    /// Creates `record` under `key` (failing if it exists), with its TTL.
    async fn create(
        &self,
        key: String,
        value: bytes::Bytes,
        record: &JobRecord,
    ) -> Result<u64, kv::CreateError> {
        match self.ttl(record) {
            Some(ttl) => self.kv.create_with_ttl(key, value, ttl).await,
            None => self.kv.create(key, value).await,
        }
    }

    /// Writes `record` under `key` if the key is still at `revision`.
    async fn update(
        &self,
        key: String,
        value: bytes::Bytes,
        revision: u64,
        record: &JobRecord,
    ) -> Result<u64, kv::UpdateError> {
        match self.ttl(record) {
            Some(ttl) => Ok(self.put_final(&key, value, revision, ttl).await?),
            None => self.kv.update(key, value, revision).await,
        }
    }

    /// Publishes a record that will not change again: with a TTL, and rolling up
    /// the key so that no earlier revision outlives it; if the key is still at
    /// `revision`.
    /// The KV API offers a TTL only on a create. The worker's JetStream context
    /// has the default API prefix, so the subject is the bucket's own.
    async fn put_final(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: u64,
        ttl: Duration,
    ) -> Result<u64, PublishError> {
        let message = PublishMessage::build()
            .payload(value)
            .ttl(ttl)
            .header(async_nats::header::NATS_ROLLUP, "sub")
            .expected_last_subject_sequence(revision);
        let prefix = self.kv.put_prefix.as_deref().unwrap_or(&self.kv.prefix);
        let ack = self
            .layout
            .jetstream()
            .send_publish(format!("{prefix}{key}"), message)
            .await?
            .await?;
        Ok(ack.sequence)
    }
}

fn encode(record: &JobRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a JobRecord always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        assert_eq!(JobStore::key("j1"), "j1");
        assert_eq!(JobStore::key("a.b"), "a=2Eb");
        assert_ne!(JobStore::key("a.b"), JobStore::key("a_b"));
        assert!(!JobStore::key(".x.").starts_with('.'));
    }
}
