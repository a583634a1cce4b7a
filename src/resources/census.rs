//! Asking every worker of a pool for its resources (`P.resources.POOL`, each
//! worker answering for itself) and judging from the answers whether any of
//! them could ever hold a request.

use super::gpu_pool::GpuNeed;
use crate::protocol::ResourceStatus;
use futures::StreamExt;
use std::time::Duration;

/// Why the pool's workers could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    /// The inbox for the answers could not be subscribed to.
    #[error(transparent)]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The question could not be sent.
    #[error(transparent)]
    Publish(#[from] async_nats::PublishError),
}

/// Most answers read (a pool larger than this is not asked whole).
const MAX_ANSWERS: usize = 1024;

/// Sends the question on `subject` and collects the answers that come within
/// `window`; answers that are not a [`ResourceStatus`] are skipped.
///
/// # Errors
/// A [`CensusError`] when the question cannot be sent.
pub async fn gather(
    client: &async_nats::Client,
    subject: String,
    window: Duration,
) -> Result<Vec<ResourceStatus>, CensusError> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject, inbox, bytes::Bytes::new())
        .await?;
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while statuses.len() < MAX_ANSWERS {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(message)) => {
                if let Ok(status) = serde_json::from_slice(&message.payload) {
                    statuses.push(status);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(statuses)
}

/// Whether the worker that answered `status` could hold `need` with all its
/// GPUs free: a `best-effort` worker takes anything.
pub fn could_ever_hold(status: &ResourceStatus, need: GpuNeed) -> bool {
    if status.policy != "gpu" {
        return true;
    }
    let fitting = status
        .gpus
        .iter()
        .filter(|gpu| need.fits_memory(gpu.memory_mb))
        .count();
    u32::try_from(fitting).unwrap_or(u32::MAX) >= need.count
}
