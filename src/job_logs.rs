//! Where job logs live: `LOG_DIR/YYYY-MM-DD/JOB_ID.log`, filed under the UTC day
//! the job started, so that the logs of a day past the retention can be removed
//! together without looking at the days still kept. The naming is shared by the
//! process backend, which writes the logs, the retention sweep, which removes
//! them, and the worker's answers to readers of a job's output, which find them.

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

/// The log file of `job_id` in `log_dir`, if there is one: under the newest
/// day that holds one, else where earlier versions wrote it (`LOG_DIR/JOB_ID.log`).
/// Costs a listing of the day directories (one per day kept).
///
/// # Errors
/// The I/O error when the log directory cannot be listed.
pub fn find(log_dir: &Path, job_id: &str) -> io::Result<Option<PathBuf>> {
    let name = format!("{job_id}.log");
    let mut days: Vec<(Date, PathBuf)> = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let day = parse_day(entry.file_name().to_str()?)?;
                Some((day, entry.path()))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    days.sort_unstable_by_key(|(day, _)| std::cmp::Reverse(*day));
    Ok(days
        .into_iter()
        .map(|(_, dir)| dir.join(&name))
        .chain(std::iter::once(log_dir.join(&name)))
        .find(|path| path.is_file()))
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

    #[test]
    fn a_jobs_log_is_found_under_the_newest_day_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(&dir.path().join("none"), "j1").unwrap(), None);
        assert_eq!(find(dir.path(), "j1").unwrap(), None);
        std::fs::write(dir.path().join("j1.log"), "old").unwrap();
        assert_eq!(
            find(dir.path(), "j1").unwrap(),
            Some(dir.path().join("j1.log"))
        );
        for day in ["2026-03-08", "2026-03-09", "not-a-day"] {
            std::fs::create_dir(dir.path().join(day)).unwrap();
            std::fs::write(dir.path().join(day).join("j1.log"), day).unwrap();
        }
        assert_eq!(
            find(dir.path(), "j1").unwrap(),
            Some(dir.path().join("2026-03-09").join("j1.log"))
        );
    }
}
