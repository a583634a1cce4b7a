//! The Docker backend's options: flags `--docker-*`, variables `FLARE_DOCKER_*`
//! and the `[docker]` table of the config file, merged like every other option
//! (flag > environment > file > default).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Default most processes a container may hold (a fork bomb stops there).
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

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

/// The Docker options as each layer gives them (flags and environment, or the
/// `[docker]` table).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerArgs {
    /// Docker engine address (unix:///var/run/docker.sock, tcp://HOST:PORT) [default: DOCKER_HOST, else the local socket]
    #[arg(long = "docker-host", env = "FLARE_DOCKER_HOST")]
    pub host: Option<String>,
    /// Network containers join [default: the engine's default bridge]
    #[arg(long = "docker-network", env = "FLARE_DOCKER_NETWORK")]
    pub network: Option<String>,
    /// When images are pulled: always, if-missing or never [default: if-missing]
    #[arg(long = "docker-pull", env = "FLARE_DOCKER_PULL", value_enum)]
    pub pull: Option<PullPolicy>,
    /// Most processes in one container [default: 4096]
    #[arg(long = "docker-pids-limit", env = "FLARE_DOCKER_PIDS_LIMIT")]
    pub pids_limit: Option<i64>,
    /// Seconds an ended job's container is kept (for debugging) before it is removed [default: 0]
    #[arg(long = "docker-keep-s", env = "FLARE_DOCKER_KEEP_S")]
    pub keep_s: Option<u64>,
    /// Host directories below which jobs may mount host paths, comma-separated [default: none, no host mounts]
    #[arg(
        long = "docker-host-roots",
        env = "FLARE_DOCKER_HOST_ROOTS",
        value_delimiter = ','
    )]
    pub host_roots: Option<Vec<PathBuf>>,
    /// Directory whose files `secret:NAME` mounts give jobs, read-only [default: none, no secret mounts]
    #[arg(long = "docker-secrets-dir", env = "FLARE_DOCKER_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
}

impl DockerArgs {
    /// `self`'s values where set, else `fallback`'s.
    pub fn or(self, fallback: DockerArgs) -> DockerArgs {
        DockerArgs {
            host: self.host.or(fallback.host),
            network: self.network.or(fallback.network),
            pull: self.pull.or(fallback.pull),
            pids_limit: self.pids_limit.or(fallback.pids_limit),
            keep_s: self.keep_s.or(fallback.keep_s),
            host_roots: self.host_roots.or(fallback.host_roots),
            secrets_dir: self.secrets_dir.or(fallback.secrets_dir),
        }
    }

    /// The resolved options, defaults applied.
    pub fn config(&self) -> DockerConfig {
        DockerConfig {
            host: self.host.clone(),
            network: self.network.clone(),
            pull: self.pull.unwrap_or_default(),
            pids_limit: self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT),
            keep: Duration::from_secs(self.keep_s.unwrap_or(0)),
            host_roots: self.host_roots.clone().unwrap_or_default(),
            secrets_dir: self.secrets_dir.clone(),
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
    /// Host directories below which jobs may mount host paths.
    pub host_roots: Vec<PathBuf>,
    /// Where `secret:NAME` mounts come from.
    pub secrets_dir: Option<PathBuf>,
}

impl DockerConfig {
    /// Checks values the types allow but the backend cannot use.
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.pids_limit < 1 {
            return Err("docker pids limit must be at least 1".into());
        }
        if let Some(root) = self.host_roots.iter().find(|root| !root.is_absolute()) {
            return Err(format!(
                "docker host root {} must be an absolute path",
                root.display()
            ));
        }
        if self.keep > Duration::from_secs(super::MAX_RETENTION_S) {
            return Err(format!(
                "docker keep time must be at most {} s",
                super::MAX_RETENTION_S
            ));
        }
        Ok(())
    }
}
