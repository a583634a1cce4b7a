//! `flare-launcher bench`: drives a running system (workers on the same NATS)
//! with many process jobs and reports latency, throughput, and the worker's memory
//! and CPU time.
//!
//! One core subscription to `P.events.>`, made before anything is published,
//! feeds a map from job id to the moment its launch was published; `C` permits
//! bound the jobs in flight, and a permit comes back when its job's terminal event
//! arrives or its timeout runs out. Latencies are publish → `running` and
//! publish → terminal event; throughput is measured jobs over the wall time of the
//! measured phase, which follows a warm-up phase that is not counted.
//!
//! With `--backend docker --image IMAGE` the jobs are containers, the engine's
//! own floor ([`engine_floor`]) is measured in the same run, and so is the time
//! from a container's exit to its job's terminal event ([`container_exits`]).
//! With `--exit-stamps DIR` the jobs write when they end ([`exit_stamps`]), for
//! the latency from a workload's exit to its terminal event on any backend; with
//! `--kube-sim-kubeconfig` the API requests of the measured jobs are read from
//! kube-sim's counter ([`api_requests`]).
//!
//! `bench failover` measures a worker's start-up and an adoption instead
//! ([`failover`]).

mod api_requests;
mod container_exits;
mod engine_floor;
mod exit_stamps;
mod failover;

use super::{CliError, client};
use crate::client::Client;
use crate::config::Settings;
use crate::protocol::{BackendKind, LaunchRequest};
use crate::report::error_chain;
use crate::state::JobState;
use engine_floor::{Floor, Measured};
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Highest latency the histograms hold, in microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How often timed-out jobs are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// How often the workers' RSS is sampled during the run.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes per MiB.
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another measurement than the jobs'
    #[command(subcommand)]
    measurement: Option<Measurement>,
    /// Jobs measured
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Jobs in flight at once (1: one job at a time, for plain latency)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Jobs run first and not counted
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Seconds a job may take from publish to its terminal event before it counts as failed
    #[arg(long = "timeout-s", default_value_t = 60)]
    timeout_s: u64,
    /// The worker's pid, for its memory [default: every flare-launcher worker or dev process found in /proc]
    #[arg(long)]
    worker_pid: Option<u32>,
    /// Also print the result as one JSON object on stdout (the text then goes to stderr)
    #[arg(long)]
    json: bool,
    /// Backend the jobs ask for [default: the worker's]
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Container image of the jobs (docker and k8s)
    #[arg(long)]
    image: Option<String>,
    /// Directory each job writes its exit time to, for the exit → terminal event latency; the jobs must share this host's file system and clock (process jobs, kube-sim's pods)
    #[arg(long)]
    exit_stamps: Option<std::path::PathBuf>,
    /// Admin kubeconfig of the kube-sim the workers use: the run reports the Kubernetes API requests of the measured jobs
    #[arg(long)]
    kube_sim_kubeconfig: Option<std::path::PathBuf>,
    /// Raw containers of the engine floor measured at each concurrency (docker only; 0: none)
    #[arg(long, default_value_t = 50)]
    floor_containers: usize,
    /// Each job's argv
    #[arg(last = true, default_value = "true")]
    command: Vec<String>,
}

/// The measurements besides the jobs' own.
#[derive(Debug, clap::Subcommand)]
enum Measurement {
    /// Time a worker's start-up and the adoption of a killed worker's Docker jobs, with an empty job-record bucket and then with many ended records
    Failover(failover::FailoverArgs),
}

/// A job published and not yet finished.
struct InFlight {
    published: Instant,
    /// Returned to the semaphore when the job finishes.
    _permit: OwnedSemaphorePermit,
}

/// What one phase measured.
struct Stats {
    to_running: Histogram<u64>,
    to_terminal: Histogram<u64>,
    /// Container exit → terminal event (docker only).
    exit_to_terminal: Histogram<u64>,
    completed: u64,
    succeeded: u64,
    timeouts: u64,
    publish_errors: u64,
}

impl Stats {
    fn new() -> Result<Stats, CliError> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| CliError::Other(format!("cannot create a histogram: {e}")))
        };
        Ok(Stats {
            to_running: histogram()?,
            to_terminal: histogram()?,
            exit_to_terminal: histogram()?,
            completed: 0,
            succeeded: 0,
            timeouts: 0,
            publish_errors: 0,
        })
    }
}

/// What the event reader, the sweeper and the publishers share.
struct Tracker {
    in_flight: HashMap<String, InFlight>,
    stats: Stats,
    unreadable_events: u64,
    /// Container exits and terminal events to match (docker only).
    exits: Option<container_exits::ExitMatcher>,
    /// When each terminal event arrived (nanoseconds since the epoch), while
    /// exit stamps are read.
    terminal_at: Option<HashMap<String, u128>>,
}

type Shared = Arc<Mutex<Tracker>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Tracker> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The two fields of an event the bench reads.
#[derive(serde::Deserialize)]
struct EventHead {
    job_id: String,
    state: JobState,
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Records one event of a job this run is waiting for; events of other jobs,
/// and late ones of jobs already counted, are ignored.
fn on_event(shared: &Shared, payload: &[u8]) {
    let mut tracker = lock(shared);
    let Ok(event) = serde_json::from_slice::<EventHead>(payload) else {
        tracker.unreadable_events += 1;
        return;
    };
    let Some(job) = tracker.in_flight.get(&event.job_id) else {
        return;
    };
    let elapsed = micros(job.published.elapsed());
    if event.state == JobState::Running {
        tracker.stats.to_running.saturating_record(elapsed);
    } else if event.state.is_terminal() {
        tracker.in_flight.remove(&event.job_id);
        let exit_latency = tracker
            .exits
            .as_mut()
            .and_then(|exits| exits.terminal(&event.job_id, SystemTime::now()));
        if let Some(terminal_at) = &mut tracker.terminal_at {
            terminal_at.insert(event.job_id.clone(), exit_stamps::now_nanos());
        }
        let stats = &mut tracker.stats;
        if let Some(latency) = exit_latency {
            stats.exit_to_terminal.saturating_record(micros(latency));
        }
        stats.to_terminal.saturating_record(elapsed);
        stats.completed += 1;
        if event.state == JobState::Succeeded {
            stats.succeeded += 1;
        }
    }
}

/// Drops the jobs that have waited longer than `timeout`, counting them.
fn sweep(shared: &Shared, timeout: Duration) {
    let mut tracker = lock(shared);
    let before = tracker.in_flight.len();
    tracker
        .in_flight
        .retain(|_, job| job.published.elapsed() < timeout);
    let expired = before - tracker.in_flight.len();
    tracker.stats.timeouts += expired as u64;
}

/// One phase: `count` jobs, at most `concurrency` in flight; returns its stats and
/// wall time once every job has finished or timed out.
async fn run_phase(
    client: &Client,
    shared: &Shared,
    ids: impl Iterator<Item = String>,
    template: &LaunchRequest,
    concurrency: u32,
    stamps: Option<&std::path::Path>,
) -> Result<(Stats, Duration), CliError> {
    lock(shared).stats = Stats::new()?;
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let started = Instant::now();
    for job_id in ids {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CliError::Other(format!("bench semaphore: {e}")))?;
        let mut request = LaunchRequest {
            job_id: job_id.clone(),
            ..template.clone()
        };
        if let Some(dir) = stamps {
            let file = exit_stamps::stamp_file(dir, &job_id);
            request.env.insert(
                exit_stamps::STAMP_VARIABLE.into(),
                file.display().to_string(),
            );
        }
        lock(shared).in_flight.insert(
            job_id.clone(),
            InFlight {
                published: Instant::now(),
                _permit: permit,
            },
        );
        let (client, shared) = (client.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = client.launch(&request).await {
                tracing::warn!(%job_id, error = %error_chain(&e), "launch request not stored");
                let mut tracker = lock(&shared);
                if tracker.in_flight.remove(&job_id).is_some() {
                    tracker.stats.publish_errors += 1;
                }
            }
        });
    }
    // Every permit back: every job has finished, failed to publish or timed out.
    let _all = permits
        .acquire_many(concurrency)
        .await
        .map_err(|e| CliError::Other(format!("bench semaphore: {e}")))?;
    let wall = started.elapsed();
    let stats = std::mem::replace(&mut lock(shared).stats, Stats::new()?);
    Ok((stats, wall))
}

/// A worker process found for the memory and CPU report.
struct WorkerUsage {
    pid: u32,
    /// `VmHWM`, bytes.
    peak: Option<u64>,
    /// `VmRSS` at the end, bytes.
    current: Option<u64>,
    /// Highest `VmRSS` sampled during the measured phase, bytes.
    max_sampled: u64,
    /// CPU time (user and system) spent during the measured phase.
    cpu: Option<Duration>,
}

/// CPU time (user and system) a process has used so far, from `/proc/PID/stat`.
fn proc_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state,
    // field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// A field of `/proc/PID/status` given in kB, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Every `flare-launcher` process but this one whose arguments include `worker` or `dev`.
fn find_workers() -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
            let is_launcher = args.next().is_some_and(|argv0| {
                argv0.rsplit(|&b| b == b'/').next() == Some(b"flare-launcher")
            });
            is_launcher && args.any(|a| a == b"worker" || a == b"dev")
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Samples the workers' RSS until the returned task is aborted, keeping the maxima.
fn sample_rss(pids: &[u32]) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<u64>>>) {
    let maxima = Arc::new(Mutex::new(vec![0; pids.len()]));
    let (pids, out) = (pids.to_vec(), maxima.clone());
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RSS_SAMPLE_INTERVAL);
        loop {
            tick.tick().await;
            let mut maxima = out.lock().unwrap_or_else(PoisonError::into_inner);
            for (max, &pid) in maxima.iter_mut().zip(&pids) {
                *max = (*max).max(proc_status_bytes(pid, "VmRSS").unwrap_or(0));
            }
        }
    });
    (handle, maxima)
}

fn millis(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mib(bytes: Option<u64>) -> serde_json::Value {
    bytes.map_or(serde_json::Value::Null, |b| {
        serde_json::json!(round3(b as f64 / MIB))
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50_ms": millis(h.value_at_quantile(0.5)),
        "p99_ms": millis(h.value_at_quantile(0.99)),
        "max_ms": millis(h.max()),
    })
}

fn latency_text(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
        millis(h.value_at_quantile(0.5)),
        millis(h.value_at_quantile(0.99)),
        millis(h.max()),
        h.len()
    )
}

/// The engine's floor for a Docker bench, measured `measured` (none for the
/// other backends, or with `--floor-containers 0`).
///
/// # Errors
/// A [`CliError`] when the engine cannot be reached or refuses a container.
async fn engine_floor(args: &BenchArgs, measured: Measured) -> Result<Vec<Floor>, CliError> {
    match (&args.image, args.backend) {
        (Some(image), Some(BackendKind::Docker)) if args.floor_containers > 0 => {
            engine_floor::measure(
                image,
                &args.command,
                args.floor_containers,
                args.concurrency,
                measured,
            )
            .await
        }
        _ => Ok(Vec::new()),
    }
}

/// Runs the bench; exits 0 when every measured job succeeded, 1 otherwise.
pub async fn run(settings: &Settings, args: BenchArgs) -> Result<i32, CliError> {
    if let Some(Measurement::Failover(failover)) = args.measurement {
        return failover::run(settings, failover).await;
    }
    let client = client(settings).await?;
    client.ensure_streams().await?;
    let mut events = client
        .nats()
        .subscribe(client.subjects().all("events"))
        .await
        .map_err(|e| CliError::Other(format!("cannot subscribe to events: {e}")))?;
    // The server has the subscription before the first launch is published.
    client
        .nats()
        .flush()
        .await
        .map_err(|e| CliError::Other(format!("cannot reach NATS: {e}")))?;

    let shared: Shared = Arc::new(Mutex::new(Tracker {
        in_flight: HashMap::new(),
        stats: Stats::new()?,
        unreadable_events: 0,
        exits: None,
        terminal_at: None,
    }));
    let exit_watch = match args.backend {
        Some(BackendKind::Docker) => {
            lock(&shared).exits = Some(container_exits::ExitMatcher::default());
            let shared = shared.clone();
            Some(
                container_exits::watch(move |job_id, at| {
                    let mut tracker = lock(&shared);
                    let latency = tracker
                        .exits
                        .as_mut()
                        .and_then(|exits| exits.exited(job_id, at));
                    if let Some(latency) = latency {
                        tracker
                            .stats
                            .exit_to_terminal
                            .saturating_record(micros(latency));
                    }
                })
                .await?,
            )
        }
        _ => None,
    };
    let reader = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                on_event(&shared, &message.payload);
            }
        })
    };
    let sweeper = {
        let (shared, timeout) = (shared.clone(), Duration::from_secs(args.timeout_s));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                sweep(&shared, timeout);
            }
        })
    };

    let command = match &args.exit_stamps {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
            exit_stamps::stamping(&args.command)
        }
        None => args.command.clone(),
    };
    let kube_sim = match &args.kube_sim_kubeconfig {
        Some(path) => Some(api_requests::client(path).await?),
        None => None,
    };
    let mut template = LaunchRequest::new("bench", command);
    template.backend = args.backend;
    template.image = args.image.clone();
    let run_id = crate::protocol::random_suffix(8);
    let workers = match args.worker_pid {
        Some(pid) => vec![pid],
        None => find_workers(),
    };
    let outcome = async {
        if args.warmup > 0 {
            let ids = (0..args.warmup).map(|n| format!("bench-{run_id}-w{n}"));
            let (warmup, _) = run_phase(&client, &shared, ids, &template, args.concurrency, args.exit_stamps.as_deref()).await?;
            if warmup.completed == 0 {
                return Err(CliError::Other(format!(
                    "none of the {} warm-up jobs finished within {} s: is a worker serving pool {:?} with prefix {:?}? \
                     (requests not taken stay queued for the next worker)",
                    args.warmup, args.timeout_s, settings.pool, settings.subject_prefix
                )));
            }
        }
        let floors_before = engine_floor(&args, Measured::BeforeJobs).await?;
        let (sampler, maxima) = sample_rss(&workers);
        let cpu_before: Vec<Option<Duration>> = workers.iter().map(|&pid| proc_cpu_time(pid)).collect();
        if let Some(kube_sim) = &kube_sim {
            api_requests::settled(kube_sim, true).await?;
        }
        if args.exit_stamps.is_some() {
            lock(&shared).terminal_at = Some(HashMap::new());
        }
        let ids = (0..args.jobs).map(|n| format!("bench-{run_id}-{n}"));
        let measured = run_phase(&client, &shared, ids, &template, args.concurrency, args.exit_stamps.as_deref()).await;
        sampler.abort();
        let maxima = maxima.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Ok((measured?, maxima, cpu_before, floors_before))
    }
    .await;
    reader.abort();
    sweeper.abort();
    if let Some(exit_watch) = exit_watch {
        exit_watch.abort();
    }
    let ((stats, wall), maxima, cpu_before, mut floors) = outcome?;
    floors.extend(engine_floor(&args, Measured::AfterJobs).await?);

    let usage: Vec<WorkerUsage> = workers
        .iter()
        .zip(maxima)
        .zip(cpu_before)
        .map(|((&pid, max_sampled), before)| WorkerUsage {
            pid,
            peak: proc_status_bytes(pid, "VmHWM"),
            current: proc_status_bytes(pid, "VmRSS"),
            max_sampled,
            cpu: proc_cpu_time(pid)
                .zip(before)
                .map(|(after, before)| after.saturating_sub(before)),
        })
        .collect();
    let jobs = args.jobs as u64;
    let failures = jobs - stats.succeeded;
    let per_second = match wall.as_secs_f64() {
        s if s > 0.0 => jobs as f64 / s,
        _ => 0.0,
    };
    let unreadable = lock(&shared).unreadable_events;
    let mut exit_to_terminal = Stats::new()?.to_terminal;
    let terminal_at = lock(&shared).terminal_at.take();
    let unstamped = match (&args.exit_stamps, &terminal_at) {
        (Some(dir), Some(terminal_at)) => {
            exit_stamps::record(dir, terminal_at, &mut exit_to_terminal)
        }
        _ => 0,
    };
    let api = match &kube_sim {
        Some(kube_sim) => Some(api_requests::settled(kube_sim, false).await?),
        None => None,
    };
    let per_job_requests: u64 = api
        .iter()
        .flatten()
        .filter(|(key, _)| !api_requests::is_shared(key))
        .map(|(_, count)| count)
        .sum();
    let requests_per_job = per_job_requests as f64 / (args.jobs.max(1) as f64);

    let mut text = format!(
        "bench: {jobs} jobs (after {} warm-up), concurrency {}, command {:?}\n\
         completed: {} (succeeded {}), failures: {failures} (timeouts {}, publish errors {})\n\
         publish → running:  {}\n\
         publish → terminal: {}\n\
         throughput: {per_second:.1} jobs/s ({jobs} jobs in {:.3} s)\n",
        args.warmup,
        args.concurrency,
        args.command,
        stats.completed,
        stats.succeeded,
        stats.timeouts,
        stats.publish_errors,
        latency_text(&stats.to_running),
        latency_text(&stats.to_terminal),
        wall.as_secs_f64(),
    );
    if !stats.exit_to_terminal.is_empty() {
        text.push_str(&format!(
            "container exit → terminal: {}\n",
            latency_text(&stats.exit_to_terminal)
        ));
    }
    if unreadable > 0 {
        text.push_str(&format!("unreadable events: {unreadable}\n"));
    }
    if args.exit_stamps.is_some() {
        text.push_str(&format!(
            "exit → terminal:    {} ({unstamped} jobs without a stamp)\n",
            latency_text(&exit_to_terminal)
        ));
    }
    if let Some(api) = &api {
        text.push_str(&format!(
            "API requests: {requests_per_job:.2} per job beside the shared watch; {api:?}\n"
        ));
    }
    for floor in &floors {
        text.push_str(&format!(
            "engine floor at concurrency {}, {} the jobs: create + start {}; {:.1} containers/s (create, start, wait, remove)\n",
            floor.concurrency,
            floor.measured.as_str(),
            latency_text(&floor.create_start),
            floor.per_second,
        ));
    }
    if usage.is_empty() {
        text.push_str("worker RSS and CPU: unknown (pass --worker-pid)\n");
    }
    let cpu_ms_per_job = |cpu: Option<Duration>| {
        cpu.filter(|_| jobs > 0)
            .map(|cpu| cpu.as_secs_f64() * 1000.0 / jobs as f64)
    };
    for m in &usage {
        let show =
            |b: Option<u64>| b.map_or("?".to_owned(), |b| format!("{:.1} MiB", b as f64 / MIB));
        let cpu = match (m.cpu, cpu_ms_per_job(m.cpu)) {
            (Some(cpu), Some(per_job)) => format!(
                "{per_job:.3} ms per job ({:.0} % of one core)",
                100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON)
            ),
            _ => "?".to_owned(),
        };
        text.push_str(&format!(
            "worker {}: peak RSS {}, current RSS {}, highest RSS sampled during the run {}; CPU {cpu}\n",
            m.pid,
            show(m.peak),
            show(m.current),
            show(Some(m.max_sampled)),
        ));
    }
    if args.json {
        eprint!("{text}");
        let result = serde_json::json!({
            "jobs": jobs,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "command": args.command,
            "backend": args.backend,
            "image": args.image,
            "engine_floor": floors.iter().map(|floor| serde_json::json!({
                "measured": floor.measured.as_str(),
                "concurrency": floor.concurrency,
                "create_start": latency_json(&floor.create_start),
                "containers_per_s": round3(floor.per_second),
            })).collect::<Vec<_>>(),
            "completed": stats.completed,
            "succeeded": stats.succeeded,
            "failures": failures,
            "timeouts": stats.timeouts,
            "publish_errors": stats.publish_errors,
            "to_running": latency_json(&stats.to_running),
            "to_terminal": latency_json(&stats.to_terminal),
            "container_exit_to_terminal": latency_json(&stats.exit_to_terminal),
            "exit_to_terminal": args.exit_stamps.as_ref().map(|_| latency_json(&exit_to_terminal)),
            "api_requests": api,
            "api_requests_per_job": api.as_ref().map(|_| round3(requests_per_job)),
            "wall_s": round3(wall.as_secs_f64()),
            "jobs_per_s": round3(per_second),
            "workers": usage.iter().map(|m| serde_json::json!({
                "pid": m.pid,
                "peak_rss_mib": mib(m.peak),
                "rss_mib": mib(m.current),
                "max_sampled_rss_mib": mib(Some(m.max_sampled)),
                "cpu_ms_per_job": cpu_ms_per_job(m.cpu).map(round3),
            })).collect::<Vec<_>>(),
        });
        println!("{result}");
    } else {
        print!("{text}");
    }
    Ok(if failures == 0 { 0 } else { 1 })
}
