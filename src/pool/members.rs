//! The live pool, read from the workers' leases (see [`super::lease`]): who is
//! up now, whether one worker is, a stream of the leases that went (released
//! at a hand-over, or lapsed), and one of every change for a live view.

use crate::nats::kv_latest::{self, ListingError};
use crate::protocol::WorkerLease;
use crate::report::error_chain;
use async_nats::jetstream::kv;
use futures::{Stream, StreamExt};

/// The `flare_workers` bucket, read.
#[derive(Clone)]
pub struct Members {
    kv: kv::Store,
    client: async_nats::Client,
}

/// A lease that went: its worker's jobs are the pool's to adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// The worker.
    pub worker: String,
    /// Whether it released its lease (a hand-over) rather than letting it lapse.
    pub released: bool,
}

/// A change of the pool, as the leases show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// A worker's lease was written (taken or refreshed).
    Written(Box<WorkerLease>),
    /// A worker's lease went (released or lapsed).
    Gone(String),
}

impl Members {
    /// The leases in `kv`.
    pub fn new(kv: kv::Store, client: async_nats::Client) -> Self {
        Members { kv, client }
    }

    /// Every live worker's lease; a value that is not one is passed over.
    ///
    /// # Errors
    /// A [`ListingError`] when the bucket cannot be read.
    pub async fn live(&self) -> Result<Vec<WorkerLease>, ListingError> {
        let entries = kv_latest::latest(&self.client, &self.kv, ">", true).await?;
        Ok(entries
            .iter()
            .filter_map(|entry| read_lease(&entry.key, &entry.value))
            .collect())
    }

    /// Every live lease, then every change as it comes; a value that is not a
    /// lease is passed over.
    ///
    /// # Errors
    /// The client's error when the watch cannot be started.
    pub async fn changes(&self) -> Result<impl Stream<Item = LeaseChange> + use<>, kv::WatchError> {
        let watch = self.kv.watch_with_history(">").await?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            match entry.operation {
                kv::Operation::Put => read_lease(&entry.key, &entry.value)
                    .map(|lease| LeaseChange::Written(Box::new(lease))),
                _ => Some(LeaseChange::Gone(entry.key)),
            }
        }))
    }

    /// Whether `worker` holds a lease now.
    ///
    /// # Errors
    /// The client's error when the bucket cannot be read.
    pub async fn is_live(&self, worker: &str) -> Result<bool, kv::EntryError> {
        Ok(self
            .kv
            .entry(worker)
            .await?
            .is_some_and(|entry| entry.operation == kv::Operation::Put))
    }

    /// The leases that go from now on, as they go.
    ///
    /// # Errors
    /// The client's error when the watch cannot be started.
    pub async fn departures(&self) -> Result<impl Stream<Item = Departed> + use<>, kv::WatchError> {
        let watch = self.kv.watch_all().await?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            match entry.operation {
                kv::Operation::Put => None,
                operation => Some(Departed {
                    worker: entry.key,
                    released: operation == kv::Operation::Delete,
                }),
            }
        }))
    }
}

/// The lease in a key's value; `None`, with a warning, for one that is not.
fn read_lease(key: &str, value: &[u8]) -> Option<WorkerLease> {
    match serde_json::from_slice(value) {
        Ok(lease) => Some(lease),
        Err(e) => {
            tracing::warn!(key = %key, error = %error_chain(&e), "a lease that cannot be read is passed over");
            None
        }
    }
}
