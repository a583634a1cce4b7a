//! A job's story over a real nats-server: the claim creates the first record and
//! a second claimant finds it; each change moves `seq`, is written and published;
//! the state machine's refusals change nothing; a tombstone ends the launch that
//! comes after it; a record the server refuses ends the job with a minimal one;
//! and a write over a record someone else changed comes back superseded.

use crate::common::nats_server::NatsServer;
use crate::common::story_bench::{bench, id, states};
use flare_launcher::protocol::{BackendKind, reason};
use flare_launcher::state::JobState;
use flare_launcher::worker::story::{Change, Claimed, Persist, TombstoneEnded, Tombstoned};

#[tokio::test]
async fn a_claim_creates_the_first_record_and_a_second_claimant_finds_it() {
    let nats = NatsServer::start();
    let first = bench(&nats, "w1").await;
    let story = first.claimed("j.1").await;
    let stored = first.stored("j.1").await;
    assert_eq!(&stored, story.record());
    assert_eq!(
        (stored.seq, stored.state, stored.return_code),
        (1, JobState::Starting, None)
    );
    assert_eq!(stored.backend, Some(BackendKind::Process));
    assert_eq!(
        (stored.worker.as_str(), stored.pool.as_deref()),
        ("w1", Some("default"))
    );
    assert!(
        first.events("j.1").await.is_empty(),
        "a claim publishes nothing"
    );

    let second = bench(&nats, "w2").await;
    let opening = second.author.opening(
        &id("j.1"),
        BackendKind::Docker,
        JobState::Starting,
        Change::default(),
    );
    match second.author.claim(opening).await.unwrap() {
        Claimed::Found { found, opening } => {
            assert_eq!(found.record(), &stored);
            assert_eq!(opening.record.worker, "w2");
        }
        Claimed::Created(_) => panic!("a second claimant must not win"),
    }
}

#[tokio::test]
async fn each_change_moves_seq_and_is_written_before_its_event() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let mut story = bench.claimed("j1").await;
    story.announce().await.unwrap();
    story.name_workload(flare_launcher::protocol::BackendRef::Process { pid: 7 });
    let running = Change {
        message: Some("log at /x".into()),
        ..Change::default()
    };
    assert!(
        story
            .advance(JobState::Running, running, Persist::WithNext)
            .await
            .unwrap()
    );
    // Written with the next change: the store still holds `starting`.
    assert_eq!(bench.stored("j1").await.state, JobState::Starting);
    let exited = Change {
        reason: None,
        message: Some("exit code 3".into()),
        exit_code: Some(3),
    };
    assert!(
        story
            .advance(JobState::Failed, exited, Persist::Now)
            .await
            .unwrap()
    );
    let stored = bench.stored("j1").await;
    assert_eq!(&stored, story.record());
    assert_eq!(
        (
            stored.seq,
            stored.state,
            stored.return_code,
            stored.exit_code
        ),
        (3, JobState::Failed, Some(1), Some(3))
    );
    assert_eq!(
        stored.backend_ref,
        Some(flare_launcher::protocol::BackendRef::Process { pid: 7 })
    );
    let events = bench.events("j1").await;
    assert_eq!(
        states(&events),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Failed)
        ]
    );
    assert!(events.iter().all(|e| e.backend == BackendKind::Process));
    assert_eq!(events[1].message.as_deref(), Some("log at /x"));
}

#[tokio::test]
async fn a_change_the_state_machine_forbids_changes_nothing() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let mut story = bench.claimed("j1").await;
    let claimed = story.record().clone();
    let skipped = story
        .advance(JobState::Succeeded, Change::default(), Persist::Now)
        .await
        .unwrap();
    assert!(!skipped, "starting cannot become succeeded");
    assert_eq!(story.record(), &claimed);
    assert_eq!(bench.stored("j1").await, claimed);
    for to in [JobState::Running, JobState::Succeeded] {
        assert!(
            story
                .advance(to, Change::default(), Persist::Now)
                .await
                .unwrap()
        );
    }
    let ended = story.record().clone();
    for to in [JobState::Running, JobState::Failed] {
        assert!(
            !story
                .advance(to, Change::default(), Persist::Now)
                .await
                .unwrap()
        );
        assert_eq!(story.record(), &ended);
    }
    assert_eq!(bench.stored("j1").await, ended);
    assert_eq!(
        states(&bench.events("j1").await),
        [(2, JobState::Running), (3, JobState::Succeeded)]
    );
}

#[tokio::test]
async fn a_tombstone_ends_the_launch_after_it_and_a_late_delivery_loses() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    assert!(matches!(
        bench.author.tombstone(&id("t1")).await.unwrap(),
        Tombstoned::Recorded
    ));
    let tombstone = bench.stored("t1").await;
    assert!(tombstone.tombstone);
    assert_eq!((tombstone.seq, tombstone.backend), (0, None));
    assert!(
        tombstone.event().is_none(),
        "a tombstone names no backend and announces nothing"
    );
    // A second terminate finds the first.
    match bench.author.tombstone(&id("t1")).await.unwrap() {
        Tombstoned::Found(found) => assert_eq!(*found, tombstone),
        Tombstoned::Recorded => panic!("a tombstone over a tombstone"),
    }

    // Two deliveries of the launch both find the tombstone.
    let launch = || {
        bench.author.opening(
            &id("t1"),
            BackendKind::Docker,
            JobState::Starting,
            Change::default(),
        )
    };
    let Claimed::Found {
        found: first,
        opening,
    } = bench.author.claim(launch()).await.unwrap()
    else {
        panic!("the tombstone was not found");
    };
    let Claimed::Found { found: second, .. } = bench.author.claim(launch()).await.unwrap() else {
        panic!("the tombstone was not found");
    };
    assert!(matches!(
        first
            .end_tombstone(*opening, "nothing was started")
            .await
            .unwrap(),
        TombstoneEnded::Ended
    ));
    let ended = bench.stored("t1").await;
    assert!(!ended.tombstone);
    assert_eq!(
        (ended.state, ended.seq, ended.reason.as_deref()),
        (JobState::Terminated, 1, Some(reason::TERMINATE_REQUESTED))
    );
    assert_eq!(ended.created, tombstone.created);
    assert_eq!(ended.backend, Some(BackendKind::Docker));
    assert_eq!(
        states(&bench.events("t1").await),
        [(1, JobState::Terminated)]
    );

    match second
        .end_tombstone(launch(), "nothing was started")
        .await
        .unwrap()
    {
        TombstoneEnded::Lost(winner) => assert_eq!(*winner, ended),
        _ => panic!("the late delivery must lose to the first"),
    }
    assert_eq!(bench.events("t1").await.len(), 1, "one event only");
}

#[tokio::test]
async fn a_record_the_server_refuses_ends_the_job_with_a_minimal_one() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    bench.limit_message_size("KV_flare_jobs", 4096).await;

    // Refused as the first record: the claim records a minimal one instead.
    let mut opening = bench.author.opening(
        &id("big"),
        BackendKind::Process,
        JobState::Starting,
        Change::default(),
    );
    opening.record.site = Some("s".repeat(10_000));
    let Claimed::Created(story) = bench.author.claim(opening).await.unwrap() else {
        panic!("the minimal record was not created");
    };
    let minimal = bench.stored("big").await;
    assert_eq!(&minimal, story.record());
    assert_eq!(
        (minimal.state, minimal.seq, minimal.reason.as_deref()),
        (JobState::Error, 1, Some(reason::RECORD_REJECTED))
    );
    assert_eq!(minimal.site, None);

    // Refused as a later change: the job ends with a minimal record and its event.
    let mut story = bench.claimed("later").await;
    let huge = Change {
        message: Some("m".repeat(10_000)),
        ..Change::default()
    };
    assert!(
        story
            .advance(JobState::Running, huge, Persist::Now)
            .await
            .unwrap()
    );
    let ended = bench.stored("later").await;
    assert_eq!(&ended, story.record());
    assert_eq!(
        (ended.state, ended.seq, ended.reason.as_deref()),
        (JobState::Error, 2, Some(reason::RECORD_REJECTED))
    );
    assert_eq!(states(&bench.events("later").await), [(2, JobState::Error)]);
}

#[tokio::test]
async fn a_write_over_a_record_someone_else_changed_is_superseded() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let mut mine = bench.claimed("j1").await;
    // Someone else reads the record and goes on with it first.
    let mut theirs = bench
        .author
        .open(&id("j1"))
        .await
        .unwrap()
        .expect("the record");
    theirs
        .advance(JobState::Running, Change::default(), Persist::Now)
        .await
        .unwrap();
    let written = bench.stored("j1").await;

    let superseded = mine
        .advance(JobState::Error, Change::default(), Persist::Now)
        .await
        .expect_err("a write over a newer record must not land");
    assert_eq!(superseded.job_id, "j1");
    assert_eq!(superseded.found.as_deref(), Some(&written));
    let superseded = mine
        .record_stop(reason::TERMINATE_REQUESTED)
        .await
        .expect_err("a stop over a newer record must not land");
    assert_eq!(superseded.found.as_deref(), Some(&written));
    assert_eq!(bench.stored("j1").await, written, "nothing was overwritten");
    assert_eq!(
        states(&bench.events("j1").await),
        [(2, JobState::Running)],
        "the overtaken writer published nothing"
    );

    // The writer that is up to date goes on.
    theirs
        .advance(JobState::Succeeded, Change::default(), Persist::Now)
        .await
        .unwrap();
    assert_eq!(bench.stored("j1").await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_record_removed_meanwhile_is_written_again() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let mut story = bench.claimed("j1").await;
    let bucket = bench.js.get_key_value("flare_jobs").await.unwrap();
    bucket.delete("j1").await.unwrap();
    assert!(bench.store.get("j1").await.unwrap().is_none());

    story
        .advance(JobState::Running, Change::default(), Persist::Now)
        .await
        .unwrap();
    assert_eq!(&bench.stored("j1").await, story.record());
    // And the story goes on from the revision written.
    story
        .advance(JobState::Succeeded, Change::default(), Persist::Now)
        .await
        .unwrap();
    assert_eq!(bench.stored("j1").await.state, JobState::Succeeded);
}
