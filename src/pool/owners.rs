//! The index of unfinished jobs by pool and owner, in the `flare_job_owners`
//! bucket: a key `POOL.OWNER.JOB` (the job's key as in the job-record bucket)
//! from a job's claim to its end, so that a restarting worker finds its own
//! jobs, and a survivor a lapsed worker's, by listing only the keys under
//! `POOL.OWNER`: the cost follows the jobs still going, not every record kept.
//!
//! The index is a hint, the record the truth: an entry is added before the
//! record that needs it is written, and removed after the record that ends the
//! job is, so an entry may outlive its job (a crash between the two), never the
//! other way round; whoever reads an entry checks the record, and removes an
//! entry whose record says the job ended or has another owner. A removed key
//! leaves a purge marker that expires by itself.

use crate::nats::failure::is_permanent;
use crate::nats::kv_latest::{self, ListingError};
use crate::report::error_chain;
use crate::retry::retry_transient;
use crate::store::JobStore;
use async_nats::jetstream::kv;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the marker of a removed entry stays.
const REMOVED_MARKER_TTL: Duration = Duration::from_secs(60);

/// An index entry could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} the owner index entry {key}: {source}")]
pub struct IndexError {
    /// What was being done.
    what: &'static str,
    /// The entry.
    key: String,
    /// The client's error.
    #[source]
    source: async_nats::Error,
}

/// The `flare_job_owners` bucket.
#[derive(Clone)]
pub struct OwnerIndex {
    kv: kv::Store,
    client: async_nats::Client,
}

impl OwnerIndex {
    /// The index in `kv`.
    pub fn new(kv: kv::Store, client: async_nats::Client) -> Self {
        OwnerIndex { kv, client }
    }

    fn key(pool: &str, owner: &str, job_id: &str) -> String {
        format!("{pool}.{owner}.{}", JobStore::key(job_id))
    }

    /// Notes that `owner` has `job_id`, retrying while NATS is away.
    ///
    /// # Errors
    /// An [`IndexError`] the server gives for good.
    pub async fn add(&self, pool: &str, owner: &str, job_id: &str) -> Result<(), IndexError> {
        let key = Self::key(pool, owner, job_id);
        retry_transient(
            "adding an owner index entry",
            || self.kv.put(&key, bytes::Bytes::new()),
            |e| !is_permanent(e),
        )
        .await
        .map(|_| ())
        .map_err(|e| IndexError {
            what: "add",
            key,
            source: e.into(),
        })
    }

    /// Removes the entry of `owner` and `job_id`; a failure is only logged (the
    /// entry is a hint, and whoever reads it next removes it).
    pub async fn remove(&self, pool: &str, owner: &str, job_id: &str) {
        let key = Self::key(pool, owner, job_id);
        if let Err(e) = self.kv.purge_with_ttl(&key, REMOVED_MARKER_TTL).await {
            tracing::warn!(%key, error = %error_chain(&e), "could not remove an owner index entry; it is removed when next read");
        }
    }

    /// The jobs `owner` of `pool` has, by the index.
    ///
    /// # Errors
    /// A [`ListingError`] when the bucket cannot be read.
    pub async fn jobs_of(&self, pool: &str, owner: &str) -> Result<Vec<String>, ListingError> {
        let entries =
            kv_latest::latest(&self.client, &self.kv, &format!("{pool}.{owner}.>"), false).await?;
        Ok(entries
            .iter()
            .filter_map(|entry| job_of(&entry.key).map(|(_, job)| job))
            .collect())
    }

    /// Every owner of `pool` with the jobs the index gives it.
    ///
    /// # Errors
    /// A [`ListingError`] when the bucket cannot be read.
    pub async fn owners(&self, pool: &str) -> Result<BTreeMap<String, Vec<String>>, ListingError> {
        let entries =
            kv_latest::latest(&self.client, &self.kv, &format!("{pool}.>"), false).await?;
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (owner, job) in entries.iter().filter_map(|entry| job_of(&entry.key)) {
            owners.entry(owner).or_default().push(job);
        }
        Ok(owners)
    }
}

/// The owner and job id of an index key `POOL.OWNER.JOBKEY` (pools and owners
/// are single tokens; a job key holds no dot, its dots being written `=2E`).
fn job_of(key: &str) -> Option<(String, String)> {
    let mut parts = key.splitn(3, '.');
    let (_pool, owner, job) = (parts.next()?, parts.next()?, parts.next()?);
    Some((owner.to_owned(), job.replace("=2E", ".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_give_back_their_owner_and_job() {
        let key = OwnerIndex::key("gpu", "w-1", "site-1_a.b.c");
        assert_eq!(key, "gpu.w-1.site-1_a=2Eb=2Ec");
        assert_eq!(
            job_of(&key),
            Some(("w-1".to_owned(), "site-1_a.b.c".to_owned()))
        );
        assert_eq!(job_of("gpu.w-1"), None);
    }
}
