//! Configuration: command-line flags, `FLARE_*` environment variables and an
//! optional TOML file, merged in that order of precedence over the defaults.
//!
//! Every flag is an `Option` so that a layer that says nothing lets the next one
//! speak; defaults are applied last, in [`Settings::worker_config`] and friends.

pub mod docker;
pub mod k8s;
pub mod resources;

use crate::nats::connect::NatsArgs;
use crate::nats::subjects::check_token;
use crate::protocol::BackendKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use docker::{DockerArgs, DockerConfig, PullPolicy};
pub use k8s::{K8sArgs, K8sConfig};
pub use resources::{GpuSelection, ResourceArgs, ResourceConfig, ResourcePolicyKind};

/// Default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = crate::nats::subjects::DEFAULT_PREFIX;
/// Default worker pool.
pub const DEFAULT_POOL: &str = "default";
/// Default number of jobs a worker runs at once.
pub const DEFAULT_MAX_JOBS: usize = 64;
/// Largest `--max-jobs` accepted.
pub const MAX_MAX_JOBS: usize = 100_000;
/// Default drain timeout at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 30;
/// Default time the server waits for a launch request's acknowledgement before
/// handing it to another worker.
pub const DEFAULT_ACK_WAIT_S: u64 = 30;
/// Default size limit of a launch request.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = crate::protocol::DEFAULT_MAX_REQUEST_BYTES;
/// Smallest `--max-request-bytes` accepted (a guard against a limit meant in KiB).
pub const MIN_MAX_REQUEST_BYTES: usize = 1024;
/// Default and longest retention of ended jobs' records and logs: as long as the
/// events stream keeps their events (7 days), so a record never outlives them.
pub const MAX_RETENTION_S: u64 = crate::nats::setup::EVENTS_MAX_AGE.as_secs();
/// Default age below which a workload no job claims is left alone (its launch may
/// still be under way, or the engine made it while failing the call).
pub const DEFAULT_ORPHAN_GRACE_S: u64 = 120;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Compact lines for people.
    #[default]
    Human,
    /// One JSON object per line, for machines.
    Json,
}

/// Options every command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// TOML config file with `[nats]` and `[worker]` tables
    #[arg(long, env = "FLARE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Subject prefix [default: flare.jobs]
    #[arg(long, env = "FLARE_SUBJECT_PREFIX", global = true)]
    pub subject_prefix: Option<String>,
    /// Worker pool [default: default]
    #[arg(long, env = "FLARE_POOL", global = true)]
    pub pool: Option<String>,
    /// Log format [default: human]
    #[arg(long, env = "FLARE_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Options of the worker.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerArgs {
    /// Backend for requests that name none: process, docker or k8s [default: the first of --backends, else process]
    #[arg(long, env = "FLARE_BACKEND")]
    pub backend: Option<BackendKind>,
    /// Every backend this worker runs jobs on, comma-separated [default: just --backend]
    #[arg(long, env = "FLARE_BACKENDS", value_delimiter = ',')]
    pub backends: Option<Vec<BackendKind>>,
    /// Worker id in records and events [default: hostname plus a short random suffix]
    #[arg(long, env = "FLARE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Directory for job logs and local state [default: ~/.local/state/flare-launcher]
    #[arg(long, env = "FLARE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Most jobs run at once [default: 64]
    #[arg(long, env = "FLARE_MAX_JOBS")]
    pub max_jobs: Option<usize>,
    /// Seconds running jobs get to finish at shutdown before they are terminated [default: 30]
    #[arg(long = "drain-timeout", env = "FLARE_DRAIN_TIMEOUT_S")]
    pub drain_timeout_s: Option<u64>,
    /// Seconds before an unacknowledged launch request goes to another worker [default: 30]
    #[arg(long = "ack-wait", env = "FLARE_ACK_WAIT_S")]
    pub ack_wait_s: Option<u64>,
    /// Largest launch request, in bytes, decoded; a larger one ends its job in error [default: 262144]
    #[arg(long, env = "FLARE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Seconds the records and logs of ended jobs, and tombstones, are kept, 1 to 604800 [default: 604800, 7 days]
    #[arg(long = "retention", env = "FLARE_RETENTION_S")]
    pub retention_s: Option<u64>,
    /// Seconds a container carrying this worker's labels that no job claims is left before it is removed [default: 120]
    #[arg(long = "orphan-grace", env = "FLARE_ORPHAN_GRACE_S")]
    pub orphan_grace_s: Option<u64>,
    /// Run process jobs as this user (and group), not the worker's; needs root or CAP_SETUID and CAP_SETGID
    #[arg(long, env = "FLARE_JOB_USER", value_name = "USER[:GROUP]")]
    pub job_user: Option<String>,
    /// Run each process job under a user id of its own from this range (with the job user's group and home), so that jobs cannot signal or trace each other; needs --job-user
    #[arg(long, env = "FLARE_JOB_UIDS", value_name = "FIRST-LAST")]
    pub job_uids: Option<String>,
    /// Pass jobs only these of the worker's environment variables: names or prefixes ending in *, comma-separated
    #[arg(
        long,
        env = "FLARE_JOB_ENV_ALLOW",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub job_env_allow: Option<Vec<String>>,
    /// Pass jobs all of the worker's environment variables but these (FLARE_* never) [default: none]
    #[arg(
        long,
        env = "FLARE_JOB_ENV_DENY",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub job_env_deny: Option<Vec<String>>,
    /// Run each process job in a cgroup of its own where the host allows it (costs throughput) [default: false]
    #[arg(
        long,
        env = "FLARE_JOB_CGROUPS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub job_cgroups: Option<bool>,
    /// The Docker backend's options.
    #[command(flatten)]
    #[serde(default)]
    pub docker: DockerArgs,
    /// The Kubernetes backend's options.
    #[command(flatten)]
    #[serde(default)]
    pub k8s: K8sArgs,
    /// The resource policy's options.
    #[command(flatten)]
    #[serde(default)]
    pub resources: ResourceArgs,
}

impl WorkerArgs {
    /// `self`'s values where set, else `fallback`'s. The allow-list and the
    /// deny-list are one setting: the layer that gives either gives both.
    pub fn or(self, fallback: WorkerArgs) -> WorkerArgs {
        let (job_env_allow, job_env_deny) =
            if self.job_env_allow.is_some() || self.job_env_deny.is_some() {
                (self.job_env_allow, self.job_env_deny)
            } else {
                (fallback.job_env_allow, fallback.job_env_deny)
            };
        WorkerArgs {
            backend: self.backend.or(fallback.backend),
            backends: self.backends.or(fallback.backends),
            worker_id: self.worker_id.or(fallback.worker_id),
            data_dir: self.data_dir.or(fallback.data_dir),
            max_jobs: self.max_jobs.or(fallback.max_jobs),
            drain_timeout_s: self.drain_timeout_s.or(fallback.drain_timeout_s),
            ack_wait_s: self.ack_wait_s.or(fallback.ack_wait_s),
            max_request_bytes: self.max_request_bytes.or(fallback.max_request_bytes),
            retention_s: self.retention_s.or(fallback.retention_s),
            orphan_grace_s: self.orphan_grace_s.or(fallback.orphan_grace_s),
            job_user: self.job_user.or(fallback.job_user),
            job_uids: self.job_uids.or(fallback.job_uids),
            job_env_allow,
            job_env_deny,
            job_cgroups: self.job_cgroups.or(fallback.job_cgroups),
            docker: self.docker.or(fallback.docker),
            k8s: self.k8s.or(fallback.k8s),
            resources: self.resources.or(fallback.resources),
        }
    }
}

/// The `[worker]` table of the config file: the shared options plus the worker's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorker {
    subject_prefix: Option<String>,
    pool: Option<String>,
    log_format: Option<LogFormat>,
    backend: Option<BackendKind>,
    backends: Option<Vec<BackendKind>>,
    worker_id: Option<String>,
    data_dir: Option<PathBuf>,
    max_jobs: Option<usize>,
    drain_timeout_s: Option<u64>,
    ack_wait_s: Option<u64>,
    max_request_bytes: Option<usize>,
    retention_s: Option<u64>,
    orphan_grace_s: Option<u64>,
    job_user: Option<String>,
    job_uids: Option<String>,
    job_env_allow: Option<Vec<String>>,
    job_env_deny: Option<Vec<String>>,
    job_cgroups: Option<bool>,
}

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    nats: NatsArgs,
    #[serde(default)]
    worker: FileWorker,
    #[serde(default)]
    docker: DockerArgs,
    #[serde(default)]
    k8s: K8sArgs,
    #[serde(default)]
    resources: ResourceArgs,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// All layers merged: what the commands use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS connection.
    pub nats: NatsArgs,
    /// Subject prefix.
    pub subject_prefix: String,
    /// Worker pool.
    pub pool: String,
    /// Log format.
    pub log_format: LogFormat,
    worker: WorkerArgs,
}

impl Settings {
    /// Merges flags and environment (already in `global` and `worker`) over the
    /// config file (if any) over the defaults.
    ///
    /// # Errors
    /// A [`ConfigError`] when the config file cannot be used.
    pub fn load(global: GlobalArgs, worker: WorkerArgs) -> Result<Settings, ConfigError> {
        let file = match &global.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_worker = WorkerArgs {
            backend: file.worker.backend,
            backends: file.worker.backends,
            worker_id: file.worker.worker_id,
            data_dir: file.worker.data_dir,
            max_jobs: file.worker.max_jobs,
            drain_timeout_s: file.worker.drain_timeout_s,
            ack_wait_s: file.worker.ack_wait_s,
            max_request_bytes: file.worker.max_request_bytes,
            retention_s: file.worker.retention_s,
            orphan_grace_s: file.worker.orphan_grace_s,
            job_user: file.worker.job_user,
            job_uids: file.worker.job_uids,
            job_env_allow: file.worker.job_env_allow,
            job_env_deny: file.worker.job_env_deny,
            job_cgroups: file.worker.job_cgroups,
            docker: file.docker,
            k8s: file.k8s,
            resources: file.resources,
        };
        Ok(Settings {
            nats: global.nats.or(file.nats),
            subject_prefix: global
                .subject_prefix
                .or(file.worker.subject_prefix)
                .unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.into()),
            pool: global
                .pool
                .or(file.worker.pool)
                .unwrap_or_else(|| DEFAULT_POOL.into()),
            log_format: global
                .log_format
                .or(file.worker.log_format)
                .unwrap_or_default(),
            worker: worker.or(file_worker),
        })
    }

    /// The worker's configuration, defaults applied.
    pub fn worker_config(&self) -> WorkerConfig {
        let w = &self.worker;
        let data_dir = w.data_dir.clone().unwrap_or_else(default_data_dir);
        let given = w.worker_id.clone().or_else(|| kept_worker_id(&data_dir));
        let keep_worker_id = given.is_none();
        let worker_id = given.unwrap_or_else(default_worker_id);
        let backend = w
            .backend
            .or_else(|| w.backends.as_ref()?.first().copied())
            .unwrap_or(BackendKind::Process);
        WorkerConfig {
            nats: self.nats.clone(),
            subject_prefix: self.subject_prefix.clone(),
            pool: self.pool.clone(),
            worker_id,
            keep_worker_id,
            backend,
            backends: w.backends.clone().unwrap_or_else(|| vec![backend]),
            data_dir,
            max_jobs: w.max_jobs.unwrap_or(DEFAULT_MAX_JOBS),
            drain_timeout: Duration::from_secs(
                w.drain_timeout_s.unwrap_or(DEFAULT_DRAIN_TIMEOUT_S),
            ),
            ack_wait: Duration::from_secs(w.ack_wait_s.unwrap_or(DEFAULT_ACK_WAIT_S)),
            max_request_bytes: w.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            supervisor_program: default_supervisor_program(),
            retention: Duration::from_secs(w.retention_s.unwrap_or(MAX_RETENTION_S)),
            orphan_grace: Duration::from_secs(w.orphan_grace_s.unwrap_or(DEFAULT_ORPHAN_GRACE_S)),
            job_user: w.job_user.clone(),
            job_uids: w.job_uids.clone(),
            job_env_allow: w.job_env_allow.clone(),
            job_env_deny: w.job_env_deny.clone(),
            job_cgroups: w.job_cgroups.unwrap_or(false),
            docker: w.docker.config(),
            k8s: w.k8s.config(),
            resources: w.resources.config(),
        }
    }
}

/// This program, which the worker runs in supervisor mode for its process jobs.
fn default_supervisor_program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("flare-launcher"))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Everything a worker needs, resolved.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS connection.
    pub nats: NatsArgs,
    /// Subject prefix.
    pub subject_prefix: String,
    /// The pool served.
    pub pool: String,
    /// The worker's id.
    pub worker_id: String,
    /// The id was chosen by default just now: the worker keeps it in
    /// `DATA_DIR/worker-id` when it starts, for its restarts.
    pub keep_worker_id: bool,
    /// Backend for requests that name none.
    pub backend: BackendKind,
    /// Every backend of the worker (`backend` among them).
    pub backends: Vec<BackendKind>,
    /// Job logs and local state.
    pub data_dir: PathBuf,
    /// Most jobs at once.
    pub max_jobs: usize,
    /// How long running jobs get at shutdown.
    pub drain_timeout: Duration,
    /// How long the server waits for a launch request's acknowledgement.
    pub ack_wait: Duration,
    /// Largest launch request decoded, in bytes.
    pub max_request_bytes: usize,
    /// The `flare-launcher` program run as the supervisor of process jobs
    /// (`flare-launcher supervise`): this program, unless a test or an embedding
    /// program says otherwise.
    pub supervisor_program: PathBuf,
    /// How long the records and logs of ended jobs, and tombstones, are kept.
    pub retention: Duration,
    /// How old a workload of this worker that no job claims gets before it is
    /// removed.
    pub orphan_grace: Duration,
    /// `USER[:GROUP]` process jobs run as; `None`: the worker's user.
    pub job_user: Option<String>,
    /// `FIRST-LAST`: each process job under a user id of its own from it.
    pub job_uids: Option<String>,
    /// The only worker variables jobs inherit (names, `PREFIX*`), if given.
    pub job_env_allow: Option<Vec<String>>,
    /// Worker variables jobs do not inherit (names, `PREFIX*`), if given.
    pub job_env_deny: Option<Vec<String>>,
    /// Each process job in a cgroup of its own, where the host allows it.
    pub job_cgroups: bool,
    /// The Docker backend's options.
    pub docker: DockerConfig,
    /// The Kubernetes backend's options.
    pub k8s: K8sConfig,
    /// The resource policy's options.
    pub resources: ResourceConfig,
}

impl WorkerConfig {
    /// A worker on the defaults, talking to `nats_url`, keeping state in `data_dir`.
    pub fn new(nats_url: &str, data_dir: PathBuf) -> Self {
        let nats = NatsArgs {
            url: Some(nats_url.to_owned()),
            ..NatsArgs::default()
        };
        let global = GlobalArgs {
            nats,
            ..GlobalArgs::default()
        };
        let worker = WorkerArgs {
            data_dir: Some(data_dir),
            ..WorkerArgs::default()
        };
        Settings::load(global, worker)
            .expect("no config file is read")
            .worker_config()
    }

    /// Checks values the types allow but the worker cannot use.
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        check_token("pool", &self.pool)?;
        check_token("worker id", &self.worker_id)?;
        if self.subject_prefix.is_empty()
            || self
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(format!(
                "subject prefix {:?} must be dot-separated non-empty tokens without wildcards",
                self.subject_prefix
            ));
        }
        if !(1..=MAX_MAX_JOBS).contains(&self.max_jobs) {
            return Err(format!("max jobs must be between 1 and {MAX_MAX_JOBS}"));
        }
        if self.ack_wait.is_zero() {
            return Err("ack wait must be at least 1 s".into());
        }
        if self.max_request_bytes < MIN_MAX_REQUEST_BYTES {
            return Err(format!(
                "max request bytes must be at least {MIN_MAX_REQUEST_BYTES}"
            ));
        }
        if !self.backends.contains(&self.backend) {
            return Err(format!(
                "the backend for requests that name none ({}) must be one of the worker's backends",
                self.backend
            ));
        }
        self.docker.validate()?;
        self.k8s.validate()?;
        self.resources.validate()?;
        if !(1..=MAX_RETENTION_S).contains(&self.retention.as_secs()) {
            return Err(format!(
                "retention must be between 1 and {MAX_RETENTION_S} s (how long the events stream keeps events)"
            ));
        }
        Ok(())
    }
}

/// The host name, made a valid worker-id token, plus a short random suffix.
pub fn default_worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", crate::protocol::random_suffix(6))
}

/// The file a worker's default id is kept in, so that a worker restarted on the
/// same data directory keeps its id and finds its supervised jobs again.
fn worker_id_file(data_dir: &Path) -> PathBuf {
    data_dir.join("worker-id")
}

/// The worker id kept in the data directory, if there is a valid one.
fn kept_worker_id(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(worker_id_file(data_dir)).ok()?;
    let id = text.trim();
    check_token("worker id", id).is_ok().then(|| id.to_owned())
}

/// Keeps a worker id chosen by default in the data directory (a worker does it
/// when it starts), unless one is kept there already.
///
/// # Errors
/// The I/O error; `AlreadyExists` when another id is kept there already.
pub fn keep_worker_id(data_dir: &Path, worker_id: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(data_dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(worker_id_file(data_dir))?
        .write_all(format!("{worker_id}\n").as_bytes())
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/flare-launcher"),
        None => PathBuf::from(".flare-launcher"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[nats]\nurl = \"nats://file:4222\"\ntoken = \"t\"\n[worker]\npool = \"gpu\"\nmax_jobs = 5\ndrain_timeout_s = 7\nretention_s = 3600\nmax_request_bytes = 4096"
        )
        .unwrap();
        let global = GlobalArgs {
            config: Some(file.path().to_owned()),
            nats: NatsArgs {
                url: Some("nats://flag:4222".into()),
                ..NatsArgs::default()
            },
            ..GlobalArgs::default()
        };
        let worker = WorkerArgs {
            max_jobs: Some(9),
            ..WorkerArgs::default()
        };
        let settings = Settings::load(global, worker).unwrap();
        let config = settings.worker_config();
        assert_eq!(config.nats.url.as_deref(), Some("nats://flag:4222"));
        assert_eq!(config.nats.token.as_deref(), Some("t"));
        assert_eq!(config.pool, "gpu");
        assert_eq!(config.max_jobs, 9);
        assert_eq!(config.drain_timeout, Duration::from_secs(7));
        assert_eq!(config.ack_wait, Duration::from_secs(DEFAULT_ACK_WAIT_S));
        assert_eq!(config.max_request_bytes, 4096);
        assert_eq!(config.retention, Duration::from_secs(3600));
        assert_eq!(config.subject_prefix, DEFAULT_SUBJECT_PREFIX);
        assert_eq!(config.backend, BackendKind::Process);
    }

    /// The worker configuration from `worker` (flags) over the config file `path`.
    fn load_with_file(path: &Path, worker: WorkerArgs) -> WorkerConfig {
        let global = GlobalArgs {
            config: Some(path.to_owned()),
            ..GlobalArgs::default()
        };
        Settings::load(global, worker).unwrap().worker_config()
    }

    #[test]
    fn the_job_env_lists_are_one_setting_across_layers() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[worker]\njob_user = \"nobody:nogroup\"\njob_env_deny = [\"AWS_*\"]"
        )
        .unwrap();
        let load = |worker| load_with_file(file.path(), worker);
        let from_file = load(WorkerArgs::default());
        assert_eq!(from_file.job_user.as_deref(), Some("nobody:nogroup"));
        assert_eq!(from_file.job_env_deny, Some(vec!["AWS_*".to_string()]));
        assert_eq!(from_file.job_env_allow, None);
        let flag = load(WorkerArgs {
            job_env_allow: Some(vec!["PATH".into()]),
            ..WorkerArgs::default()
        });
        assert_eq!(flag.job_env_allow, Some(vec!["PATH".to_string()]));
        assert_eq!(flag.job_env_deny, None, "the file's deny-list gives way");
    }

    #[test]
    fn backends_and_the_docker_table_merge_like_every_option() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[worker]\nbackends = [\"docker\", \"process\"]\n[docker]\nnetwork = \"jobs\"\npull = \"never\"\nkeep_s = 60"
        )
        .unwrap();
        let load = |worker| load_with_file(file.path(), worker);
        let from_file = load(WorkerArgs::default());
        assert_eq!(
            from_file.backends,
            [BackendKind::Docker, BackendKind::Process]
        );
        assert_eq!(from_file.backend, BackendKind::Docker, "the first listed");
        assert_eq!(from_file.docker.network.as_deref(), Some("jobs"));
        assert_eq!(from_file.docker.pull, PullPolicy::Never);
        assert_eq!(from_file.docker.keep, Duration::from_secs(60));
        assert_eq!(from_file.docker.pids_limit, docker::DEFAULT_PIDS_LIMIT);
        assert!(from_file.validate().is_ok());
        let flags = load(WorkerArgs {
            backend: Some(BackendKind::Process),
            docker: DockerArgs {
                keep_s: Some(5),
                ..DockerArgs::default()
            },
            ..WorkerArgs::default()
        });
        assert_eq!(flags.backend, BackendKind::Process);
        assert_eq!(flags.docker.keep, Duration::from_secs(5));
        assert_eq!(flags.docker.network.as_deref(), Some("jobs"));
        let alone = WorkerConfig::new("nats://127.0.0.1:4222", PathBuf::from("/tmp/x"));
        assert_eq!(alone.backends, [BackendKind::Process]);
        let mut outside = alone.clone();
        outside.backend = BackendKind::Docker;
        assert!(
            outside.validate().is_err(),
            "the default must be a backend of the worker"
        );
    }

    #[test]
    fn job_cgroups_are_off_unless_asked_for() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[worker]\njob_cgroups = true").unwrap();
        let from_file = GlobalArgs {
            config: Some(file.path().to_owned()),
            ..GlobalArgs::default()
        };
        let on = Settings::load(from_file, WorkerArgs::default()).unwrap();
        assert!(on.worker_config().job_cgroups);
        let off = Settings::load(GlobalArgs::default(), WorkerArgs::default()).unwrap();
        assert!(!off.worker_config().job_cgroups);
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[worker]\nmax_job = 5").unwrap();
        let global = GlobalArgs {
            config: Some(file.path().to_owned()),
            ..GlobalArgs::default()
        };
        let err = Settings::load(global, WorkerArgs::default()).unwrap_err();
        assert!(err.to_string().contains("max_job"), "{err}");
    }

    #[test]
    fn resource_flags_beat_the_resources_table() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[resources]\npolicy = \"gpu\"\ngpus = 2\ngpu_naming = \"uuid\""
        )
        .unwrap();
        let flags = WorkerArgs {
            resources: ResourceArgs {
                gpus: Some("1,3".parse().unwrap()),
                ..ResourceArgs::default()
            },
            ..WorkerArgs::default()
        };
        let config = load_with_file(file.path(), flags).resources;
        assert_eq!(config.policy, ResourcePolicyKind::Gpu);
        assert_eq!(config.gpus, Some(GpuSelection::Indices(vec![1, 3])));
        assert_eq!(
            config.gpu_naming,
            crate::backend::process::gpu_env::GpuNaming::Uuid
        );
        assert!(!config.ignore_host);
    }

    #[test]
    fn the_example_config_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
        let global = GlobalArgs {
            config: Some(example),
            ..GlobalArgs::default()
        };
        let settings = Settings::load(global, WorkerArgs::default()).unwrap();
        let config = settings.worker_config();
        assert_eq!(config.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(config.pool, DEFAULT_POOL);
        assert_eq!(config.max_jobs, DEFAULT_MAX_JOBS);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_worker_without_an_id_keeps_the_one_chosen_in_its_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkerConfig::new("nats://127.0.0.1:4222", dir.path().join("data"));
        assert!(first.keep_worker_id);
        keep_worker_id(&first.data_dir, &first.worker_id).unwrap();
        let again = WorkerConfig::new("nats://127.0.0.1:4222", dir.path().join("data"));
        assert_eq!(first.worker_id, again.worker_id);
        assert!(!again.keep_worker_id);
        assert!(keep_worker_id(&again.data_dir, "other").is_err());
        assert!(check_token("worker id", &first.worker_id).is_ok());
        let elsewhere = WorkerConfig::new("nats://127.0.0.1:4222", dir.path().join("other"));
        assert_ne!(first.worker_id, elsewhere.worker_id);
    }

    #[test]
    fn default_worker_ids_are_valid_tokens_and_differ() {
        let a = default_worker_id();
        assert!(check_token("worker id", &a).is_ok(), "{a}");
        assert_ne!(a, default_worker_id());
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WorkerConfig::new("nats://127.0.0.1:4222", dir.path().to_owned());
        assert!(config.validate().is_ok());
        config.pool = "a.b".into();
        assert!(config.validate().is_err());
        config.pool = "p".into();
        config.subject_prefix = "a..b".into();
        assert!(config.validate().is_err());
        config.subject_prefix = "a.*".into();
        assert!(config.validate().is_err());
        config.subject_prefix = "a.b".into();
        config.max_jobs = 0;
        assert!(config.validate().is_err());
        config.max_jobs = 1;
        config.max_request_bytes = 256;
        assert!(config.validate().is_err());
        config.max_request_bytes = 1024;
        config.retention = Duration::ZERO;
        assert!(config.validate().is_err());
        config.retention = Duration::from_secs(MAX_RETENTION_S + 1);
        assert!(config.validate().is_err());
        config.retention = Duration::from_secs(1);
        assert!(config.validate().is_ok());
    }
}
