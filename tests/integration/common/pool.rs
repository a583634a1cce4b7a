//! The pool of workers as a test sees it: waiting until its live workers (their
//! leases) or a job's record get somewhere, and signalling a worker that runs as
//! a process of its own.

use super::system::System;
use flare_launcher::protocol::JobRecord;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Sends `signal` to the worker process `child`.
pub fn signal(child: &tokio::process::Child, signal: Signal) {
    let pid = child.id().expect("the worker runs") as i32;
    kill(Pid::from_raw(pid), signal).expect("the signal is sent");
}

/// Waits until `done` holds of the live pool's ids, for at most `limit`.
pub async fn pool_until(system: &System, limit: Duration, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let ids: Vec<String> = match system.client.workers().await {
            Ok(leases) => leases.into_iter().map(|lease| lease.worker).collect(),
            Err(_) => Vec::new(),
        };
        if done(&ids) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never got there: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the record of `job_id` satisfies `done`, for at most `limit`.
pub async fn record_until(
    system: &System,
    job_id: &str,
    limit: Duration,
    done: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(record) = system.client.status(job_id).await
            && done(&record)
        {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id}: the record never got there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
