//! Removal of old job logs: a sweep at start-up and then every hour.
//!
//! Logs are filed by the day their job started (see [`crate::job_logs`]), so a
//! sweep lists the log directory (one entry per day) and opens only the days that
//! ended longer than the retention ago: its cost grows with the number of days
//! kept and of logs removed, never with all the jobs ever run. In such a day, a
//! log is removed unless its job still runs on this worker or it was written
//! within the retention (a job that ran long after its start day), and the day's
//! directory goes once it is empty. Logs that earlier versions wrote directly
//! into the log directory (`JOB_ID.log`) follow the same rule, so they drain
//! away after an upgrade.
//!
//! Job records need no sweep: the server removes them by their TTL (see
//! [`crate::store`]).

use super::registry::Registry;
use crate::job_logs;
use crate::report::error_chain;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Time between two sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Day directories removed.
    pub days: usize,
    /// Logs removed.
    pub logs: usize,
    /// Logs of past days kept (still written to, or of a job still running).
    pub kept: usize,
}

/// Sweeps `log_dir` now and then every [`SWEEP_INTERVAL`] until `stop` is
/// cancelled; a sweep under way is finished first. `registry` names the jobs
/// this worker runs, whose logs stay.
pub async fn run(
    log_dir: PathBuf,
    retention: Duration,
    registry: Registry,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // The first tick is at once: the start-up sweep runs even if the
            // worker is asked to stop right away.
            biased;
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let (dir, registry) = (log_dir.clone(), registry.clone());
        let swept = tokio::task::spawn_blocking(move || {
            sweep(&dir, retention, OffsetDateTime::now_utc(), |job_id| {
                registry.get(job_id).is_some()
            })
        })
        .await;
        match swept {
            Ok(Ok(swept)) if swept.logs > 0 || swept.days > 0 => {
                tracing::info!(log_dir = %log_dir.display(), days = swept.days, logs = swept.logs, kept = swept.kept, "removed old job logs");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(log_dir = %log_dir.display(), error = %error_chain(&e), "could not sweep old job logs")
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "the sweep of old job logs failed"),
        }
    }
}

/// Removes from `log_dir` the logs older than `retention` at `now`, except those
/// of jobs for which `running` holds. A log directory that does not exist has
/// nothing to sweep; a log that cannot be removed is named in a warning and
/// left.
///
/// # Errors
/// The I/O error when `log_dir` cannot be listed.
pub fn sweep(
    log_dir: &Path,
    retention: Duration,
    now: OffsetDateTime,
    running: impl Fn(&str) -> bool,
) -> io::Result<Swept> {
    let cutoff = now - retention;
    let entries = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(e) => return Err(e),
    };
    let mut swept = Swept::default();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(day) = job_logs::parse_day(name) {
            // Every job filed under this day started before the day ended.
            let ended = day.next_day().map(|next| next.midnight().assume_utc());
            if entry.file_type()?.is_dir() && ended.is_some_and(|ended| ended <= cutoff) {
                sweep_day(&path, cutoff, &running, &mut swept);
            }
        } else if name.ends_with(".log") && entry.file_type()?.is_file() {
            sweep_log(&path, cutoff, &running, &mut swept);
        }
    }
    Ok(swept)
}

/// Sweeps the logs of a past day, then its directory if nothing is left.
fn sweep_day(
    day: &Path,
    cutoff: OffsetDateTime,
    running: &impl Fn(&str) -> bool,
    swept: &mut Swept,
) {
    let listed = std::fs::read_dir(day).and_then(|entries| {
        for entry in entries {
            sweep_log(&entry?.path(), cutoff, running, swept);
        }
        Ok(())
    });
    let removed = listed.and_then(|()| std::fs::remove_dir(day));
    match removed {
        Ok(()) => swept.days += 1,
        // Something was kept, or is not a log: the next sweep looks again.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
        Err(e) => warn_not_removed(day, &e),
    }
}

/// Removes one log, unless its job runs or it was written after `cutoff`.
fn sweep_log(
    log: &Path,
    cutoff: OffsetDateTime,
    running: &impl Fn(&str) -> bool,
    swept: &mut Swept,
) {
    let job_id = log
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".log"));
    let Some(job_id) = job_id else { return };
    let written = std::fs::metadata(log).and_then(|m| m.modified());
    let recent = match written {
        Ok(written) => OffsetDateTime::from(written) > cutoff,
        Err(e) => {
            warn_not_removed(log, &e);
            return;
        }
    };
    if recent || running(job_id) {
        swept.kept += 1;
        return;
    }
    match std::fs::remove_file(log) {
        Ok(()) => swept.logs += 1,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn_not_removed(log, &e),
    }
}

fn warn_not_removed(path: &Path, error: &io::Error) {
    tracing::warn!(path = %path.display(), error = %error_chain(&error), "could not remove an old job log");
}
