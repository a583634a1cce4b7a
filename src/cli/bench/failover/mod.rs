//! `flare-launcher bench failover`: what a worker's start-up and an adoption
//! cost while the job-record bucket keeps a long history of ended jobs.
//!
//! Two rounds on the same server: the first with an empty bucket, the second
//! after `--records` ended records were written ([`fill`]), copies of the first
//! round's own ended records owned by the very workers the round starts and
//! kills. Each round measures:
//!
//! - start-up: `--starts` times, a Docker worker started in this process, from
//!   the call to the moment it is ready (lease held, consuming);
//! - adoption: a Docker worker started as a process of its own runs `--jobs`
//!   containers and is SIGKILLed; a surviving worker (in this process, its
//!   lease held a whole period already) takes them over. Timed from the kill to
//!   the moment the leases' bucket says the lease went, and to the moment every
//!   job's record names the survivor;
//! - the KV and JetStream API requests sent meanwhile, by what they ask of
//!   which stream ([`crate::nats::wiretap`]).
//!
//! The jobs are terminated at the end of each round, so their records end as a
//! real job's do.

mod fill;

use crate::cli::{CliError, client};
use crate::client::Client;
use crate::config::{Settings, WorkerConfig};
use crate::nats::connect;
use crate::nats::setup::Layout;
use crate::nats::wiretap::{Counts, Wiretap};
use crate::pool::members::Members;
use crate::protocol::{BackendKind, JobEvent, JobRecord, LaunchRequest, random_suffix};
use crate::report::error_chain;
use crate::state::JobState;
use crate::store::JobStore;
use crate::worker::Worker;
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The worker started and stopped for the start-up figures.
const STARTING: &str = "bench-start";
/// The worker that runs the jobs and is killed.
const KILLED: &str = "bench-killed";
/// The worker that adopts them.
const SURVIVOR: &str = "bench-survivor";
/// How long after a start-up or an adoption its requests are still counted
/// (the tasks a start-up leaves running, the index entries removed last).
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for the jobs to run, end, or be adopted (beyond the lease).
const PATIENCE: Duration = Duration::from_secs(120);
/// Ended records written between two counts of the requests.
const FILL_CHUNK: usize = 10_000;
/// How often the killed worker's lease is looked for while it starts.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Ended job records written before the second round
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Docker jobs the killed worker runs
    #[arg(long, default_value_t = 20)]
    jobs: usize,
    /// Start-ups measured in each round
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    starts: u32,
    /// Container image of the jobs (run as `sleep 3600`)
    #[arg(long)]
    image: String,
    /// Directory for the workers' data directories and the killed worker's log
    #[arg(long)]
    work_dir: PathBuf,
}

/// What the rounds share.
struct Bench<'a> {
    settings: &'a Settings,
    args: FailoverArgs,
    client: Client,
    store: JobStore,
    records: kv::Store,
    members: Members,
    wiretap: Wiretap,
    run_id: String,
}

/// Runs both rounds; exits 0 when every job was adopted.
pub async fn run(settings: &Settings, args: FailoverArgs) -> Result<i32, CliError> {
    let client = client(settings).await?;
    client.ensure_streams().await?;
    let js = async_nats::jetstream::new(client.nats().clone());
    let worker = settings.worker_config();
    let layout = Layout::new(
        js,
        client.subjects().clone(),
        &settings.pool,
        worker.ack_wait,
    );
    let prepared = layout
        .prepare()
        .await
        .map_err(|e| CliError::Other(format!("cannot prepare the buckets: {}", error_chain(&e))))?;
    let tap = connect::connect(&settings.nats, "flare-launcher bench wiretap", false).await?;
    let bench = Bench {
        settings,
        store: JobStore::new(prepared.bucket.clone(), layout).with_retention(worker.retention),
        records: prepared.bucket,
        members: Members::new(prepared.workers, client.nats().clone()),
        wiretap: Wiretap::start(&tap)
            .await
            .map_err(|e| CliError::Other(error_chain(&e)))?,
        client,
        args,
        run_id: random_suffix(6),
    };
    println!(
        "failover bench: lease {} s, {} Docker jobs ({} sleep 3600), {} start-ups a round",
        worker.lease.as_secs(),
        bench.args.jobs,
        bench.args.image,
        bench.args.starts
    );
    let ended = bench.round(1).await?;
    let mut templates = Vec::new();
    for job in &ended {
        templates.extend(
            bench.store.get(job).await.map_err(|e| {
                CliError::Other(format!("cannot read job {job}: {}", error_chain(&e)))
            })?,
        );
    }
    let started = Instant::now();
    let mut written = 0;
    while written < bench.args.records {
        let chunk = written..bench.args.records.min(written + FILL_CHUNK);
        written = chunk.end;
        fill::ended_records(
            &bench.store,
            &templates,
            &[STARTING, KILLED, SURVIVOR],
            chunk,
            &format!("bench-{}-ended", bench.run_id),
        )
        .await?;
        // Their copies, taken before they overflow the wiretap's queue.
        bench.requests().await?;
    }
    println!(
        "wrote {} ended records in {:.1} s",
        bench.args.records,
        started.elapsed().as_secs_f64()
    );
    bench.round(2).await?;
    Ok(0)
}

impl Bench<'_> {
    /// Measures one round; returns its jobs, ended.
    async fn round(&self, round: u32) -> Result<Vec<String>, CliError> {
        let mut stream = self.records.stream.clone();
        let records = stream.info().await.map_err(|e| {
            CliError::Other(format!(
                "cannot read the record bucket: {}",
                error_chain(&e)
            ))
        })?;
        println!(
            "== round {round}: {} messages in the job-record bucket",
            records.state.messages
        );
        self.start_ups().await?;
        self.adoption(round).await
    }

    /// The requests sent since the last call.
    async fn requests(&self) -> Result<Counts, CliError> {
        self.wiretap
            .take()
            .await
            .map_err(|e| CliError::Other(error_chain(&e)))
    }

    /// A Docker worker of this bench's pool, with the id `id`.
    fn worker_config(&self, id: &str) -> WorkerConfig {
        let mut config = self.settings.worker_config();
        config.worker_id = id.to_owned();
        config.keep_worker_id = false;
        config.backend = BackendKind::Docker;
        config.backends = vec![BackendKind::Docker];
        config.data_dir = self.args.work_dir.join(id);
        config.max_jobs = config.max_jobs.max(self.args.jobs);
        config
    }

    /// Starts and stops a worker `--starts` times, timing each start.
    async fn start_ups(&self) -> Result<(), CliError> {
        let mut times = Vec::new();
        let mut requests = Counts::default();
        for _ in 0..self.args.starts {
            self.requests().await?;
            let started = Instant::now();
            let worker = Worker::start(self.worker_config(STARTING)).await?;
            times.push(started.elapsed());
            tokio::time::sleep(SETTLE).await;
            requests.add(&self.requests().await?);
            worker.shutdown().await;
        }
        times.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "start-up to ready: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} starts)",
            ms(&times[times.len() / 2]),
            ms(&times[0]),
            ms(&times[times.len() - 1]),
            times.len()
        );
        print!(
            "  requests per start, until {} s after ready:\n{}",
            SETTLE.as_secs(),
            requests.text(times.len())
        );
        Ok(())
    }

    /// Kills a worker running the jobs and times their adoption; returns the
    /// jobs, ended.
    async fn adoption(&self, round: u32) -> Result<Vec<String>, CliError> {
        let mut events = self
            .client
            .nats()
            .subscribe(self.client.subjects().all("events"))
            .await
            .map_err(|e| CliError::Other(format!("cannot subscribe to events: {e}")))?;
        let mut killed = self.spawn_killed(round).await?;
        let jobs: Vec<String> = (0..self.args.jobs)
            .map(|n| format!("bench-{}-r{round}-{n}", self.run_id))
            .collect();
        let mut request = LaunchRequest::new("", vec!["sleep".into(), "3600".into()]);
        request.backend = Some(BackendKind::Docker);
        request.image = Some(self.args.image.clone());
        for job in &jobs {
            request.job_id = job.clone();
            self.client.launch(&request).await?;
        }
        await_events(
            &mut events,
            &jobs,
            "running on the killed worker",
            |event| event.worker == KILLED && event.state == JobState::Running,
        )
        .await?;
        let survivor = Worker::start(self.worker_config(SURVIVOR)).await?;
        // A worker adopts only once its own lease has been held a whole period.
        let lease = self.settings.worker_config().lease;
        tokio::time::sleep(lease + lease / 2).await;

        let adopted = self.kill_and_watch(&mut killed, &jobs).await;
        let requests = self.requests().await?;
        let outcome = adopted.map(|times| {
            print!(
                "{}  requests per adopted job, from the kill until {} s after the last take-over:\n{}",
                times.text(lease),
                SETTLE.as_secs(),
                requests.text(jobs.len())
            );
        });
        for job in &jobs {
            if let Err(e) = self.client.terminate(job, Some(1)).await {
                eprintln!("cannot terminate job {job}: {}", error_chain(&e));
            }
        }
        let ended = await_events(&mut events, &jobs, "ended", |event| {
            event.state.is_terminal()
        })
        .await;
        survivor.shutdown().await;
        outcome?;
        ended?;
        Ok(jobs)
    }

    /// Starts the worker to kill, as a process of its own, and waits for its
    /// lease.
    async fn spawn_killed(&self, round: u32) -> Result<Child, CliError> {
        let io = |e: std::io::Error| CliError::Other(format!("cannot start a worker: {e}"));
        let log = std::fs::File::create(
            self.args
                .work_dir
                .join(format!("{KILLED}-round-{round}.log")),
        )
        .map_err(io)?;
        let config = self.worker_config(KILLED);
        let mut child = Command::new(std::env::current_exe().map_err(io)?)
            .arg("--nats-url")
            .arg(self.settings.nats.urls().join(","))
            .args(["worker", "--backend", "docker", "--worker-id", KILLED])
            .args(["--subject-prefix", &self.settings.subject_prefix])
            .args(["--pool", &self.settings.pool])
            .args(["--max-jobs", &config.max_jobs.to_string()])
            .args(["--lease-s", &config.lease.as_secs().to_string()])
            .arg("--data-dir")
            .arg(&config.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CliError::Other(format!(
                    "the worker to kill exited at start-up ({status}); see its log in {}",
                    self.args.work_dir.display()
                )));
            }
            if self.members.is_live(KILLED).await.unwrap_or(false) {
                return Ok(child);
            }
            if Instant::now() > deadline {
                return Err(CliError::Other("the worker to kill took no lease".into()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs `killed` and waits until its lease went and every one of
    /// `jobs`' records names the survivor, and a little longer.
    async fn kill_and_watch(
        &self,
        killed: &mut Child,
        jobs: &[String],
    ) -> Result<Adopted, CliError> {
        let watch_failed =
            |e: &dyn std::fmt::Display| CliError::Other(format!("cannot watch the buckets: {e}"));
        let mut departures = Box::pin(
            self.members
                .departures()
                .await
                .map_err(|e| watch_failed(&e))?,
        );
        let mut records = self
            .records
            .watch_all()
            .await
            .map_err(|e| watch_failed(&e))?;
        let jobs: HashSet<&str> = jobs.iter().map(String::as_str).collect();
        self.requests().await?;
        killed
            .start_kill()
            .map_err(|e| CliError::Other(format!("cannot kill the worker: {e}")))?;
        let at = Instant::now();
        let mut times = Adopted {
            lease_gone: None,
            taken: HashMap::new(),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE + PATIENCE;
        while times.lease_gone.is_none() || times.taken.len() < jobs.len() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CliError::Other(format!(
                        "{} of {} jobs taken over, lease gone: {}",
                        times.taken.len(), jobs.len(), times.lease_gone.is_some()
                    )));
                }
                Some(departed) = departures.next() => {
                    if departed.worker == KILLED {
                        times.lease_gone.get_or_insert(at.elapsed());
                    }
                }
                Some(entry) = records.next() => {
                    let Ok(entry) = entry else { continue };
                    let taken = entry.operation == kv::Operation::Put
                        && jobs.contains(entry.key.as_str())
                        && serde_json::from_slice::<JobRecord>(&entry.value)
                            .is_ok_and(|record| record.worker == SURVIVOR);
                    if taken {
                        times.taken.entry(entry.key).or_insert(at.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(SETTLE).await;
        let _ = killed.wait().await;
        Ok(times)
    }
}

/// When, after the kill, the lease went and each job was taken over.
struct Adopted {
    lease_gone: Option<Duration>,
    taken: HashMap<String, Duration>,
}

impl Adopted {
    /// The figures, given the lease's TTL.
    fn text(&self, lease: Duration) -> String {
        let gone = self.lease_gone.unwrap_or_default();
        let first = self.taken.values().min().copied().unwrap_or_default();
        let last = self.taken.values().max().copied().unwrap_or_default();
        let s = Duration::as_secs_f64;
        format!(
            "adoption of {} jobs of a SIGKILLed worker:\n  \
             kill → lease gone: {:.2} s\n  \
             lease gone → first record names the survivor: {:.3} s, every record: {:.3} s\n  \
             kill → every record names the survivor: {:.2} s, minus the lease TTL: {:+.2} s\n",
            self.taken.len(),
            s(&gone),
            s(&first.saturating_sub(gone)),
            s(&last.saturating_sub(gone)),
            s(&last),
            s(&last) - s(&lease),
        )
    }
}

/// Waits until each of `jobs` has sent an event for which `wanted` holds.
///
/// # Errors
/// A [`CliError`] when some have not within [`PATIENCE`].
async fn await_events(
    events: &mut async_nats::Subscriber,
    jobs: &[String],
    what: &str,
    wanted: impl Fn(&JobEvent) -> bool,
) -> Result<(), CliError> {
    let mut waiting: HashSet<&str> = jobs.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !waiting.is_empty() {
        let message = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => {
                return Err(CliError::Other(format!(
                    "{} of {} jobs not {what} within {} s",
                    waiting.len(),
                    jobs.len(),
                    PATIENCE.as_secs()
                )));
            }
        };
        if let Ok(event) = serde_json::from_slice::<JobEvent>(&message.payload)
            && wanted(&event)
        {
            waiting.remove(event.job_id.as_str());
        }
    }
    Ok(())
}
