//! Jobs flowing through a NATS fault: publishing that keeps trying until the
//! stream takes a request (as an engine does; the job id is the message id, so a
//! request the stream took before its answer was lost is not stored twice), and
//! the tally of every job's stored events once each has ended.

use flare_launcher::client::Client;
use flare_launcher::protocol::{JobEvent, LaunchRequest};
use flare_launcher::state::JobState;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How long a request may wait for the stream to take it (a server restarting,
/// a cluster electing a leader).
const PUBLISH_LIMIT: Duration = Duration::from_secs(60);

/// Publishes `request` until the stream takes it.
pub async fn publish_until_taken(client: &Client, request: &LaunchRequest) {
    let deadline = Instant::now() + PUBLISH_LIMIT;
    while let Err(e) = client.launch(request).await {
        assert!(
            Instant::now() < deadline,
            "{}: not taken within {PUBLISH_LIMIT:?}: {e}",
            request.job_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the events stream holds of a set of jobs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Jobs published.
    pub jobs: usize,
    /// Events stored for them.
    pub events: usize,
    /// Jobs with at least one terminal event.
    pub ended: usize,
    /// Terminal events (one per job when nothing is repeated).
    pub terminal: usize,
    /// Jobs whose terminal event is `succeeded`.
    pub succeeded: usize,
    /// Events whose (job, seq) was stored before.
    pub repeated: usize,
    /// Jobs whose seqs do not run 1, 2, 3, ... without a gap.
    pub gapped: usize,
}

impl Tally {
    /// The tally of `jobs` jobs that all succeeded, each event stored once.
    pub fn clean(jobs: usize, events: usize) -> Tally {
        Tally {
            jobs,
            events,
            ended: jobs,
            terminal: jobs,
            succeeded: jobs,
            repeated: 0,
            gapped: 0,
        }
    }

    fn of(jobs: &[String], stored: &BTreeMap<String, Vec<JobEvent>>) -> Tally {
        let mut tally = Tally {
            jobs: jobs.len(),
            ..Tally::default()
        };
        for job_id in jobs {
            let events = stored.get(job_id).map(Vec::as_slice).unwrap_or_default();
            tally.events += events.len();
            let terminal = events.iter().filter(|e| e.state.is_terminal()).count();
            tally.terminal += terminal;
            tally.ended += usize::from(terminal > 0);
            tally.succeeded += events
                .iter()
                .filter(|e| e.state == JobState::Succeeded)
                .count();
            let mut seen = HashSet::new();
            tally.repeated += events.iter().filter(|e| !seen.insert(e.seq)).count();
            let gap_free = (1..=seen.len() as u64).all(|seq| seen.contains(&seq));
            tally.gapped += usize::from(!gap_free);
        }
        tally
    }
}

/// Waits until each of `jobs` has a terminal event in the events stream, reads
/// them all once more a moment later (so that an event stored after the
/// terminal one counts), prints the tally and returns it.
pub async fn tally_when_ended(client: &Client, jobs: &[String], limit: Duration) -> Tally {
    until_ended(client, jobs, jobs.len(), limit).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = stored_events(client)
        .await
        .expect("the events stream reads");
    let tally = Tally::of(jobs, &stored);
    println!("{tally:?}");
    print_unclean(jobs, &stored);
    tally
}

/// Prints the story of each job that did not end `succeeded` with one event per
/// step: what a failing tally is made of.
fn print_unclean(jobs: &[String], stored: &BTreeMap<String, Vec<JobEvent>>) {
    for job_id in jobs {
        let events = stored.get(job_id).map(Vec::as_slice).unwrap_or_default();
        let clean = Tally::of(std::slice::from_ref(job_id), stored);
        if clean != Tally::clean(1, events.len()) {
            let story: Vec<String> = events
                .iter()
                .map(|e| format!("{} {:?} {:?} {:?}", e.seq, e.state, e.reason, e.message))
                .collect();
            println!("{job_id}: {story:?}");
        }
    }
}

/// Waits until at least `count` of `jobs` have a terminal event in the events
/// stream, for at most `limit`; returns the tally then.
pub async fn until_ended(client: &Client, jobs: &[String], count: usize, limit: Duration) -> Tally {
    let deadline = Instant::now() + limit;
    loop {
        let tally = match stored_events(client).await {
            Ok(stored) => Tally::of(jobs, &stored),
            Err(e) => {
                eprintln!("reading the events stream: {e}; trying again");
                Tally::default()
            }
        };
        if tally.ended >= count {
            return tally;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} jobs ended within {limit:?}: {tally:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every event the events stream holds, by job, in the order stored.
///
/// # Errors
/// When the stream cannot be read (the server away, a read that stalls).
pub async fn stored_events(
    client: &Client,
) -> Result<BTreeMap<String, Vec<JobEvent>>, Box<dyn std::error::Error + Send + Sync>> {
    use async_nats::jetstream::consumer;
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream(client.subjects().events_stream()).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut by_job: BTreeMap<String, Vec<JobEvent>> = BTreeMap::new();
    if last == 0 {
        return Ok(by_job);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: client.subjects().all("events"),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let read = async {
        while let Some(message) = messages.next().await {
            let message = message?;
            let event: JobEvent = serde_json::from_slice(&message.payload)?;
            by_job.entry(event.job_id.clone()).or_default().push(event);
            if message.info()?.stream_sequence >= last {
                break;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    tokio::time::timeout(Duration::from_secs(20), read).await??;
    Ok(by_job)
}
