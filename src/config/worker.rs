//! The `[worker]` table of the config file: the options every command shares
//! ([`SharedArgs`]: subject prefix, pool, log format, whose flags are global)
//! and the worker's own ([`WorkerTableArgs`]), with the user process jobs run
//! as ([`UserSpec`]).

use super::options::{options, value_by_choice, value_by_text};
use super::values::BadValue;
use super::{DEFAULT_POOL, DEFAULT_SUBJECT_PREFIX, LogFormat, MAX_RETENTION_S};
use crate::protocol::BackendKind;
use crate::supervisor::job_uids::JobUidRange;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

options! {
    /// The options every command shares, as each layer gives them (global
    /// flags and environment, or the `[worker]` table).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct SharedArgs in "worker" {
        /// Subject prefix; any other than the default gets streams and a bucket of its own
        subject_prefix: String {
            flag: "subject-prefix",
            env: "FLARE_SUBJECT_PREFIX",
            default: value(DEFAULT_SUBJECT_PREFIX.to_owned()),
            clap: (global = true),
        },
        /// Worker pool: a worker takes the launch requests of PREFIX.launch.POOL
        pool: String {
            flag: "pool",
            env: "FLARE_POOL",
            default: value(DEFAULT_POOL.to_owned()),
            clap: (global = true),
        },
        /// Log format: human or json (the level from RUST_LOG)
        log_format: LogFormat {
            flag: "log-format",
            env: "FLARE_LOG_FORMAT",
            default: value(LogFormat::Human),
            clap: (global = true, value_enum),
        },
    }
}

options! {
    /// The worker's own options, as each layer gives them (flags and
    /// environment, or the `[worker]` table).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct WorkerTableArgs in "worker" {
        /// Backend for requests that name none: process, docker or k8s
        backend: BackendKind {
            flag: "backend",
            env: "FLARE_BACKEND",
            default: text("the first of --backends, else process"),
            example: "\"process\"",
        },
        /// Every backend this worker runs jobs on, comma-separated (process,docker); --backend docker alone makes a Docker worker
        backends: Vec<BackendKind> {
            flag: "backends",
            env: "FLARE_BACKENDS",
            default: text("just --backend"),
            example: "[\"process\", \"docker\"]",
            clap: (value_delimiter = ','),
        },
        /// Worker id in records and events; one data directory per worker
        worker_id: String {
            flag: "worker-id",
            env: "FLARE_WORKER_ID",
            default: text("hostname plus a short random suffix, kept in DATA_DIR/worker-id"),
            example: "\"worker-1\"",
        },
        /// Directory for job logs (logs/YYYY-MM-DD/JOB_ID.log) and local state
        data_dir: PathBuf {
            flag: "data-dir",
            env: "FLARE_DATA_DIR",
            default: text("~/.local/state/flare-launcher"),
            example: "\"/var/lib/flare-launcher\"",
        },
        /// Most jobs run at once
        max_jobs: usize {
            flag: "max-jobs",
            env: "FLARE_MAX_JOBS",
            default: value(64),
        },
        /// Seconds running jobs get to finish at shutdown before they are terminated
        drain_timeout_s: u64 {
            flag: "drain-timeout",
            env: "FLARE_DRAIN_TIMEOUT_S",
            default: value(30),
        },
        /// At shutdown, wait for this worker's jobs to end (up to the drain timeout) instead of handing them over to the pool at once
        drain: bool {
            flag: "drain",
            env: "FLARE_DRAIN",
            default: value(false),
            kind: switch,
        },
        /// Seconds a worker's lease in the flare_workers bucket lives unless refreshed (at least 3); its jobs are adopted once it lapses
        lease_s: u64 {
            flag: "lease-s",
            env: "FLARE_LEASE_S",
            default: value(10),
        },
        /// Seconds after its worker's lease lapsed that a process job, which no other host can adopt, is ended lost (reason OwnerLost) unless a worker of its host takes it back
        owner_lost_after_s: u64 {
            flag: "owner-lost-after",
            env: "FLARE_OWNER_LOST_AFTER_S",
            default: value(300),
        },
        /// Seconds before an unacknowledged launch request goes to another worker
        ack_wait_s: u64 {
            flag: "ack-wait",
            env: "FLARE_ACK_WAIT_S",
            default: value(30),
        },
        /// Copies a NATS cluster keeps of each stream and bucket, 1 to 5 (3 on a three-server cluster); existing ones with fewer are raised to it, never lowered
        replicas: usize {
            flag: "replicas",
            env: "FLARE_REPLICAS",
            default: value(1),
        },
        /// Largest launch request, in bytes, decoded (at least 1024); a larger one ends its job in error
        max_request_bytes: usize {
            flag: "max-request-bytes",
            env: "FLARE_MAX_REQUEST_BYTES",
            default: value(crate::protocol::DEFAULT_MAX_REQUEST_BYTES),
        },
        /// Seconds the records and logs of ended jobs, and tombstones, are kept, 1 to 604800 (7 days)
        retention_s: u64 {
            flag: "retention",
            env: "FLARE_RETENTION_S",
            default: value(MAX_RETENTION_S),
        },
        /// Seconds a container or pod carrying this worker's labels that no job claims is left before it is removed
        orphan_grace_s: u64 {
            flag: "orphan-grace",
            env: "FLARE_ORPHAN_GRACE_S",
            default: value(120),
        },
        /// Run process jobs as this user (and group), names or numbers, not the worker's; needs root or CAP_SETUID and CAP_SETGID
        job_user: UserSpec {
            flag: "job-user",
            env: "FLARE_JOB_USER",
            default: text("the worker's user"),
            example: "\"flare-job\"",
            clap: (value_name = "USER[:GROUP]"),
        },
        /// Run each process job under a user id of its own from this range (with the job user's group and home), so that jobs cannot signal or trace each other; needs --job-user
        job_uids: JobUidRange {
            flag: "job-uids",
            env: "FLARE_JOB_UIDS",
            default: text("none"),
            example: "\"3000000-3000999\"",
            clap: (value_name = "FIRST-LAST"),
        },
        /// Pass jobs only these of the worker's environment variables: names or prefixes ending in *, comma-separated; excludes --job-env-deny
        job_env_allow: Vec<String> {
            flag: "job-env-allow",
            env: "FLARE_JOB_ENV_ALLOW",
            default: text("all of them (FLARE_* never)"),
            example: "[\"PATH\", \"LANG\", \"LC_*\"]",
            clap: (value_name = "NAMES", value_delimiter = ','),
        },
        /// Pass jobs all of the worker's environment variables but these (FLARE_* never); excludes --job-env-allow
        job_env_deny: Vec<String> {
            flag: "job-env-deny",
            env: "FLARE_JOB_ENV_DENY",
            default: text("none"),
            example: "[\"AWS_*\"]",
            clap: (value_name = "NAMES", value_delimiter = ','),
        },
        /// Run each process job in a cgroup of its own where the host allows it (costs throughput); a job that names cpus or memory_mb gets one, with its limits, regardless
        job_cgroups: bool {
            flag: "job-cgroups",
            env: "FLARE_JOB_CGROUPS",
            default: value(false),
            kind: switch,
        },
        /// Prefixes a container job's label keys may start with (e.g. `example.org/`), comma-separated; a key matching neither these nor --allowed-label-keys is refused (NotAllowed)
        allowed_label_prefixes: Vec<String> {
            flag: "allowed-label-prefixes",
            env: "FLARE_ALLOWED_LABEL_PREFIXES",
            default: text("none"),
            example: "[\"fl.example.org/\"]",
            clap: (value_delimiter = ','),
        },
        /// Address of the worker's HTTP endpoint: /metrics (Prometheus), /healthz (the process lives) and /readyz (NATS connected, lease held, each backend answering), e.g. 0.0.0.0:9464
        metrics_listen: SocketAddr {
            flag: "metrics-listen",
            env: "FLARE_METRICS_LISTEN",
            default: text("none, no endpoint"),
            example: "\"0.0.0.0:9464\"",
            clap: (value_name = "ADDR"),
        },
        /// Label keys a container job may set, comma-separated (the NVFlare launcher's by default)
        allowed_label_keys: Vec<String> {
            flag: "allowed-label-keys",
            env: "FLARE_ALLOWED_LABEL_KEYS",
            default: value(vec!["nvflare-job-id".into(), "nvflare-site".into()]),
            clap: (value_delimiter = ','),
        },
    }
}

impl WorkerTableArgs {
    /// `self`'s values where set, else `fallback`'s, except that the
    /// allow-list and the deny-list of the jobs' environment are one setting:
    /// the layer that gives either gives both.
    pub fn over(self, mut fallback: WorkerTableArgs) -> WorkerTableArgs {
        if self.job_env_allow.is_some() || self.job_env_deny.is_some() {
            fallback.job_env_allow = None;
            fallback.job_env_deny = None;
        }
        self.or(fallback)
    }
}

/// Longest user or group name accepted (Linux's `LOGIN_NAME_MAX` less its NUL).
const MAX_NAME_LEN: usize = 255;

/// The user process jobs run as, `USER[:GROUP]`: names or numbers, looked up
/// when the worker starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user's name or id.
    pub user: String,
    /// The group's name or id; `None`: the user's own.
    pub group: Option<String>,
}

impl FromStr for UserSpec {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        let valid = |name: &str| {
            !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.contains([':', '\0'])
        };
        if valid(user) && group.is_none_or(valid) {
            Ok(UserSpec {
                user: user.to_owned(),
                group: group.map(str::to_owned),
            })
        } else {
            Err(BadValue::new(
                text,
                "must be USER or USER:GROUP, names of at most 255 bytes",
            ))
        }
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.user)?;
        if let Some(group) = &self.group {
            write!(f, ":{group}")?;
        }
        Ok(())
    }
}

value_by_text!(UserSpec, JobUidRange, BackendKind, SocketAddr);
value_by_choice!(LogFormat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_users_are_a_user_and_maybe_a_group() {
        assert_eq!(
            "nobody:root".parse(),
            Ok(UserSpec {
                user: "nobody".into(),
                group: Some("root".into())
            })
        );
        assert_eq!("0:0".parse::<UserSpec>().unwrap().to_string(), "0:0");
        for spec in ["", ":", ":root", "root:", "root:root:root", "a\0b"] {
            assert!(spec.parse::<UserSpec>().is_err(), "{spec:?}");
        }
        let long = "u".repeat(10_000);
        let error = long.parse::<UserSpec>().unwrap_err();
        assert!(error.to_string().len() < 400, "the setting is cut: {error}");
    }
}
