//! Where job logs live: `LOG_DIR/YYYY-MM-DD/JOB_ID.log`, filed under the UTC day
//! the job started, so that the logs of a day past the retention can be removed
//! together without looking at the days still kept. The naming is shared by the
//! process backend, which writes the logs, and the retention sweep, which removes
//! them.

use crate::report::error_chain;
use std::io;
use std::path::{Path, PathBuf};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

const DAY: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// The name of a day's directory.
pub fn day_name(day: Date) -> String {
    day.format(DAY)
        .expect("a date always formats as year-month-day")
}

/// The day a directory's name stands for, if it names one.
pub fn parse_day(name: &str) -> Option<Date> {
    Date::parse(name, DAY).ok()
}

/// The directory of the jobs starting now, created if it is missing.
///
/// # Errors
/// The I/O error when it cannot be created.
pub fn today(log_dir: &Path) -> io::Result<PathBuf> {
    let dir = log_dir.join(day_name(OffsetDateTime::now_utc().date()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The log file of `job_id`, whose workload starts now, under today's directory
/// (made if it is missing).
///
/// # Errors
/// The I/O error when the directory cannot be created.
pub fn of_job_starting(log_dir: &Path, job_id: &str) -> io::Result<PathBuf> {
    Ok(today(log_dir)?.join(format!("{job_id}.log")))
}

/// The log file of `job_id`, whose workload was created at `created` (seconds
/// since the epoch; now if unknown): under that day's directory, as the job's
/// `running` event named it. The directory is made if it is missing.
pub fn of_job_created(log_dir: &Path, created: Option<i64>, job_id: &str) -> PathBuf {
    let day = created
        .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
        .date();
    let dir = log_dir.join(day_name(day));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %error_chain(&e), "cannot create a job log directory");
    }
    dir.join(format!("{job_id}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn day_names_round_trip_and_nothing_else_parses() {
        assert_eq!(day_name(date!(2026 - 03 - 09)), "2026-03-09");
        assert_eq!(parse_day("2026-03-09"), Some(date!(2026 - 03 - 09)));
        for other in ["job.log", "2026-3-9", "2026-02-30", "2026-03-09x", ""] {
            assert_eq!(parse_day(other), None, "{other}");
        }
    }
}
