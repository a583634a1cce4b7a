//! Job records in the `flare_jobs` KV bucket: the claim (create, which fails if the
//! record exists), reads, and the owner's updates.
//!
//! Creating the record is what claims a job, so a second delivery of the same
//! launch finds the record and starts nothing. Only the owning job task writes a
//! record after that, so updates need no compare-and-set.

use crate::protocol::JobRecord;
use crate::retry::{retry_forever, retry_transient};
use async_nats::jetstream::kv;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record exists already (the answer to a create).
    #[error("a record for job {0} exists already")]
    AlreadyExists(String),
    /// NATS did not answer or refused; worth retrying.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
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
}

/// The outcome of trying to claim a job.
#[derive(Debug)]
pub enum Claim {
    /// The record was created: the job is ours.
    Created,
    /// A record was there already.
    Exists(Box<JobRecord>),
}

/// The `flare_jobs` bucket.
#[derive(Clone)]
pub struct JobStore {
    kv: kv::Store,
}

impl JobStore {
    /// Wraps an opened bucket.
    pub fn new(kv: kv::Store) -> Self {
        JobStore { kv }
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
    /// [`StoreError::Corrupt`] when an existing record cannot be read.
    pub async fn claim(&self, record: &JobRecord) -> Result<Claim, StoreError> {
        let key = Self::key(&record.job_id);
        let value = encode(record);
        let created = retry_transient(
            "claiming a job record",
            || async {
                self.kv
                    .create(&key, value.clone().into())
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => {
                            StoreError::AlreadyExists(record.job_id.clone())
                        }
                        _ => StoreError::Unavailable(e.to_string()),
                    })
            },
            StoreError::is_transient,
        )
        .await;
        match created {
            Ok(_) => Ok(Claim::Created),
            Err(StoreError::AlreadyExists(_)) => match self.get(&record.job_id).await? {
                Some(existing) if existing == *record => Ok(Claim::Created),
                Some(existing) => Ok(Claim::Exists(Box::new(existing))),
                // Deleted in between (by an operator): the job is still not ours to run.
                None => Err(StoreError::Unavailable(format!(
                    "record of job {} vanished while claiming it",
                    record.job_id
                ))),
            },
            Err(other) => Err(other),
        }
    }

    /// Reads a job's record, retrying transient failures.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored value is not a record.
    pub async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let key = Self::key(job_id);
        let bytes = retry_transient(
            "reading a job record",
            || async {
                self.kv
                    .get(&key)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            },
            StoreError::is_transient,
        )
        .await?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                    job_id: job_id.to_owned(),
                    error: e.to_string(),
                })
            })
            .transpose()
    }

    /// Writes a job's record, retrying until the bucket takes it (the caller
    /// bounds the time by dropping the future).
    pub async fn put(&self, record: &JobRecord) {
        let key = Self::key(&record.job_id);
        let value = encode(record);
        retry_forever("writing a job record", || async {
            self.kv.put(&key, value.clone().into()).await
        })
        .await;
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
