//! The Docker backend's options: flags `--docker-*`, variables `FLARE_DOCKER_*`
//! and the `[docker]` table of the config file, merged like every other option
//! (flag > environment > file > default).

pub use crate::backend::docker::credentials::RegistryLogin;
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
/// `[docker]` table). Each flag has an id of its own (its long name), so that
/// none shadows a global option of the same field name (`user` of NATS).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerArgs {
    /// Docker engine address (unix:///var/run/docker.sock, tcp://HOST:PORT) [default: DOCKER_HOST, else the local socket]
    #[arg(id = "docker-host", long = "docker-host", env = "FLARE_DOCKER_HOST")]
    pub host: Option<String>,
    /// Network containers join [default: the engine's default bridge]
    #[arg(
        id = "docker-network",
        long = "docker-network",
        env = "FLARE_DOCKER_NETWORK"
    )]
    pub network: Option<String>,
    /// When images are pulled: always, if-missing or never [default: if-missing]
    #[arg(
        id = "docker-pull",
        long = "docker-pull",
        env = "FLARE_DOCKER_PULL",
        value_enum
    )]
    pub pull: Option<PullPolicy>,
    /// Most processes in one container [default: 4096]
    #[arg(
        id = "docker-pids-limit",
        long = "docker-pids-limit",
        env = "FLARE_DOCKER_PIDS_LIMIT"
    )]
    pub pids_limit: Option<i64>,
    /// Seconds an ended job's container is kept (for debugging) before it is removed [default: 0]
    #[arg(
        id = "docker-keep-s",
        long = "docker-keep-s",
        env = "FLARE_DOCKER_KEEP_S"
    )]
    pub keep_s: Option<u64>,
    /// Host directories below which jobs may mount host paths, comma-separated [default: none, no host mounts]
    #[arg(
        id = "docker-host-roots",
        long = "docker-host-roots",
        env = "FLARE_DOCKER_HOST_ROOTS",
        value_delimiter = ','
    )]
    pub host_roots: Option<Vec<PathBuf>>,
    /// Directory whose files `secret:NAME` mounts give jobs, read-only [default: none, no secret mounts]
    #[arg(
        id = "docker-secrets-dir",
        long = "docker-secrets-dir",
        env = "FLARE_DOCKER_SECRETS_DIR"
    )]
    pub secrets_dir: Option<PathBuf>,
    /// User containers run as, UID[:GID] [default: the image's]
    #[arg(
        id = "docker-user",
        long = "docker-user",
        env = "FLARE_DOCKER_USER",
        value_name = "UID[:GID]"
    )]
    pub user: Option<String>,
    /// Size of a container's /dev/shm in MiB [default: the engine's, 64]
    #[arg(
        id = "docker-shm-size-mb",
        long = "docker-shm-size-mb",
        env = "FLARE_DOCKER_SHM_SIZE_MB"
    )]
    pub shm_size_mb: Option<u64>,
    /// IPC mode of containers: private, shareable, host or none [default: the engine's]
    #[arg(id = "docker-ipc", long = "docker-ipc", env = "FLARE_DOCKER_IPC")]
    pub ipc: Option<String>,
    /// Resource limits of containers, NAME=SOFT[:HARD], comma-separated (e.g. nofile=1024:4096) [default: the engine's]
    #[arg(
        id = "docker-ulimits",
        long = "docker-ulimits",
        env = "FLARE_DOCKER_ULIMITS",
        value_delimiter = ','
    )]
    pub ulimits: Option<Vec<String>>,
    /// Host directory of the site's NVFlare workspace: each job gets its folder JOB_ID there, read-write, at the same path [default: none]
    #[arg(
        id = "docker-workspace",
        long = "docker-workspace",
        env = "FLARE_DOCKER_WORKSPACE"
    )]
    pub workspace: Option<PathBuf>,
    /// Folders of the workspace every job also gets, read-only, comma-separated [default: startup,local]
    #[arg(
        id = "docker-workspace-read-only",
        long = "docker-workspace-read-only",
        env = "FLARE_DOCKER_WORKSPACE_READ_ONLY",
        value_delimiter = ','
    )]
    pub workspace_read_only: Option<Vec<String>>,
    /// Docker config.json whose `auths`, `credHelpers` or `credsStore` give registry credentials for pulls [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(
        id = "docker-auth-file",
        long = "docker-auth-file",
        env = "FLARE_DOCKER_AUTH_FILE"
    )]
    pub auth_file: Option<PathBuf>,
    /// Registry logins for pulls, REGISTRY=USER:PASSWORD_FILE, comma-separated; they come before the auth file's [default: none]
    #[arg(
        id = "docker-registry-login",
        long = "docker-registry-login",
        env = "FLARE_DOCKER_REGISTRY_LOGIN",
        value_delimiter = ','
    )]
    pub registry_logins: Option<Vec<String>>,
    /// GPUs a job gets when its request names none (`resources.gpus`) [default: 0]
    #[arg(id = "docker-gpus", long = "docker-gpus", env = "FLARE_DOCKER_GPUS")]
    pub gpus: Option<u32>,
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
            user: self.user.or(fallback.user),
            shm_size_mb: self.shm_size_mb.or(fallback.shm_size_mb),
            ipc: self.ipc.or(fallback.ipc),
            ulimits: self.ulimits.or(fallback.ulimits),
            gpus: self.gpus.or(fallback.gpus),
            auth_file: self.auth_file.or(fallback.auth_file),
            registry_logins: self.registry_logins.or(fallback.registry_logins),
            workspace: self.workspace.or(fallback.workspace),
            workspace_read_only: self.workspace_read_only.or(fallback.workspace_read_only),
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
            user: self.user.clone(),
            shm_size_mb: self.shm_size_mb,
            ipc: self.ipc.clone(),
            ulimits: self.ulimits.clone().unwrap_or_default(),
            gpus: self.gpus.unwrap_or(0),
            auth_file: self.auth_file.clone(),
            registry_logins: self.registry_logins.clone().unwrap_or_default(),
            workspace: self.workspace.clone(),
            workspace_read_only: self
                .workspace_read_only
                .clone()
                .unwrap_or_else(|| vec!["startup".into(), "local".into()]),
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
    /// `UID[:GID]` containers run as; `None`: the image's user.
    pub user: Option<String>,
    /// Size of /dev/shm in MiB; `None`: the engine's.
    pub shm_size_mb: Option<u64>,
    /// IPC mode; `None`: the engine's.
    pub ipc: Option<String>,
    /// Resource limits, `NAME=SOFT[:HARD]` (checked by [`DockerConfig::validate`]).
    pub ulimits: Vec<String>,
    /// GPUs of a job whose request names none.
    pub gpus: u32,
    /// The Docker `config.json` registry credentials come from; `None`:
    /// Docker's own.
    pub auth_file: Option<PathBuf>,
    /// The worker's own registry logins, `REGISTRY=USER:PASSWORD_FILE` (checked
    /// by [`DockerConfig::validate`]), which come before the auth file's.
    pub registry_logins: Vec<String>,
    /// The site's workspace on the host, if jobs get it.
    pub workspace: Option<PathBuf>,
    /// Its folders every job gets read-only.
    pub workspace_read_only: Vec<String>,
}

impl DockerConfig {
    /// The registry logins, parsed.
    ///
    /// # Errors
    /// A message naming a login that is not `REGISTRY=USER:PASSWORD_FILE`.
    pub fn logins(&self) -> Result<Vec<RegistryLogin>, String> {
        self.registry_logins
            .iter()
            .map(|login| RegistryLogin::parse(login))
            .collect()
    }

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
        if let Some(user) = &self.user
            && !user
                .split(':')
                .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "docker user {user:?} must be UID or UID:GID (numbers)"
            ));
        }
        if let Some(ipc) = &self.ipc
            && !matches!(ipc.as_str(), "private" | "shareable" | "host" | "none")
        {
            return Err(format!(
                "docker ipc mode {ipc:?} must be private, shareable, host or none"
            ));
        }
        if let Some(root) = self.workspace.as_ref().filter(|root| !root.is_absolute()) {
            return Err(format!(
                "docker workspace {} must be an absolute path",
                root.display()
            ));
        }
        if let Some(name) = self.workspace_read_only.iter().find(|name| {
            name.is_empty() || name.contains('/') || matches!(name.as_str(), "." | "..")
        }) {
            return Err(format!(
                "docker workspace folder {name:?} must be one plain folder name"
            ));
        }
        for ulimit in &self.ulimits {
            parse_ulimit(ulimit)?;
        }
        self.logins()?;
        if self.keep > Duration::from_secs(super::MAX_RETENTION_S) {
            return Err(format!(
                "docker keep time must be at most {} s",
                super::MAX_RETENTION_S
            ));
        }
        Ok(())
    }
}

/// A resource limit `NAME=SOFT[:HARD]` (HARD defaults to SOFT) as name, soft and
/// hard.
///
/// # Errors
/// A message naming the bad limit.
pub fn parse_ulimit(text: &str) -> Result<(String, i64, i64), String> {
    let bad = || format!("docker ulimit {text:?} must be NAME=SOFT or NAME=SOFT:HARD");
    let (name, values) = text.split_once('=').ok_or_else(bad)?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(bad());
    }
    let (soft, hard) = values.split_once(':').unwrap_or((values, values));
    let soft: i64 = soft.parse().map_err(|_| bad())?;
    let hard: i64 = hard.parse().map_err(|_| bad())?;
    if soft > hard {
        return Err(format!(
            "docker ulimit {text:?}: soft limit above the hard one"
        ));
    }
    Ok((name.to_owned(), soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_users_and_ipc_modes_are_checked() {
        assert_eq!(
            parse_ulimit("nofile=1024:4096").unwrap(),
            ("nofile".into(), 1024, 4096)
        );
        assert_eq!(parse_ulimit("nproc=10").unwrap(), ("nproc".into(), 10, 10));
        for bad in ["nofile", "=1", "nofile=a", "nofile=5:1", "NOFILE=1"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
        let mut config = DockerArgs::default().config();
        assert!(config.validate().is_ok());
        config.user = Some("1000:1000".into());
        assert!(config.validate().is_ok());
        config.user = Some("root".into());
        assert!(config.validate().is_err());
        config.user = None;
        config.ipc = Some("container:x".into());
        assert!(config.validate().is_err());
    }
}
