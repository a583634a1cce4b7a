//! A supervised job's file, `DIR/jobs/job-JOB_ID.json`: written by the job's
//! supervisor once the job runs and again, atomically, when its whole process
//! tree has ended. It is how a restarted worker finds its jobs: a file with an
//! end says how the job ended while the worker was away; one without an end whose
//! supervisor is gone means the job was lost.

use crate::report::error_chain;
use crate::state::Exit;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// How a supervised job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum JobEnd {
    /// Its first process ended (and then everything it left behind was killed).
    Exited {
        /// How the first process ended.
        exit: Exit,
        /// Whether a stop had been asked for before it ended.
        stopped: bool,
        /// Whether the out-of-memory killer killed a process of the job in its
        /// cgroup (a file or peer older than limits says nothing: false).
        #[serde(default)]
        oom_killed: bool,
    },
    /// Its supervision ended before the job did (the supervisor died): the job
    /// was killed, and nobody can say how it would have ended.
    OwnerLost,
    /// Its program could not be started.
    NotStarted {
        /// Why, as the operating system said it.
        error: String,
    },
}

/// What the file holds. A job that never started has no process: `pid` 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    /// The job.
    pub job_id: String,
    /// Its first process.
    pub pid: u32,
    /// Its supervisor process.
    pub supervisor_pid: u32,
    /// How it ended, once it has.
    pub end: Option<JobEnd>,
}

/// The folder of job files under a supervisor's directory.
pub fn jobs_dir(dir: &Path) -> PathBuf {
    dir.join("jobs")
}

/// The file of one job. The `job-` prefix keeps every job id (even `.` or `..`,
/// which the protocol's charset allows) a plain file name.
pub fn path(dir: &Path, job_id: &str) -> PathBuf {
    jobs_dir(dir).join(format!("job-{job_id}.json"))
}

impl JobFile {
    /// Writes the file in place. Its only writer is the job's supervisor, and its
    /// readers read it after that writer ended (the supervisor, when it reaps
    /// it) or treat a file they cannot read as no file (a worker at start-up);
    /// writing in place spares every job two file creations and removals.
    ///
    /// # Errors
    /// The I/O error.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).expect("a job file always serializes");
        std::fs::write(path(dir, &self.job_id), text)
    }

    /// Reads one job's file; `None` when there is none.
    ///
    /// # Errors
    /// The I/O error, or `InvalidData` for a file that is not a job file.
    pub fn read(dir: &Path, job_id: &str) -> io::Result<Option<JobFile>> {
        match std::fs::read(path(dir, job_id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every job file in `dir`; unreadable ones are logged and skipped.
    pub fn read_all(dir: &Path) -> Vec<JobFile> {
        let entries = match std::fs::read_dir(jobs_dir(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %error_chain(&e), "cannot list supervised jobs");
                return Vec::new();
            }
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(job_id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("job-"))
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match JobFile::read(dir, job_id) {
                Ok(Some(file)) => files.push(file),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%job_id, error = %error_chain(&e), "unreadable supervised job file; skipped")
                }
            }
        }
        files
    }

    /// Removes a job's file; a missing one is fine.
    ///
    /// # Errors
    /// Any other I/O error.
    pub fn remove(dir: &Path, job_id: &str) -> io::Result<()> {
        match std::fs::remove_file(path(dir, job_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_list_without_strangers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(jobs_dir(dir.path())).unwrap();
        let mut file = JobFile {
            job_id: "..".into(),
            pid: 10,
            supervisor_pid: 9,
            end: None,
        };
        file.write(dir.path()).unwrap();
        file.end = Some(JobEnd::Exited {
            exit: Exit::Code(3),
            stopped: false,
            oom_killed: false,
        });
        file.write(dir.path()).unwrap();
        std::fs::write(jobs_dir(dir.path()).join("stranger.txt"), "x").unwrap();
        assert_eq!(JobFile::read_all(dir.path()), vec![file.clone()]);
        JobFile::remove(dir.path(), "..").unwrap();
        JobFile::remove(dir.path(), "..").unwrap();
        assert!(JobFile::read_all(dir.path()).is_empty());
    }
}
