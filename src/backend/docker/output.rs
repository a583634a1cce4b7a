//! A container's output appended to its job's log file as it comes: a copier
//! follows the engine's log of the container from the moment the worker sees
//! it run (launched, found again, adopted) until it ends, so that readers of
//! the job's output get it live from the log file, as for a process. Every copy
//! starts with as many bytes of the engine's log skipped as the file holds
//! already: the engine replays a container's log the same each time, so a copy
//! that takes over from another (after a restart of the worker, or once the
//! container ended) appends exactly what is missing, and an offset into the log
//! means the same byte on whichever worker follows the container.

use super::engine::Engine;
use crate::backend::container::job_output::JobLog;
use crate::report::error_chain;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long the end of a container waits for its copier to write the rest.
const COPIER_PATIENCE: Duration = Duration::from_secs(10);

/// Starts copying the output of the running container `name` into `log` until
/// the container ends.
pub fn follow(docker: &Engine, name: &str, log: PathBuf) -> JoinHandle<bool> {
    let (docker, name) = (docker.clone(), name.to_owned());
    tokio::spawn(async move { copy(&docker, &name, &log, true).await })
}

/// Completes the log of the ended container `name`: lets its copier, if any,
/// write the rest (stopped after [`COPIER_PATIENCE`]); unless it copied the
/// whole log, appends whatever the file still lacks.
pub async fn finish(docker: &Engine, name: &str, log: &Path, copier: Option<JoinHandle<bool>>) {
    if let Some(mut copier) = copier {
        match tokio::time::timeout(COPIER_PATIENCE, &mut copier).await {
            Ok(Ok(true)) => return,
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    container = name,
                    "the copy of the container's output did not end with it; read again"
                );
                copier.abort();
                // Its end (cancelled) is all that is left to wait for.
                let _ = copier.await;
            }
        }
    }
    copy(docker, name, log, false).await;
}

/// Appends the container's output (stdout and stderr, as they came) to `log`,
/// past the bytes `log` holds already; with `follow`, until the container ends.
/// Whether it copied the engine's log to its end (every failure is logged).
async fn copy(docker: &Engine, name: &str, log: &Path, follow: bool) -> bool {
    let mut skip = tokio::fs::metadata(log).await.map_or(0, |m| m.len());
    let Some(mut file) = JobLog::open(log).await else {
        return false;
    };
    let mut output = docker.api.logs(
        name,
        Some(LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..LogsOptions::default()
        }),
    );
    while let Some(chunk) = output.next().await {
        let bytes = match chunk {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => message,
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::warn!(container = name, error = %error_chain(&e), "cannot read the container's output");
                docker.count("logs", true);
                file.finish().await;
                return false;
            }
        };
        let len = bytes.len() as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let new = &bytes[usize::try_from(skip).unwrap_or(0)..];
        skip = 0;
        if !file.write(new).await {
            // Logged by the file; the engine's answer was fine.
            docker.count("logs", false);
            return false;
        }
    }
    docker.count("logs", false);
    file.finish().await
}
