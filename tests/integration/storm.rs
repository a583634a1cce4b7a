//! A storm of 10,000 launch requests through three workers on one nats-server:
//! every tenth published twice, one in a hundred malformed (each of the ways of
//! [`Malformed`] in turn). Every valid job runs once: its events reach a plain
//! core subscriber once each, with exactly one terminal event, `succeeded`, and
//! the stream holds them once each. Every malformed request is reported exactly
//! once, on `P.invalid` when it has no usable job id, else by its job's one
//! event, `error` with reason `InvalidRequest`; and each worker goes on taking
//! requests after the malformed ones it met.

use crate::common::chaos::{Tally, tally_when_ended};
use crate::common::malformed::Malformed;
use crate::common::system::{CoreEvents, System, received_so_far};
use flare_launcher::protocol::{InvalidRequest, JobEvent, LaunchRequest};
use flare_launcher::state::JobState;
use flare_launcher::worker::Worker;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Launch requests in the storm (not counting second copies).
const REQUESTS: usize = 10_000;
/// Every this many requests one is published twice, back to back.
const TWICE_EVERY: usize = 10;
/// Every this many requests one is malformed...
const MALFORMED_EVERY: usize = 100;
/// ...this one of each hundred, never one published twice.
const MALFORMED_AT: usize = 51;
/// Events of a job that runs `true`: `starting`, `running`, `succeeded`.
const EVENTS_PER_JOB: usize = 3;
/// Requests published at once, each waiting for the stream's answer.
const PUBLISHING_AT_ONCE: usize = 32;
/// How long the storm's jobs may take to end once all are published.
const STORM_TIMEOUT: Duration = Duration::from_secs(300);

/// One request of the storm.
struct Request {
    /// Its place in the storm.
    n: usize,
    job_id: String,
    malformed: Option<Malformed>,
}

impl Request {
    fn new(n: usize) -> Request {
        let malformed = (n % MALFORMED_EVERY == MALFORMED_AT)
            .then(|| Malformed::ALL[n / MALFORMED_EVERY % Malformed::ALL.len()]);
        Request {
            n,
            job_id: format!("storm-{n}"),
            malformed,
        }
    }

    fn payload(&self) -> String {
        match self.malformed {
            Some(malformed) => malformed.payload(&self.job_id),
            None => {
                let request = LaunchRequest::new(&self.job_id, vec!["true".into()]);
                serde_json::to_string(&request).unwrap()
            }
        }
    }

    fn copies(&self) -> usize {
        if self.n.is_multiple_of(TWICE_EVERY) {
            2
        } else {
            1
        }
    }

    /// Whether the request makes a job (whose events count).
    fn has_job(&self) -> bool {
        self.malformed.is_none_or(Malformed::identifiable)
    }
}

/// What one worker did in the storm.
#[derive(Debug, Default)]
struct Share {
    /// Valid jobs it ran.
    jobs: usize,
    /// Malformed requests with a job id it ended.
    malformed: usize,
    /// The place in the storm of the first of those.
    first_malformed: Option<usize>,
    /// The place in the storm of the last valid job it ran.
    last_job: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_duplicate_and_malformed_launches_runs_each_job_once_and_reports_each_bad_one()
{
    let began = Instant::now();
    let system = System::start_with(|c| c.worker_id = "storm-1".into()).await;
    let mut others = Vec::new();
    for n in [2, 3] {
        let mut config = system.config.clone();
        config.worker_id = format!("storm-{n}");
        config.data_dir = system.path(&format!("data-{n}"));
        others.push(Worker::start(config).await.expect("worker starts"));
    }
    let mut core = CoreEvents::subscribe(&system.client).await;
    let mut reports = system.invalid_reports().await;

    let requests: Vec<Request> = (0..REQUESTS).map(Request::new).collect();
    futures::stream::iter(&requests)
        .for_each_concurrent(PUBLISHING_AT_ONCE, |request| async {
            let payload = bytes::Bytes::from(request.payload());
            for _ in 0..request.copies() {
                // No Nats-Msg-Id: the stream keeps both copies of a duplicate.
                system
                    .client
                    .publish_launch(payload.clone(), None)
                    .await
                    .unwrap();
            }
        })
        .await;
    let published: usize = requests.iter().map(Request::copies).sum();
    let publishing = began.elapsed();
    let jobs: Vec<String> = requests
        .iter()
        .filter(|r| r.has_job())
        .map(|r| r.job_id.clone())
        .collect();
    core.until_terminal(&jobs, STORM_TIMEOUT).await;
    // Every delivery of every request is settled, so nothing more is published.
    system.wait_until_intake_idle().await;
    core.assert_each_once(&jobs).await;

    let mut shares: BTreeMap<String, Share> = BTreeMap::new();
    for request in requests.iter().filter(|r| r.has_job()) {
        let end = core.end(&request.job_id).unwrap();
        let share = shares.entry(end.worker.clone()).or_default();
        match request.malformed {
            None => {
                assert_eq!(end.state, JobState::Succeeded, "{end:?}");
                share.jobs += 1;
                share.last_job = request.n;
            }
            Some(malformed) => {
                assert_invalid_request(end, malformed);
                share.malformed += 1;
                share.first_malformed.get_or_insert(request.n);
            }
        }
    }
    let unidentifiable: Vec<&Request> = requests.iter().filter(|r| !r.has_job()).collect();
    let reported = received_so_far(&system.client, &mut reports).await;
    assert_reported_once_each(&unidentifiable, &reported);

    let valid = requests.iter().filter(|r| r.malformed.is_none()).count();
    let ended_invalid = jobs.len() - valid;
    let events = valid * EVENTS_PER_JOB + ended_invalid;
    let tally = tally_when_ended(&system.client, &jobs, STORM_TIMEOUT).await;
    assert_eq!(
        tally,
        Tally {
            succeeded: valid,
            ..Tally::clean(jobs.len(), events)
        }
    );
    println!(
        "storm: {REQUESTS} requests, {published} published ({} twice); {valid} valid jobs ran once each; \
         {} malformed: {} reported on the invalid subject, {ended_invalid} ended InvalidRequest; \
         published in {publishing:.1?}, all ended in {:.1?}",
        published - REQUESTS,
        unidentifiable.len() + ended_invalid,
        reported.len(),
        began.elapsed(),
    );
    for (worker, share) in &shares {
        println!("{worker}: {share:?}");
    }
    assert_eq!(shares.len(), 3, "every worker took requests: {shares:?}");
    for (worker, share) in &shares {
        let first_malformed = share
            .first_malformed
            .unwrap_or_else(|| panic!("{worker} met no malformed request: {share:?}"));
        assert!(
            share.last_job > first_malformed,
            "{worker} ran no job after its first malformed request: {share:?}"
        );
    }
    for worker in others {
        worker.shutdown().await;
    }
}

/// Asserts `end` is the one event of a job whose request was malformed this way.
fn assert_invalid_request(end: &JobEvent, malformed: Malformed) {
    assert_eq!(
        (end.seq, end.state, end.reason.as_deref()),
        (1, JobState::Error, Some("InvalidRequest")),
        "{malformed:?}: {end:?}"
    );
    let message = end.message.as_deref().unwrap_or_default();
    assert!(message.contains(malformed.why()), "{malformed:?}: {end:?}");
}

/// Asserts `reported` (messages on `P.invalid`) report each of `requests` once,
/// saying what is wrong with it, and nothing else.
fn assert_reported_once_each(requests: &[&Request], reported: &[async_nats::Message]) {
    let mut by_payload: HashMap<String, Vec<InvalidRequest>> = HashMap::new();
    for message in reported {
        let report: InvalidRequest = serde_json::from_slice(&message.payload).unwrap();
        by_payload
            .entry(report.payload.clone())
            .or_default()
            .push(report);
    }
    for request in requests {
        let malformed = request.malformed.unwrap();
        let reports = by_payload.remove(&request.payload()).unwrap_or_default();
        assert_eq!(reports.len(), 1, "reports of {malformed:?}: {reports:?}");
        assert!(
            reports[0].error.contains(malformed.why()),
            "{malformed:?}: {reports:?}"
        );
    }
    assert!(
        by_payload.is_empty(),
        "reports of nothing sent: {by_payload:?}"
    );
}
