//! Configuration: command-line flags, `FLARE_*` environment variables and an
//! optional TOML file, merged in that order of precedence over the defaults.
//!
//! Each option is declared once, in the table it belongs to ([`options`]
//! explains how): `worker` (with the options every command shares), `docker`,
//! `k8s`, `resources`, and `nats` in [`crate::nats::connect`]. Every value is
//! an `Option` so that a layer that says nothing lets the next one speak;
//! values are parsed into their types as each layer is read (a bad one names
//! its option), and defaults are applied last, in [`Settings::worker_config`]
//! and the tables' `config`. [`reference`] writes the configuration reference
//! from the declarations.

pub mod docker;
pub mod k8s;
pub mod options;
pub mod reference;
pub mod resources;
pub mod values;
pub mod worker;

use crate::nats::connect::NatsArgs;
use crate::nats::replicas::{MAX_REPLICAS, Replicas};
use crate::nats::subjects::{BadToken, check_token};
use crate::protocol::BackendKind;
use crate::supervisor::job_uids::JobUidRange;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use docker::{DockerArgs, DockerConfig, InvalidDockerConfig, PullPolicy};
pub use k8s::{InvalidK8sConfig, K8sArgs, K8sConfig};
pub use options::FileValueError;
pub use resources::{
    GpuSelection, InvalidResourceConfig, ResourceArgs, ResourceConfig, ResourcePolicyKind,
};
pub use worker::{SharedArgs, UserSpec, WorkerTableArgs};

/// Default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = crate::nats::subjects::DEFAULT_PREFIX;
/// Default worker pool.
pub const DEFAULT_POOL: &str = "default";
/// Largest `--max-jobs` accepted.
pub const MAX_MAX_JOBS: usize = 100_000;
/// Smallest `--max-request-bytes` accepted (a guard against a limit meant in KiB).
pub const MIN_MAX_REQUEST_BYTES: usize = 1024;
/// Shortest lease accepted: it is refreshed three times within it.
pub const MIN_LEASE: Duration = Duration::from_secs(3);
/// Default and longest retention of ended jobs' records and logs: as long as the
/// events stream keeps their events (7 days), so a record never outlives them.
pub const MAX_RETENTION_S: u64 = crate::nats::setup::EVENTS_MAX_AGE.as_secs();

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
    /// TOML config file with `[nats]`, `[worker]`, `[docker]`, `[k8s]` and `[resources]` tables
    #[arg(long, env = "FLARE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Subject prefix, pool and log format.
    #[command(flatten)]
    pub shared: SharedArgs,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Options of the worker, table by table.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct WorkerArgs {
    /// The worker's own options (the `[worker]` table).
    #[command(flatten)]
    pub worker: WorkerTableArgs,
    /// The Docker backend's options.
    #[command(flatten)]
    pub docker: DockerArgs,
    /// The Kubernetes backend's options.
    #[command(flatten)]
    pub k8s: K8sArgs,
    /// The resource policy's options.
    #[command(flatten)]
    pub resources: ResourceArgs,
}

impl WorkerArgs {
    /// `self`'s values where set, else `fallback`'s.
    pub fn or(self, fallback: WorkerArgs) -> WorkerArgs {
        WorkerArgs {
            worker: self.worker.over(fallback.worker),
            docker: self.docker.or(fallback.docker),
            k8s: self.k8s.or(fallback.k8s),
            resources: self.resources.or(fallback.resources),
        }
    }
}

/// The config file, every table parsed.
#[derive(Debug, Default)]
struct FileConfig {
    nats: NatsArgs,
    shared: SharedArgs,
    worker: WorkerArgs,
}

/// A value of the config file that is not one its option takes.
#[derive(Debug, thiserror::Error)]
#[error("[{table}] {key} (--{flag}): {source}")]
pub struct BadFileValue {
    /// The table.
    pub table: &'static str,
    /// The key.
    pub key: &'static str,
    /// The option's flag, without its dashes.
    pub flag: &'static str,
    /// What is wrong with the value.
    #[source]
    pub source: FileValueError,
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
    /// It is not TOML.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A table or a key no option has.
    #[error("config file {path}: unknown {what} `{name}`; known: {known}")]
    Unknown {
        /// The file.
        path: PathBuf,
        /// `table` or `key in [TABLE]`.
        what: String,
        /// The table's or key's name.
        name: String,
        /// The names that would be known there.
        known: String,
    },
    /// A table that is not one.
    #[error("config file {path}: `{table}` must be a table")]
    NotATable {
        /// The file.
        path: PathBuf,
        /// Its name.
        table: String,
    },
    /// A value of an option that is not one it takes.
    #[error("config file {path}: {source}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The option and what is wrong.
        #[source]
        source: BadFileValue,
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
        let shared = global.shared.or(file.shared);
        Ok(Settings {
            nats: global.nats.or(file.nats),
            subject_prefix: shared.subject_prefix(),
            pool: shared.pool(),
            log_format: shared.log_format(),
            worker: worker.or(file.worker),
        })
    }

    /// The worker's configuration, defaults applied.
    pub fn worker_config(&self) -> WorkerConfig {
        let w = &self.worker.worker;
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
            max_jobs: w.max_jobs(),
            drain_timeout: Duration::from_secs(w.drain_timeout_s()),
            ack_wait: Duration::from_secs(w.ack_wait_s()),
            drain: w.drain(),
            lease: Duration::from_secs(w.lease_s()),
            owner_lost_after: Duration::from_secs(w.owner_lost_after_s()),
            max_request_bytes: w.max_request_bytes(),
            replicas: w.replicas(),
            supervisor_program: default_supervisor_program(),
            retention: Duration::from_secs(w.retention_s()),
            orphan_grace: Duration::from_secs(w.orphan_grace_s()),
            job_user: w.job_user.clone(),
            job_uids: w.job_uids,
            job_env_allow: w.job_env_allow.clone(),
            job_env_deny: w.job_env_deny.clone(),
            job_cgroups: w.job_cgroups(),
            allowed_label_prefixes: w.allowed_label_prefixes.clone().unwrap_or_default(),
            allowed_label_keys: w.allowed_label_keys(),
            metrics_listen: w.metrics_listen,
            docker: self.worker.docker.config(),
            k8s: self.worker.k8s.config(),
            resources: self.worker.resources.config(),
        }
    }
}

/// This program, which the worker runs in supervisor mode for its process jobs.
fn default_supervisor_program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("flare-launcher"))
}

/// The tables of the config file.
const TABLES: [&str; 5] = ["nats", "worker", "docker", "k8s", "resources"];

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut file: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    if let Some(name) = file.keys().find(|name| !TABLES.contains(&name.as_str())) {
        return Err(ConfigError::Unknown {
            path: path.to_owned(),
            what: "table".into(),
            name: name.clone(),
            known: TABLES.join(", "),
        });
    }
    let mut table = |name: &str| match file.remove(name) {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(table)) => Ok(table),
        Some(_) => Err(ConfigError::NotATable {
            path: path.to_owned(),
            table: name.into(),
        }),
    };
    let (mut nats, mut worker, mut docker, mut k8s, mut resources) = (
        table("nats")?,
        table("worker")?,
        table("docker")?,
        table("k8s")?,
        table("resources")?,
    );
    let value = |source| ConfigError::Value {
        path: path.to_owned(),
        source,
    };
    let config = FileConfig {
        nats: NatsArgs::take_from(&mut nats).map_err(value)?,
        shared: SharedArgs::take_from(&mut worker).map_err(value)?,
        worker: WorkerArgs {
            worker: WorkerTableArgs::take_from(&mut worker).map_err(value)?,
            docker: DockerArgs::take_from(&mut docker).map_err(value)?,
            k8s: K8sArgs::take_from(&mut k8s).map_err(value)?,
            resources: ResourceArgs::take_from(&mut resources).map_err(value)?,
        },
    };
    let left = [
        ("nats", nats, NatsArgs::options()),
        (
            "worker",
            worker,
            [SharedArgs::options(), WorkerTableArgs::options()].concat(),
        ),
        ("docker", docker, DockerArgs::options()),
        ("k8s", k8s, K8sArgs::options()),
        ("resources", resources, ResourceArgs::options()),
    ];
    for (table, rest, options) in left {
        if let Some(key) = rest.keys().next() {
            let known: Vec<&str> = options.iter().map(|option| option.key).collect();
            return Err(ConfigError::Unknown {
                path: path.to_owned(),
                what: format!("key in [{table}]"),
                name: key.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(config)
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
    /// At shutdown, wait for the jobs (up to `drain_timeout`) instead of
    /// handing them over to the pool.
    pub drain: bool,
    /// How long the worker's lease lives unless refreshed.
    pub lease: Duration,
    /// How long after its worker's lease lapsed a process job is ended `lost`.
    pub owner_lost_after: Duration,
    /// Largest launch request decoded, in bytes.
    pub max_request_bytes: usize,
    /// Copies a NATS cluster keeps of each stream and bucket.
    pub replicas: usize,
    /// The `flare-launcher` program run as the supervisor of process jobs
    /// (`flare-launcher supervise`): this program, unless a test or an embedding
    /// program says otherwise.
    pub supervisor_program: PathBuf,
    /// How long the records and logs of ended jobs, and tombstones, are kept.
    pub retention: Duration,
    /// How old a workload of this worker that no job claims gets before it is
    /// removed.
    pub orphan_grace: Duration,
    /// The user (and group) process jobs run as; `None`: the worker's user.
    pub job_user: Option<UserSpec>,
    /// Each process job under a user id of its own from this range.
    pub job_uids: Option<JobUidRange>,
    /// The only worker variables jobs inherit (names, `PREFIX*`), if given.
    pub job_env_allow: Option<Vec<String>>,
    /// Worker variables jobs do not inherit (names, `PREFIX*`), if given.
    pub job_env_deny: Option<Vec<String>>,
    /// Each process job in a cgroup of its own, where the host allows it.
    pub job_cgroups: bool,
    /// A container job's label keys may start with these.
    pub allowed_label_prefixes: Vec<String>,
    /// A container job's labels may have these keys.
    pub allowed_label_keys: Vec<String>,
    /// Where the worker answers probes over HTTP; `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
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
            worker: WorkerTableArgs {
                data_dir: Some(data_dir),
                ..WorkerTableArgs::default()
            },
            ..WorkerArgs::default()
        };
        Settings::load(global, worker)
            .expect("no config file is read")
            .worker_config()
    }

    /// Checks values the types allow but the worker cannot use.
    ///
    /// # Errors
    /// An [`InvalidConfig`] naming the bad value.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check_token("pool", &self.pool)?;
        check_token("worker id", &self.worker_id)?;
        if self.subject_prefix.is_empty()
            || self
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(InvalidConfig::SubjectPrefix(self.subject_prefix.clone()));
        }
        if !(1..=MAX_MAX_JOBS).contains(&self.max_jobs) {
            return Err(InvalidConfig::MaxJobs);
        }
        if self.ack_wait.is_zero() {
            return Err(InvalidConfig::AckWait);
        }
        if self.lease < MIN_LEASE {
            return Err(InvalidConfig::Lease);
        }
        if self.max_request_bytes < MIN_MAX_REQUEST_BYTES {
            return Err(InvalidConfig::MaxRequestBytes);
        }
        if Replicas::new(self.replicas).is_none() {
            return Err(InvalidConfig::Replicas);
        }
        if !self.backends.contains(&self.backend) {
            return Err(InvalidConfig::DefaultBackend(self.backend));
        }
        self.docker.validate()?;
        self.k8s.validate()?;
        self.resources.validate()?;
        if !(1..=MAX_RETENTION_S).contains(&self.retention.as_secs()) {
            return Err(InvalidConfig::Retention);
        }
        Ok(())
    }
}

/// A worker setting the types allow but the worker cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidConfig {
    /// The pool or worker id cannot be a subject token.
    #[error(transparent)]
    Token(#[from] BadToken),
    /// The subject prefix is not a run of plain tokens.
    #[error("subject prefix {0:?} must be dot-separated non-empty tokens without wildcards")]
    SubjectPrefix(String),
    /// Too few or too many jobs at once.
    #[error("max jobs must be between 1 and {max}", max = MAX_MAX_JOBS)]
    MaxJobs,
    /// No time to acknowledge a request.
    #[error("ack wait must be at least 1 s")]
    AckWait,
    /// A lease too short to be refreshed in time.
    #[error("the lease must be at least {} s", MIN_LEASE.as_secs())]
    Lease,
    /// Requests could not say what the protocol lets them.
    #[error("max request bytes must be at least {min}", min = MIN_MAX_REQUEST_BYTES)]
    MaxRequestBytes,
    /// More replicas than JetStream keeps, or none.
    #[error("replicas must be between 1 and {max}", max = MAX_REPLICAS)]
    Replicas,
    /// The backend for requests that name none is not one of the worker's.
    #[error("the backend for requests that name none ({0}) must be one of the worker's backends")]
    DefaultBackend(BackendKind),
    /// The default backend did not start among the worker's backends.
    #[error("the default backend {0} is not among the worker's backends")]
    DefaultBackendNotStarted(BackendKind),
    /// A Docker setting.
    #[error(transparent)]
    Docker(#[from] InvalidDockerConfig),
    /// A Kubernetes setting.
    #[error(transparent)]
    K8s(#[from] InvalidK8sConfig),
    /// A resource setting.
    #[error(transparent)]
    Resources(#[from] InvalidResourceConfig),
    /// Events kept too briefly or too long.
    #[error(
        "retention must be between 1 and {max} s (how long the events stream keeps events)",
        max = MAX_RETENTION_S
    )]
    Retention,
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
        let worker = worker_flags(WorkerTableArgs {
            max_jobs: Some(9),
            ..WorkerTableArgs::default()
        });
        let settings = Settings::load(global, worker).unwrap();
        let config = settings.worker_config();
        assert_eq!(config.nats.url.as_deref(), Some("nats://flag:4222"));
        assert_eq!(config.nats.token.as_deref(), Some("t"));
        assert_eq!(config.pool, "gpu");
        assert_eq!(config.max_jobs, 9);
        assert_eq!(config.drain_timeout, Duration::from_secs(7));
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.max_request_bytes, 4096);
        assert_eq!(config.retention, Duration::from_secs(3600));
        assert_eq!(config.subject_prefix, DEFAULT_SUBJECT_PREFIX);
        assert_eq!(config.backend, BackendKind::Process);
    }

    /// Flags of the `[worker]` table alone.
    fn worker_flags(worker: WorkerTableArgs) -> WorkerArgs {
        WorkerArgs {
            worker,
            ..WorkerArgs::default()
        }
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
        assert_eq!(
            from_file.job_user.map(|user| user.to_string()).as_deref(),
            Some("nobody:nogroup")
        );
        assert_eq!(from_file.job_env_deny, Some(vec!["AWS_*".to_string()]));
        assert_eq!(from_file.job_env_allow, None);
        let flag = load(worker_flags(WorkerTableArgs {
            job_env_allow: Some(vec!["PATH".into()]),
            ..WorkerTableArgs::default()
        }));
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
        assert_eq!(from_file.docker.pids_limit, 4096);
        assert!(from_file.validate().is_ok());
        let flags = load(WorkerArgs {
            worker: WorkerTableArgs {
                backend: Some(BackendKind::Process),
                ..WorkerTableArgs::default()
            },
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
        for (text, named) in [
            ("[dokcer]\nnetwork = \"x\"", "table `dokcer`"),
            (
                "[docker]\npull_policy = \"never\"",
                "key in [docker] `pull_policy`",
            ),
            ("[nats]\nnats_url = \"x\"", "key in [nats] `nats_url`"),
            ("[k8s]\nnamespaces = \"x\"", "key in [k8s] `namespaces`"),
            ("[resources]\ngpu = 1", "key in [resources] `gpu`"),
            ("docker = 1", "`docker` must be a table"),
        ] {
            let err = load_file(text).unwrap_err().to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    /// The settings from a config file holding `text`, and no flags.
    fn load_file(text: &str) -> Result<Settings, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{text}").unwrap();
        let global = GlobalArgs {
            config: Some(file.path().to_owned()),
            ..GlobalArgs::default()
        };
        Settings::load(global, WorkerArgs::default())
    }

    #[test]
    fn a_bad_value_in_the_file_names_its_table_key_and_flag() {
        let err = load_file("[worker]\nmax_jobs = \"five\"").unwrap_err();
        assert!(
            err.to_string().contains("[worker] max_jobs (--max-jobs)"),
            "{err}"
        );
        let err = load_file("[docker]\nulimits = [\"nofile=1:2\", \"x\"]").unwrap_err();
        assert!(
            err.to_string()
                .contains("[docker] ulimits (--docker-ulimits): \"x\" must be NAME=SOFT"),
            "{err}"
        );
    }

    #[test]
    fn shared_options_come_from_the_worker_table() {
        let settings =
            load_file("[worker]\nsubject_prefix = \"a.b\"\nlog_format = \"json\"").unwrap();
        assert_eq!(settings.subject_prefix, "a.b");
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.pool, DEFAULT_POOL);
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
        assert_eq!(config.gpu_naming, resources::GpuNaming::Uuid);
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
        assert_eq!(config.max_jobs, WorkerTableArgs::default().max_jobs());
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
        config.replicas = 0;
        assert_eq!(config.validate(), Err(InvalidConfig::Replicas));
        config.replicas = MAX_REPLICAS + 1;
        assert_eq!(config.validate(), Err(InvalidConfig::Replicas));
        config.replicas = 3;
        config.retention = Duration::ZERO;
        assert!(config.validate().is_err());
        config.retention = Duration::from_secs(MAX_RETENTION_S + 1);
        assert!(config.validate().is_err());
        config.retention = Duration::from_secs(1);
        assert!(config.validate().is_ok());
    }
}
