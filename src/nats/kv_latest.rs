//! The latest value of every key of a KV bucket under a key filter, read in one
//! pass: an ordered consumer delivering the last message of each matching
//! subject, so the cost follows the keys that match, not the bucket's history
//! or its other keys. Deleted and purged keys are left out.
//!
//! (The client's own listing of keys covers the whole bucket, and its watch
//! with history cannot tell an empty selection from a slow one.)

use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::time::Duration;

/// Longest wait for the next value of a listing the server said has more.
const SILENCE: Duration = Duration::from_secs(5);

/// Why a listing failed; worth trying again.
#[derive(Debug, thiserror::Error)]
#[error("cannot list the keys {filter} of bucket {bucket}: {source}")]
pub struct ListingError {
    /// The bucket.
    pub bucket: String,
    /// The key filter.
    pub filter: String,
    /// What went wrong.
    #[source]
    pub source: async_nats::Error,
}

/// One key's latest value.
pub struct Latest {
    /// The key, without the bucket's prefix.
    pub key: String,
    /// Its value (empty when only headers were asked for).
    pub value: bytes::Bytes,
    /// Its revision.
    pub revision: u64,
}

/// The latest value of each key of `store` matching `filter` (`>` for all),
/// with values (`values`) or keys only, delivered to an inbox of `client`.
///
/// # Errors
/// A [`ListingError`] when the server cannot be asked, or goes silent.
pub async fn latest(
    client: &async_nats::Client,
    store: &kv::Store,
    filter: &str,
    values: bool,
) -> Result<Vec<Latest>, ListingError> {
    let failed = |source: async_nats::Error| ListingError {
        bucket: store.name.clone(),
        filter: filter.to_owned(),
        source,
    };
    let consumer = store
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{}{filter}", store.prefix),
            headers_only: !values,
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.into()))?;
    let mut found = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer.messages().await.map_err(|e| failed(e.into()))?;
    loop {
        let message = match tokio::time::timeout(SILENCE, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| failed(e.into()))?,
            Ok(None) => return Err(failed("the listing ended early".into())),
            Err(_) => return Err(failed("the listing went silent".into())),
        };
        let info = message.info().map_err(|e| failed(e.to_string().into()))?;
        let pending = info.pending;
        let revision = info.stream_sequence;
        if is_put(message.headers.as_ref())
            && let Some(key) = message.subject.strip_prefix(store.prefix.as_str())
        {
            found.push(Latest {
                key: key.to_owned(),
                value: if values {
                    message.payload.clone()
                } else {
                    bytes::Bytes::new()
                },
                revision,
            });
        }
        if pending == 0 {
            return Ok(found);
        }
    }
}

/// Whether a KV message is a value rather than a delete, a purge or the marker
/// of a value that expired.
fn is_put(headers: Option<&async_nats::HeaderMap>) -> bool {
    let Some(headers) = headers else {
        return true;
    };
    headers.get("KV-Operation").is_none() && headers.get("Nats-Marker-Reason").is_none()
}
