//! The Docker backend's options: flags `--docker-*`, variables `FLARE_DOCKER_*`
//! and the `[docker]` table of the config file, merged like every other option
//! (flag > environment > file > default).

use super::options::{options, value_by_choice, value_by_text};
use super::values::{BadValue, Capability, JobLimits, NumericUser};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// When a job's image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Before every job.
    Always,
    /// When the engine does not have it.
    #[default]
    IfMissing,
    /// Never: a missing image ends the job in `error`.
    Never,
}

/// The IPC mode of containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    /// An IPC namespace of its own.
    Private,
    /// Its own, which other containers may share.
    Shareable,
    /// The host's.
    Host,
    /// Its own, without /dev/shm.
    None,
}

impl IpcMode {
    /// The engine's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            IpcMode::Private => "private",
            IpcMode::Shareable => "shareable",
            IpcMode::Host => "host",
            IpcMode::None => "none",
        }
    }
}

/// Where jobs' secret values are written by default: on the tmpfs Linux
/// mounts at /dev/shm.
const DEFAULT_SECRETS_TMPFS: &str = "/dev/shm/flare-launcher-secrets";

options! {
    /// The Docker options as each layer gives them (flags and environment, or the
    /// `[docker]` table).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct DockerArgs in "docker" {
        /// Docker engine address (unix:///var/run/docker.sock, tcp://HOST:PORT)
        host: String {
            flag: "docker-host",
            env: "FLARE_DOCKER_HOST",
            default: text("DOCKER_HOST, else unix:///var/run/docker.sock"),
            example: "\"unix:///var/run/docker.sock\"",
        },
        /// Network containers join
        network: String {
            flag: "docker-network",
            env: "FLARE_DOCKER_NETWORK",
            default: text("the engine's default bridge"),
            example: "\"flare-jobs\"",
        },
        /// When images are pulled: always, if-missing or never
        pull: PullPolicy {
            flag: "docker-pull",
            env: "FLARE_DOCKER_PULL",
            default: value(PullPolicy::IfMissing),
            clap: (value_enum),
        },
        /// Most processes in one container
        pids_limit: i64 {
            flag: "docker-pids-limit",
            env: "FLARE_DOCKER_PIDS_LIMIT",
            default: value(4096),
        },
        /// Seconds an ended job's container is kept (for debugging) before it is removed
        keep_s: u64 {
            flag: "docker-keep-s",
            env: "FLARE_DOCKER_KEEP_S",
            default: value(0),
        },
        /// Seconds a stop keeps trying, past the job's grace, until the container's end is confirmed; then the job ends lost (StopUnconfirmed)
        stop_patience_s: u64 {
            flag: "docker-stop-patience-s",
            env: "FLARE_DOCKER_STOP_PATIENCE_S",
            default: value(120),
        },
        /// Absolute host directories below which `host:` mounts of jobs may be, comma-separated
        host_roots: Vec<PathBuf> {
            flag: "docker-host-roots",
            env: "FLARE_DOCKER_HOST_ROOTS",
            default: text("none, no host mounts"),
            example: "[\"/srv/flare/workspace\"]",
            clap: (value_delimiter = ','),
        },
        /// Named volumes a job may mount (`pvc:NAME`), exact names or globs (`*`, `?`), comma-separated
        allowed_volumes: Vec<String> {
            flag: "docker-allowed-volumes",
            env: "FLARE_DOCKER_ALLOWED_VOLUMES",
            default: text("none, no volume mounts"),
            example: "[\"fl-data\", \"fl-models-*\"]",
            clap: (value_delimiter = ','),
        },
        /// Directory whose files `secret:NAME` mounts give jobs, read-only
        secrets_dir: PathBuf {
            flag: "docker-secrets-dir",
            env: "FLARE_DOCKER_SECRETS_DIR",
            default: text("none, no secret mounts"),
            example: "\"/etc/flare-launcher/job-secrets\"",
        },
        /// Folder on a tmpfs of the worker's host where each job's `secret_env` is written, one file per variable, for its container to mount read-only; the worker refuses to start when it is not on a tmpfs
        secrets_tmpfs: PathBuf {
            flag: "docker-secrets-tmpfs",
            env: "FLARE_DOCKER_SECRETS_TMPFS",
            default: value(PathBuf::from(DEFAULT_SECRETS_TMPFS)),
        },
        /// User containers run as, UID[:GID]
        user: NumericUser {
            flag: "docker-user",
            env: "FLARE_DOCKER_USER",
            default: text("the worker's own uid:gid"),
            example: "\"1000:1000\"",
            clap: (value_name = "UID[:GID]"),
        },
        /// Capabilities containers get back (all are dropped), comma-separated (NET_BIND_SERVICE)
        cap_add: Vec<Capability> {
            flag: "docker-cap-add",
            env: "FLARE_DOCKER_CAP_ADD",
            default: text("none"),
            example: "[\"NET_BIND_SERVICE\"]",
            clap: (value_delimiter = ','),
        },
        /// Containers get a read-only root file system, with a writable tmpfs at /tmp
        read_only_root: bool {
            flag: "docker-read-only-root",
            env: "FLARE_DOCKER_READ_ONLY_ROOT",
            default: value(false),
        },
        /// Memory limit in MiB of a container whose request names none (`resources.memory_mb`)
        memory_mb: u64 {
            flag: "docker-memory-mb",
            env: "FLARE_DOCKER_MEMORY_MB",
            default: text("none, no limit"),
            example: "8192",
        },
        /// CPU limit of a container whose request names none (`resources.cpus`)
        cpus: f64 {
            flag: "docker-cpus",
            env: "FLARE_DOCKER_CPUS",
            default: text("none, no limit"),
            example: "4.0",
        },
        /// Size of a container's /dev/shm in MiB
        shm_size_mb: u64 {
            flag: "docker-shm-size-mb",
            env: "FLARE_DOCKER_SHM_SIZE_MB",
            default: text("the engine's, 64"),
            example: "1024",
        },
        /// IPC mode of containers: private, shareable, host or none
        ipc: IpcMode {
            flag: "docker-ipc",
            env: "FLARE_DOCKER_IPC",
            default: text("the engine's"),
            example: "\"private\"",
            clap: (value_enum),
        },
        /// Resource limits of containers, NAME=SOFT[:HARD], comma-separated (e.g. nofile=1024:4096)
        ulimits: Vec<Ulimit> {
            flag: "docker-ulimits",
            env: "FLARE_DOCKER_ULIMITS",
            default: text("the engine's"),
            example: "[\"nofile=65536:65536\"]",
            clap: (value_delimiter = ','),
        },
        /// Host directory of the site's NVFlare workspace: each job gets its folder JOB_ID there (made if missing), read-write, at the same path
        workspace: PathBuf {
            flag: "docker-workspace",
            env: "FLARE_DOCKER_WORKSPACE",
            default: text("none"),
            example: "\"/srv/flare/site-1\"",
        },
        /// Folders of the workspace every job also gets (those that exist), read-only, at the same path, comma-separated
        workspace_read_only: Vec<String> {
            flag: "docker-workspace-read-only",
            env: "FLARE_DOCKER_WORKSPACE_READ_ONLY",
            default: value(vec!["startup".into(), "local".into()]),
            clap: (value_delimiter = ','),
        },
        /// Docker config.json whose `auths`, `credHelpers` or `credsStore` give registry credentials for pulls
        auth_file: PathBuf {
            flag: "docker-auth-file",
            env: "FLARE_DOCKER_AUTH_FILE",
            default: text("$DOCKER_CONFIG/config.json, else ~/.docker/config.json"),
            example: "\"/etc/flare-launcher/docker-config.json\"",
        },
        /// Registry logins for pulls, REGISTRY=USER:PASSWORD_FILE (the password read from the file at each pull), comma-separated; they come before the auth file's
        registry_logins: Vec<RegistryLogin> {
            flag: "docker-registry-login",
            env: "FLARE_DOCKER_REGISTRY_LOGIN",
            default: text("none"),
            example: "[\"registry.example.org=flare:/etc/flare-launcher/registry-password\"]",
            clap: (value_delimiter = ','),
        },
        /// GPUs a job gets when its request names none (`resources.gpus`), under the best-effort resource policy (under gpu, such a request gets none)
        gpus: u32 {
            flag: "docker-gpus",
            env: "FLARE_DOCKER_GPUS",
            default: value(0),
        },
    }
}

impl DockerArgs {
    /// The resolved options, defaults applied.
    pub fn config(&self) -> DockerConfig {
        DockerConfig {
            host: self.host.clone(),
            network: self.network.clone(),
            pull: self.pull(),
            pids_limit: self.pids_limit(),
            keep: Duration::from_secs(self.keep_s()),
            stop_patience: Duration::from_secs(self.stop_patience_s()),
            host_roots: self.host_roots.clone().unwrap_or_default(),
            allowed_volumes: self.allowed_volumes.clone().unwrap_or_default(),
            secrets_dir: self.secrets_dir.clone(),
            secrets_tmpfs: self.secrets_tmpfs(),
            user: self.user.unwrap_or_else(NumericUser::of_this_process),
            cap_add: self.cap_add.clone().unwrap_or_default(),
            read_only_root: self.read_only_root(),
            default_limits: JobLimits {
                memory_mb: self.memory_mb,
                cpus: self.cpus,
            },
            shm_size_mb: self.shm_size_mb,
            ipc: self.ipc,
            ulimits: self.ulimits.clone().unwrap_or_default(),
            gpus: self.gpus(),
            auth_file: self.auth_file.clone(),
            registry_logins: self.registry_logins.clone().unwrap_or_default(),
            workspace: self.workspace.clone(),
            workspace_read_only: self.workspace_read_only(),
        }
    }
}

/// The Docker backend's options, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The engine's address; `None`: `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// The network containers join; `None`: the engine's default.
    pub network: Option<String>,
    /// When images are pulled.
    pub pull: PullPolicy,
    /// Most processes in one container.
    pub pids_limit: i64,
    /// How long an ended job's container is kept before it is removed.
    pub keep: Duration,
    /// How long a stop keeps trying, past the job's grace, until the container's
    /// end is confirmed.
    pub stop_patience: Duration,
    /// Host directories below which jobs may mount host paths.
    pub host_roots: Vec<PathBuf>,
    /// Named volumes jobs may mount: names or globs.
    pub allowed_volumes: Vec<String>,
    /// Where `secret:NAME` mounts come from.
    pub secrets_dir: Option<PathBuf>,
    /// Where jobs' secret values are written, on a tmpfs.
    pub secrets_tmpfs: PathBuf,
    /// The user containers run as.
    pub user: NumericUser,
    /// Capabilities containers get back.
    pub cap_add: Vec<Capability>,
    /// Whether containers get a read-only root file system (and a tmpfs at /tmp).
    pub read_only_root: bool,
    /// The limits of a container whose request names none.
    pub default_limits: JobLimits,
    /// Size of /dev/shm in MiB; `None`: the engine's.
    pub shm_size_mb: Option<u64>,
    /// IPC mode; `None`: the engine's.
    pub ipc: Option<IpcMode>,
    /// Resource limits.
    pub ulimits: Vec<Ulimit>,
    /// GPUs of a job whose request names none.
    pub gpus: u32,
    /// The Docker `config.json` registry credentials come from; `None`:
    /// Docker's own.
    pub auth_file: Option<PathBuf>,
    /// The worker's own registry logins, which come before the auth file's.
    pub registry_logins: Vec<RegistryLogin>,
    /// The site's workspace on the host, if jobs get it.
    pub workspace: Option<PathBuf>,
    /// Its folders every job gets read-only.
    pub workspace_read_only: Vec<String>,
}

/// A Docker setting the types allow but the backend cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDockerConfig {
    /// The pids limit is below 1.
    #[error("docker pids limit must be at least 1")]
    PidsLimit,
    /// A host root is relative.
    #[error("docker host root {} must be an absolute path", .0.display())]
    RelativeHostRoot(PathBuf),
    /// The workspace is relative.
    #[error("docker workspace {} must be an absolute path", .0.display())]
    RelativeWorkspace(PathBuf),
    /// The secrets folder is relative.
    #[error("docker secrets tmpfs {} must be an absolute path", .0.display())]
    RelativeSecretsTmpfs(PathBuf),
    /// A read-only workspace folder is not one plain folder name.
    #[error("docker workspace folder {0:?} must be one plain folder name")]
    WorkspaceFolder(String),
    /// Containers are kept longer than the events stream keeps events.
    #[error("docker keep time must be at most {max} s", max = super::MAX_RETENTION_S)]
    Keep,
    /// A default limit no container can be held to.
    #[error("docker memory must be at least 1 MiB and docker cpus a number above 0")]
    DefaultLimits,
}

impl DockerConfig {
    /// Checks values the types allow but the backend cannot use.
    ///
    /// # Errors
    /// An [`InvalidDockerConfig`] naming the bad value.
    pub fn validate(&self) -> Result<(), InvalidDockerConfig> {
        if self.pids_limit < 1 {
            return Err(InvalidDockerConfig::PidsLimit);
        }
        if let Some(root) = self.host_roots.iter().find(|root| !root.is_absolute()) {
            return Err(InvalidDockerConfig::RelativeHostRoot(root.clone()));
        }
        if let Some(root) = self.workspace.as_ref().filter(|root| !root.is_absolute()) {
            return Err(InvalidDockerConfig::RelativeWorkspace(root.clone()));
        }
        if !self.secrets_tmpfs.is_absolute() {
            return Err(InvalidDockerConfig::RelativeSecretsTmpfs(
                self.secrets_tmpfs.clone(),
            ));
        }
        if let Some(name) = self.workspace_read_only.iter().find(|name| {
            name.is_empty() || name.contains('/') || matches!(name.as_str(), "." | "..")
        }) {
            return Err(InvalidDockerConfig::WorkspaceFolder(name.clone()));
        }
        if self.keep > Duration::from_secs(super::MAX_RETENTION_S) {
            return Err(InvalidDockerConfig::Keep);
        }
        if !self.default_limits.is_valid() {
            return Err(InvalidDockerConfig::DefaultLimits);
        }
        Ok(())
    }
}

/// A resource limit of containers: `NAME=SOFT[:HARD]` (HARD defaults to SOFT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// The limit's name (`nofile`).
    pub name: String,
    /// The soft limit.
    pub soft: i64,
    /// The hard limit, at least the soft one.
    pub hard: i64,
}

impl FromStr for Ulimit {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let bad = || BadValue::new(text, "must be NAME=SOFT or NAME=SOFT:HARD");
        let (name, values) = text.split_once('=').ok_or_else(bad)?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(bad());
        }
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let soft: i64 = soft.parse().map_err(|_| bad())?;
        let hard: i64 = hard.parse().map_err(|_| bad())?;
        if soft > hard {
            return Err(BadValue::new(text, "has a soft limit above the hard one"));
        }
        Ok(Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

/// A registry login from the worker's configuration,
/// `REGISTRY=USER:PASSWORD_FILE`: the password stays in a file of its own
/// (never on a command line or in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The registry host (`HOST[:PORT]`, `docker.io` for Docker Hub).
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The file holding the password (a trailing newline is dropped).
    pub password_file: PathBuf,
}

impl FromStr for RegistryLogin {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let bad = || {
            BadValue::new(
                text,
                "must be REGISTRY=USER:PASSWORD_FILE (an absolute path)",
            )
        };
        let (registry, login) = text.split_once('=').ok_or_else(bad)?;
        let (username, file) = login.split_once(':').ok_or_else(bad)?;
        let password_file = PathBuf::from(file);
        if registry.is_empty() || username.is_empty() || !password_file.is_absolute() {
            return Err(bad());
        }
        Ok(RegistryLogin {
            registry: registry_host(registry).to_owned(),
            username: username.to_owned(),
            password_file,
        })
    }
}

impl fmt::Display for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.password_file.display();
        write!(f, "{}={}:{file}", self.registry, self.username)
    }
}

/// The registry a name of one stands for, as a bare host: a URL's host
/// (`https://index.docker.io/v1/`), and Docker Hub's aliases as `docker.io`.
pub fn registry_host(name: &str) -> &str {
    let host = name
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        host => host,
    }
}

/// The registry of images that name none.
pub const DOCKER_HUB: &str = "docker.io";

value_by_text!(Ulimit, RegistryLogin);
value_by_choice!(PullPolicy, IpcMode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_users_and_ipc_modes_are_checked() {
        assert_eq!(
            "nofile=1024:4096".parse(),
            Ok(Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096
            })
        );
        assert_eq!(
            "nproc=10".parse::<Ulimit>().unwrap().to_string(),
            "nproc=10:10"
        );
        for bad in ["nofile", "=1", "nofile=a", "nofile=5:1", "NOFILE=1"] {
            assert!(bad.parse::<Ulimit>().is_err(), "{bad}");
        }
        assert!(DockerArgs::default().config().validate().is_ok());
        let mut table: toml::Table = toml::from_str("ipc = \"container:x\"").unwrap();
        assert!(DockerArgs::take_from(&mut table).is_err());
        let mut table: toml::Table = toml::from_str("ipc = \"shareable\"").unwrap();
        let args = DockerArgs::take_from(&mut table).unwrap();
        assert_eq!(args.config().ipc.map(IpcMode::as_str), Some("shareable"));
    }

    #[test]
    fn registry_logins_name_a_registry_a_user_and_a_password_file() {
        let login: RegistryLogin = "https://index.docker.io/v1/=me:/run/pw".parse().unwrap();
        assert_eq!(login.registry, DOCKER_HUB);
        assert_eq!(login.username, "me");
        assert_eq!(login.password_file, PathBuf::from("/run/pw"));
        for bad in ["r=me:pw", "r=me", "=me:/pw", "r=:/pw", "r"] {
            assert!(bad.parse::<RegistryLogin>().is_err(), "{bad}");
        }
    }
}
