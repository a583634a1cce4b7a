//! Exit → terminal event latency: each job writes the time it ends (nanoseconds
//! since the epoch) to a file of its own, named by the variable
//! `BENCH_EXIT_STAMP`, and the bench notes when each terminal event
//! arrives; the difference is what the worker and its backend add after the
//! workload is gone. The jobs must share the bench's file system and clock, as
//! the pods of kube-sim and process jobs on the same host do.

use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The variable naming a job's stamp file.
pub const STAMP_VARIABLE: &str = "BENCH_EXIT_STAMP";

/// `command` wrapped so that it writes its end time before it exits with its own
/// code.
pub fn stamping(command: &[String]) -> Vec<String> {
    let script = format!("\"$@\"; code=$?; date +%s%N > \"${STAMP_VARIABLE}\"; exit $code");
    ["sh", "-c", &script, "sh"]
        .into_iter()
        .map(str::to_owned)
        .chain(command.iter().cloned())
        .collect()
}

/// The stamp file of `job_id` in `dir`.
pub fn stamp_file(dir: &Path, job_id: &str) -> PathBuf {
    dir.join(format!("{job_id}.exit"))
}

/// Nanoseconds since the epoch now.
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
}

/// The latencies from each job's stamp to its terminal event, in microseconds,
/// recorded into `histogram`; returns how many jobs had no readable stamp.
pub fn record(
    dir: &Path,
    terminal_at: &HashMap<String, u128>,
    histogram: &mut Histogram<u64>,
) -> u64 {
    let mut missing = 0;
    for (job_id, at) in terminal_at {
        let stamp = std::fs::read_to_string(stamp_file(dir, job_id))
            .ok()
            .and_then(|text| text.trim().parse::<u128>().ok());
        match stamp {
            Some(exited) => {
                let micros = at.saturating_sub(exited) / 1000;
                histogram.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
            }
            None => missing += 1,
        }
    }
    missing
}
