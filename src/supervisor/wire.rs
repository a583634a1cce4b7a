//! What a worker and its supervisor say to each other: one JSON object per line
//! over the supervisor's Unix socket, [`Request`]s one way and [`Report`]s the
//! other.

use super::job_file::JobEnd;
use super::job_uids::JobUidRange;
pub use crate::config::values::JobLimits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest line either side accepts: a launch carries argv and environment, which
/// the worker has bounded already; this only stops a runaway peer.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// The user a job runs as, resolved by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUserIds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// A user id of its own for each job, from this range, instead of `uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uids: Option<JobUidRange>,
}

/// What a worker asks of its supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First on every connection: what every job of this worker starts from.
    Hello {
        /// The environment every job inherits, before the request's own `env`.
        base_env: Vec<(String, String)>,
        /// The user jobs run as; `None`: the supervisor's own.
        user: Option<JobUserIds>,
        /// Each job in a cgroup of its own, where the host allows it.
        #[serde(default)]
        cgroups: bool,
    },
    /// Start a job.
    Launch(Spawn),
    /// Stop a job: SIGTERM to its process group now, SIGKILL to its whole tree
    /// after `grace_ms` (or sooner, if an earlier stop said so).
    Stop {
        /// The job.
        job_id: String,
        /// Milliseconds between the polite stop and the kill.
        grace_ms: u64,
    },
    /// The worker has recorded the job's end: its file may go.
    Forget {
        /// The job.
        job_id: String,
    },
    /// Which jobs run now: answered with [`Report::Jobs`].
    List,
    /// The worker leaves in order: kill whatever still runs (the worker gave up on
    /// it) and exit once nothing runs.
    Bye,
}

/// How to start one job. It travels only over the supervisor's socket and is
/// never written to a file: its `env` holds the request's secret values, which
/// its `Debug` leaves out (it shows the names).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Spawn {
    /// The job.
    pub job_id: String,
    /// Its argv, run without a shell.
    pub argv: Vec<String>,
    /// Its own environment, over the base environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub workdir: Option<String>,
    /// The file its stdout and stderr go to (created, or truncated).
    pub log: PathBuf,
    /// What it may use, enforced through a cgroup of its own (a worker older
    /// than limits sends none).
    #[serde(default, skip_serializing_if = "JobLimits::is_none")]
    pub limits: JobLimits,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Spawn")
            .field("job_id", &self.job_id)
            .field("argv", &self.argv)
            .field("env", &names)
            .field("workdir", &self.workdir)
            .field("log", &self.log)
            .field("limits", &self.limits)
            .finish()
    }
}

/// What a supervisor tells its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// A launched job runs.
    Started {
        /// The job.
        job_id: String,
        /// The pid of its first process (the leader of its process group).
        pid: u32,
    },
    /// A launched job could not be started.
    SpawnFailed {
        /// The job.
        job_id: String,
        /// Why, as the operating system said it.
        error: String,
    },
    /// A job ended; its whole process tree is gone.
    Exited {
        /// The job.
        job_id: String,
        /// How.
        end: JobEnd,
    },
    /// The jobs that run now, in answer to [`Request::List`].
    Jobs {
        /// Their ids and pids.
        running: Vec<RunningJob>,
        /// The range new jobs get user ids of their own from; none: every job
        /// runs as the job user (a supervisor older than `--job-uids` says none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_uids: Option<JobUidRange>,
        /// Whether it enforces a launch's [`JobLimits`] (a supervisor older
        /// than limits says nothing: it would run jobs without them).
        #[serde(default)]
        limits: bool,
    },
    /// The supervisor will not serve this connection.
    Refused {
        /// Why.
        error: String,
    },
}

/// A job a supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    /// The job.
    pub job_id: String,
    /// The pid of its first process, once started.
    pub pid: Option<u32>,
}

/// One message as a line.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).expect("wire messages always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;
    use crate::state::Exit;

    #[test]
    fn messages_are_single_lines_that_round_trip() {
        let launch = Request::Launch(Spawn {
            job_id: "j1".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'a\nb'".into()],
            env: vec![("A".into(), "1\n2".into())],
            workdir: None,
            log: "/tmp/j1.log".into(),
            limits: JobLimits {
                cpus: Some(0.5),
                memory_mb: None,
            },
        });
        assert!(!format!("{launch:?}").contains("1\n2"));
        let line = encode(&launch);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(serde_json::from_slice::<Request>(&line).unwrap(), launch);
        let exited = Report::Exited {
            job_id: "j1".into(),
            end: JobEnd::Exited {
                exit: Exit::Signal(9),
                stopped: true,
                oom_killed: true,
            },
        };
        assert_eq!(
            serde_json::from_slice::<Report>(&encode(&exited)).unwrap(),
            exited
        );
    }

    #[test]
    fn what_an_older_peer_sends_reads_as_no_limits_and_no_oom() {
        let launch =
            r#"{"op":"launch","job_id":"j1","argv":["x"],"env":[],"workdir":null,"log":"/l"}"#;
        let Request::Launch(spawn) = serde_json::from_str(launch).unwrap() else {
            panic!("not a launch");
        };
        assert!(spawn.limits.is_none());
        let jobs = r#"{"report":"jobs","running":[]}"#;
        assert!(matches!(
            serde_json::from_str(jobs).unwrap(),
            Report::Jobs { limits: false, .. }
        ));
        let exited = r#"{"report":"exited","job_id":"j1","end":{"how":"exited","exit":{"code":1},"stopped":false}}"#;
        assert!(matches!(
            serde_json::from_str(exited).unwrap(),
            Report::Exited {
                end: JobEnd::Exited {
                    oom_killed: false,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn only_limits_above_zero_are_limits() {
        let resources = Resources {
            cpus: Some(0.0),
            memory_mb: Some(64),
            ..Resources::default()
        };
        assert_eq!(
            JobLimits::of(Some(&resources)),
            JobLimits {
                cpus: None,
                memory_mb: Some(64)
            }
        );
        assert!(JobLimits::of(None).is_none());
    }
}
