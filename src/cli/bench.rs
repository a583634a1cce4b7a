//! `flare-launcher bench`: drives a running system with N process jobs at
//! concurrency C and prints latency (publish → `running`, publish → terminal
//! event), throughput and the worker's memory. A benchmark, not a test: the
//! figures depend on the machine.

use super::{CliError, client};
use crate::config::Settings;
use crate::protocol::LaunchRequest;
use crate::state::JobState;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Jobs to measure
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Jobs in flight at once
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Jobs run first and not measured
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Seconds a job may take before it counts as failed
    #[arg(long, default_value_t = 60)]
    job_timeout: u64,
    /// Worker process to read memory from [default: every local flare-launcher worker]
    #[arg(long)]
    worker_pid: Option<u32>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    /// Each job's argv [default: true]
    #[arg(last = true)]
    command: Vec<String>,
}

/// When each job was published, and when its milestones were seen.
struct Timeline {
    published: HashMap<String, Instant>,
    running: Histogram<u64>,
    terminal: Histogram<u64>,
    done: HashMap<String, JobState>,
}

impl Timeline {
    fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Timeline {
            published: HashMap::new(),
            running: histogram(),
            terminal: histogram(),
            done: HashMap::new(),
        }
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    jobs: usize,
    concurrency: usize,
    completed: usize,
    failed: usize,
    timed_out: usize,
    running_ms: Percentiles,
    terminal_ms: Percentiles,
    jobs_per_s: f64,
    workers: Vec<WorkerMemory>,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize)]
struct WorkerMemory {
    pid: u32,
    peak_rss_mib: f64,
    rss_mib: f64,
}

pub async fn run(settings: &Settings, args: BenchArgs) -> Result<i32, CliError> {
    if args.concurrency == 0 || args.jobs == 0 {
        return Err(CliError::Other(
            "--jobs and --concurrency must be at least 1".into(),
        ));
    }
    let client = client(settings).await?;
    client.ensure_streams().await?;
    let command = match args.command.is_empty() {
        true => vec!["true".to_owned()],
        false => args.command.clone(),
    };
    let run_id = random_suffix();
    if args.warmup > 0 {
        drive(
            &client,
            &args,
            &command,
            &format!("bench-{run_id}-warmup"),
            args.warmup,
        )
        .await?;
    }
    let began = Instant::now();
    let timeline = drive(
        &client,
        &args,
        &command,
        &format!("bench-{run_id}"),
        args.jobs,
    )
    .await?;
    let elapsed = began.elapsed();

    let completed = timeline.done.len();
    let report = Report {
        jobs: args.jobs,
        concurrency: args.concurrency,
        completed,
        failed: timeline
            .done
            .values()
            .filter(|s| **s != JobState::Succeeded)
            .count(),
        timed_out: args.jobs - completed,
        running_ms: Percentiles::of(&timeline.running),
        terminal_ms: Percentiles::of(&timeline.terminal),
        jobs_per_s: completed as f64 / elapsed.as_secs_f64(),
        workers: worker_pids(args.worker_pid)
            .into_iter()
            .filter_map(memory_of)
            .collect(),
    };
    print_report(&report);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports serialize")
        );
    }
    Ok(if report.failed + report.timed_out == 0 {
        0
    } else {
        1
    })
}

/// Publishes `count` jobs with at most `concurrency` in flight and records when
/// each reached `running` and its end.
async fn drive(
    client: &crate::client::Client,
    args: &BenchArgs,
    command: &[String],
    prefix: &str,
    count: usize,
) -> Result<Timeline, CliError> {
    let timeline = Arc::new(Mutex::new(Timeline::new()));
    let slots = Arc::new(Semaphore::new(args.concurrency));
    // Core NATS is the cheapest way to see every event. The subscription reaches
    // the server before the first launch on the same connection, so no event is
    // missed; events of other jobs are ignored.
    let mut events = client
        .nats()
        .subscribe(client.subjects().all("events"))
        .await
        .map_err(|e| CliError::Other(format!("cannot subscribe to events: {e}")))?;
    let listener = {
        let timeline = timeline.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let Ok(event) = serde_json::from_slice::<Milestone>(&message.payload) else {
                    continue;
                };
                let mut timeline = timeline.lock().unwrap_or_else(|p| p.into_inner());
                record(&mut timeline, &event, &slots);
                if timeline.done.len() == count {
                    break;
                }
            }
        })
    };
    // Each publish waits for the stream's ack on its own task, so the publisher
    // does not serialise the round trips.
    let mut publishes = tokio::task::JoinSet::new();
    for n in 0..count {
        let permit = slots
            .acquire()
            .await
            .map_err(|_| CliError::Other("the bench stopped".into()))?;
        permit.forget();
        let request = LaunchRequest::new(format!("{prefix}-{n}"), command.to_vec());
        timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .published
            .insert(request.job_id.clone(), Instant::now());
        let client = client.clone();
        publishes.spawn(async move { client.launch(&request).await });
        while let Some(published) = publishes.try_join_next() {
            published.map_err(|e| CliError::Other(format!("publishing task failed: {e}")))??;
        }
    }
    while let Some(published) = publishes.join_next().await {
        published.map_err(|e| CliError::Other(format!("publishing task failed: {e}")))??;
    }
    let limit = Duration::from_secs(args.job_timeout);
    if tokio::time::timeout(limit, listener).await.is_err() {
        tracing::warn!("some jobs did not end within {limit:?}");
    }
    let timeline = std::mem::replace(
        &mut *timeline.lock().unwrap_or_else(|p| p.into_inner()),
        Timeline::new(),
    );
    Ok(timeline)
}

/// The part of a [`crate::protocol::JobEvent`] the bench reads (decoding the rest would make the
/// bench, not the system, the bottleneck).
#[derive(serde::Deserialize)]
struct Milestone<'a> {
    job_id: &'a str,
    state: JobState,
}

/// Notes one event; a terminal event frees a slot.
fn record(timeline: &mut Timeline, event: &Milestone<'_>, slots: &Semaphore) {
    let Some(published) = timeline.published.get(event.job_id).copied() else {
        return;
    };
    let micros = published.elapsed().as_micros() as u64;
    if event.state == JobState::Running {
        let _ = timeline.running.record(micros);
    }
    if event.state.is_terminal() && !timeline.done.contains_key(event.job_id) {
        let _ = timeline.terminal.record(micros);
        timeline.done.insert(event.job_id.to_owned(), event.state);
        slots.add_permits(1);
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

/// The given worker, or every local process running `flare-launcher worker` or `dev`.
fn worker_pids(given: Option<u32>) -> Vec<u32> {
    if let Some(pid) = given {
        return vec![pid];
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"flare-launcher"))
                && args.iter().any(|a| *a == b"worker" || *a == b"dev")
        })
        .collect()
}

/// Peak and current resident memory of a process, from /proc.
fn memory_of(pid: u32) -> Option<WorkerMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
    };
    Some(WorkerMemory {
        pid,
        peak_rss_mib: kib("VmHWM:")? / 1024.0,
        rss_mib: kib("VmRSS:")? / 1024.0,
    })
}

fn print_report(report: &Report) {
    let line = |name: &str, p: &Percentiles| {
        println!(
            "{name:<24} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
            p.p50, p.p99, p.max
        );
    };
    println!(
        "jobs {} at concurrency {}: {} completed, {} failed, {} timed out",
        report.jobs, report.concurrency, report.completed, report.failed, report.timed_out
    );
    line("publish -> running", &report.running_ms);
    line("publish -> terminal", &report.terminal_ms);
    println!("throughput               {:.0} jobs/s", report.jobs_per_s);
    if report.workers.is_empty() {
        println!("worker RSS               unknown (pass --worker-pid)");
    }
    for worker in &report.workers {
        println!(
            "worker {:<17} RSS {:.1} MiB, peak {:.1} MiB",
            worker.pid, worker.rss_mib, worker.peak_rss_mib
        );
    }
}
