//! Where `top`'s picture comes from, without asking about any one job: every
//! job's latest event and then each new one (an ordered consumer on the events
//! stream, last per subject), the workers' leases and then each change (a watch
//! of the workers' bucket), and each run of a worker's resources, asked once.

use super::model::Update;
use crate::client::{Client, ClientError};
use crate::pool::members::LeaseChange;
use crate::report::error_chain;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// How many changes may wait for the view.
const BACKLOG: usize = 1024;

/// Starts following events and leases; the changes come on the receiver until
/// it is dropped.
///
/// # Errors
/// [`ClientError`] when the events stream or the leases' bucket cannot be read.
pub async fn start(client: Client) -> Result<mpsc::Receiver<Update>, ClientError> {
    let events = client.latest_events().await?;
    let leases = client.lease_changes().await?;
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(forward_events(events, tx.clone()));
    tokio::spawn(forward_leases(client, leases, tx));
    Ok(rx)
}

async fn forward_events(
    events: impl Stream<Item = Result<crate::protocol::JobEvent, ClientError>>,
    tx: mpsc::Sender<Update>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let update = match event {
            Ok(event) => Update::Event(Box::new(event)),
            Err(e) => Update::Problem(format!("events: {}", error_chain(&e))),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
    let _ = tx
        .send(Update::Problem("the events stream ended".into()))
        .await;
}

async fn forward_leases(
    client: Client,
    leases: impl Stream<Item = LeaseChange>,
    tx: mpsc::Sender<Update>,
) {
    let mut leases = std::pin::pin!(leases);
    // The run of each worker whose resources were asked for.
    let mut asked: HashMap<String, String> = HashMap::new();
    while let Some(change) = leases.next().await {
        // The lease goes to the view before its resources can.
        let new_run = match &change {
            LeaseChange::Written(lease) if asked.get(&lease.worker) != Some(&lease.instance) => {
                asked.insert(lease.worker.clone(), lease.instance.clone());
                Some(lease.worker.clone())
            }
            _ => None,
        };
        if tx.send(Update::Lease(change)).await.is_err() {
            return;
        }
        if let Some(worker) = new_run {
            tokio::spawn(ask_resources(client.clone(), worker, tx.clone()));
        }
    }
    let _ = tx
        .send(Update::Problem("the leases' watch ended".into()))
        .await;
}

/// Asks a worker for its resources; a worker that does not answer keeps its
/// GPUs unknown.
async fn ask_resources(client: Client, worker: String, tx: mpsc::Sender<Update>) {
    if let Ok(status) = client.worker_resources(&worker).await {
        let _ = tx.send(Update::Resources(Box::new(status))).await;
    }
}
