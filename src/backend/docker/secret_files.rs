//! A Docker job's `secret_env` as files, never in its container's
//! configuration: one file per variable (named after it, mode 0400, owned by
//! the containers' user) in a folder of the job's own on a tmpfs of the
//! worker's host, `TMPFS/worker-WORKER_ID/job-JOB_ID` (mode 0700, owned by that
//! user too), bound read-only into the container at [`SECRETS_TARGET`], which
//! the variable [`SECRETS_DIR_VAR`] names.
//!
//! The folder goes when the job is released, when its launch fails or is
//! given up, with its container when the orphan sweep removes it, and at a
//! restart when no container of the job is found (the worker died meanwhile).
//! A bind names a path of the engine's host: secrets are only written for an
//! engine reached over a Unix socket, which runs on the worker's host.

use crate::config::values::NumericUser;
use crate::locked::lock;
use crate::protocol::SecretEnv;
use crate::report::error_chain;
use bollard::models::{Mount as DockerMount, MountType};
use std::collections::{HashMap, HashSet};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, chown, fchown};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a container finds its secret files.
pub const SECRETS_TARGET: &str = "/run/flare-launcher/secrets";
/// The variable naming [`SECRETS_TARGET`] in a container with secrets.
pub const SECRETS_DIR_VAR: &str = "FLARE_SECRETS_DIR";
/// The prefix of a job's folder name, which keeps every job id a plain name.
const JOB_PREFIX: &str = "job-";

/// Why the secrets folder cannot be used: the worker does not start.
#[derive(Debug, thiserror::Error)]
pub enum SecretsTmpfsError {
    /// It cannot be made or examined.
    #[error("cannot prepare the secrets folder {} (--docker-secrets-tmpfs)", .path.display())]
    Prepare {
        /// The folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// It is not on a tmpfs: secrets would reach a disk.
    #[error(
        "the secrets folder {} (--docker-secrets-tmpfs) is not on a tmpfs; secret values must never reach a disk",
        .0.display()
    )]
    NotTmpfs(PathBuf),
}

/// Why a job's secrets cannot be given to its container.
#[derive(Debug, thiserror::Error)]
pub enum SecretFilesError {
    /// The engine is not on this host: it cannot bind the folder.
    #[error(
        "the job has secret_env, but the Docker engine at {0} may not run on this worker's host, so its secret files cannot be mounted; secrets need an engine reached over a Unix socket"
    )]
    RemoteEngine(String),
    /// A file or the folder cannot be written or given to the container's user.
    #[error("cannot write the job's secret files in {}", .folder.display())]
    Write {
        /// The job's folder.
        folder: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// The secret files of this worker's Docker jobs.
#[derive(Clone)]
pub struct SecretFiles {
    /// `TMPFS`.
    tmpfs: PathBuf,
    /// This worker's id.
    worker_id: String,
    /// Who owns the files: the containers' user.
    owner: NumericUser,
    /// The engine's address when it is not on this host.
    remote_engine: Option<String>,
    /// Jobs adopted from other workers, by the worker whose folder they have.
    adopted: Arc<Mutex<HashMap<String, String>>>,
}

impl SecretFiles {
    /// Makes this worker's folder under `tmpfs` (mode 0700), which must be on
    /// a tmpfs; `engine` is the engine's address, when one is configured.
    ///
    /// # Errors
    /// A [`SecretsTmpfsError`].
    pub fn open(
        tmpfs: &Path,
        worker_id: &str,
        owner: NumericUser,
        engine: Option<&str>,
    ) -> Result<SecretFiles, SecretsTmpfsError> {
        let files = SecretFiles {
            tmpfs: tmpfs.to_owned(),
            worker_id: worker_id.to_owned(),
            owner,
            remote_engine: remote_engine(engine),
            adopted: Arc::default(),
        };
        let prepare = |source| SecretsTmpfsError::Prepare {
            path: tmpfs.to_owned(),
            source,
        };
        private_dir().create(tmpfs).map_err(prepare)?;
        let fs = nix::sys::statfs::statfs(tmpfs).map_err(|e| prepare(e.into()))?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(SecretsTmpfsError::NotTmpfs(tmpfs.to_owned()));
        }
        private_dir()
            .create(files.worker_folder(worker_id))
            .map_err(prepare)?;
        Ok(files)
    }

    /// The folder of a worker's jobs: its id written so that it is one plain name.
    fn worker_folder(&self, worker_id: &str) -> PathBuf {
        let name: String = worker_id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => char::from(b).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        self.tmpfs.join(format!("worker-{name}"))
    }

    /// The folder of a job of a worker.
    fn job_folder_of(&self, worker_id: &str, job_id: &str) -> PathBuf {
        self.worker_folder(worker_id)
            .join(format!("{JOB_PREFIX}{job_id}"))
    }

    /// The folder of a job of this worker.
    fn job_folder(&self, job_id: &str) -> PathBuf {
        self.job_folder_of(&self.worker_id, job_id)
    }

    /// Writes a job's secret files (again, over those of an earlier launch of
    /// it) and returns the read-only mount of their folder; none without secrets.
    ///
    /// # Errors
    /// A [`SecretFilesError`]; the folder is removed then.
    pub fn write(
        &self,
        job_id: &str,
        secrets: &SecretEnv,
    ) -> Result<Option<DockerMount>, SecretFilesError> {
        if secrets.is_empty() {
            return Ok(None);
        }
        if let Some(engine) = &self.remote_engine {
            return Err(SecretFilesError::RemoteEngine(engine.clone()));
        }
        let folder = self.job_folder(job_id);
        let written = self.write_folder(&folder, secrets).map_err(|source| {
            self.remove(job_id);
            SecretFilesError::Write {
                folder: folder.clone(),
                source,
            }
        })?;
        Ok(Some(written))
    }

    fn write_folder(&self, folder: &Path, secrets: &SecretEnv) -> io::Result<DockerMount> {
        match private_dir().create(folder) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let (uid, gid) = (Some(self.owner.uid), self.owner.gid);
        for (name, value) in secrets.iter() {
            let path = folder.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)?;
            file.write_all(value.as_bytes())?;
            fchown(&file, uid, gid)?;
        }
        chown(folder, uid, gid)?;
        Ok(DockerMount {
            target: Some(SECRETS_TARGET.to_owned()),
            source: Some(folder.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..DockerMount::default()
        })
    }

    /// Removes a job's folder of this worker; a missing one is fine.
    pub fn remove(&self, job_id: &str) {
        remove_folder(&self.job_folder(job_id));
    }

    /// Notes that the job, adopted from `worker_id`, has its secrets in that
    /// worker's folder, for [`SecretFiles::release`] to remove them.
    pub fn adopted(&self, job_id: &str, worker_id: &str) {
        if worker_id != self.worker_id {
            lock(&self.adopted).insert(job_id.to_owned(), worker_id.to_owned());
        }
    }

    /// Removes the folder of a job that ended, wherever it was written.
    pub fn release(&self, job_id: &str) {
        self.remove(job_id);
        let adopted_from = lock(&self.adopted).remove(job_id);
        if let Some(worker_id) = adopted_from {
            remove_folder(&self.job_folder_of(&worker_id, job_id));
        }
    }

    /// Removes the folders of this worker's jobs but those of `jobs`.
    pub fn keep_only(&self, jobs: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.worker_folder(&self.worker_id)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let job = name.to_str().and_then(|n| n.strip_prefix(JOB_PREFIX));
            if job.is_none_or(|job| !jobs.contains(job)) {
                remove_folder(&entry.path());
            }
        }
    }

    /// The worker leaves: its folder goes when no job's files are left in it.
    pub fn close(&self) {
        let _ = std::fs::remove_dir(self.worker_folder(&self.worker_id));
    }
}

/// A directory only its owner may enter.
fn private_dir() -> DirBuilder {
    let mut builder = DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
}

/// Removes a folder of secret files; failures are logged.
fn remove_folder(folder: &Path) {
    match std::fs::remove_dir_all(folder) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(folder = %folder.display(), error = %error_chain(&e), "cannot remove a job's secret files");
        }
        _ => {}
    }
}

/// The engine's address when it is not a Unix socket of this host: the one
/// configured, else `DOCKER_HOST`; neither means the local socket.
fn remote_engine(configured: Option<&str>) -> Option<String> {
    let address = configured
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .filter(|address| !address.is_empty())?;
    (!address.starts_with("unix://")).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn on_shm() -> Option<tempfile::TempDir> {
        tempfile::tempdir_in("/dev/shm").ok()
    }

    fn secrets() -> SecretEnv {
        let mut secrets = SecretEnv::default();
        secrets.insert("TOKEN".into(), "s3cret".into());
        secrets
    }

    #[test]
    fn files_are_private_to_the_containers_user_and_go_with_the_job() {
        let Some(tmpfs) = on_shm() else {
            return eprintln!("no /dev/shm here; skipped");
        };
        let me = NumericUser::of_this_process();
        let files = SecretFiles::open(tmpfs.path(), "w/1", me, None).unwrap();
        let mount = files.write("..", &secrets()).unwrap().unwrap();
        assert_eq!(mount.target.as_deref(), Some(SECRETS_TARGET));
        assert_eq!(mount.read_only, Some(true));
        let folder = PathBuf::from(mount.source.unwrap());
        assert_eq!(folder, tmpfs.path().join("worker-w%2F1").join("job-.."));
        let file = std::fs::metadata(folder.join("TOKEN")).unwrap();
        assert_eq!(file.permissions().mode() & 0o777, 0o400);
        assert_eq!(file.uid(), me.uid);
        assert_eq!(
            std::fs::read_to_string(folder.join("TOKEN")).unwrap(),
            "s3cret"
        );
        let dir = std::fs::metadata(&folder).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        // A second launch of the job writes them again.
        assert!(files.write("..", &secrets()).unwrap().is_some());
        files.write("other", &secrets()).unwrap();
        files.keep_only(&HashSet::from(["other".to_owned()]));
        assert!(!folder.exists());
        files.release("other");
        assert!(!tmpfs.path().join("worker-w%2F1/job-other").exists());
        assert!(
            files
                .write("none", &SecretEnv::default())
                .unwrap()
                .is_none()
        );
        files.close();
        assert!(!tmpfs.path().join("worker-w%2F1").exists());
    }

    #[test]
    fn a_folder_off_a_tmpfs_and_a_remote_engine_are_refused() {
        let on_disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let me = NumericUser::of_this_process();
        let refused = SecretFiles::open(on_disk.path(), "w1", me, None).err();
        assert!(
            matches!(refused, Some(SecretsTmpfsError::NotTmpfs(_))),
            "{refused:?}"
        );
        let Some(tmpfs) = on_shm() else {
            return eprintln!("no /dev/shm here; skipped");
        };
        let files = SecretFiles::open(tmpfs.path(), "w1", me, Some("tcp://10.0.0.1:2375")).unwrap();
        let refused = files.write("j1", &secrets()).unwrap_err();
        assert!(
            refused.to_string().contains("tcp://10.0.0.1:2375"),
            "{refused}"
        );
        assert_eq!(remote_engine(Some("unix:///run/docker.sock")), None);
    }
}
