//! The job store over a real nats-server: a claim is a create that a second
//! claimant loses, and a compare-and-set replace loses to a change made since
//! the record was read.

use crate::common::nats_server::NatsServer;
use flare_launcher::nats::setup::Layout;
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::protocol::JobId;
use flare_launcher::state::JobState;
use flare_launcher::store::{Claim, JobStore, Replaced};
use flare_launcher::worker::story::fresh_record;
use std::time::Duration;

fn id(job_id: &str) -> JobId {
    JobId::new(job_id).unwrap()
}

async fn store(nats: &NatsServer) -> JobStore {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let layout = Layout::new(
        js,
        Subjects::new("flare.jobs"),
        "default",
        Duration::from_secs(30),
    );
    JobStore::new(layout.prepare().await.unwrap().bucket, layout)
}

#[tokio::test]
async fn the_second_claim_finds_the_first_and_its_revision() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let first = fresh_record(&id("j.1"), "w1", JobState::Starting);
    assert!(matches!(
        store.claim(&first).await.unwrap(),
        Claim::Created { .. }
    ));
    // The same record again is a retried claim whose answer was lost: still ours.
    assert!(matches!(
        store.claim(&first).await.unwrap(),
        Claim::Created { .. }
    ));
    let second = fresh_record(&id("j.1"), "w2", JobState::Starting);
    match store.claim(&second).await.unwrap() {
        Claim::Exists { record, revision } => {
            assert_eq!(record.worker, "w1");
            let (_, current) = store.get_with_revision("j.1").await.unwrap().unwrap();
            assert_eq!(revision, current);
        }
        Claim::Created { .. } => panic!("a second claimant must not win"),
    }
}

#[tokio::test]
async fn a_replace_loses_to_a_change_made_since_the_read() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let tombstone = fresh_record(&id("j2"), "w1", JobState::Terminated);
    store.claim(&tombstone).await.unwrap();
    let (_, read) = store.get_with_revision("j2").await.unwrap().unwrap();

    let mine = fresh_record(&id("j2"), "w2", JobState::Terminated);
    let theirs = fresh_record(&id("j2"), "w3", JobState::Terminated);
    assert!(matches!(
        store.replace(&theirs, read).await.unwrap(),
        Replaced::Done { .. }
    ));
    assert_eq!(
        store.replace(&mine, read).await.unwrap(),
        Replaced::Lost(Some(Box::new(theirs.clone())))
    );
    // Replaying the winner's own write (a lost acknowledgement) counts as done.
    assert!(matches!(
        store.replace(&theirs, read).await.unwrap(),
        Replaced::Done { .. }
    ));
    assert_eq!(store.get("j2").await.unwrap().unwrap().worker, "w3");
}
