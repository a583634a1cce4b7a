//! The request's mounts as Docker mounts, under the operator's rules: `host:`
//! binds only below the roots the worker allows (the path resolved first, so no
//! `..` nor symlink leads out), `pvc:NAME` as the named volume NAME, `secret:NAME`
//! as a read-only bind of the file or directory NAME in the worker's secrets
//! directory, `emptydir:` as a tmpfs; and, when the worker has an NVFlare-style
//! workspace, the job's own folder in it read-write and the listed folders
//! read-only, each at its host path.

use crate::backend::container::allowed::{NameList, never_mountable};
use crate::backend::{Failure, LaunchError};
use crate::protocol::bounded::quoted;
use crate::protocol::{Mount, MountSource};
use bollard::models::{Mount as DockerMount, MountType};
use std::path::{Component, Path, PathBuf};

/// What the operator allows.
#[derive(Debug, Clone, Default)]
pub struct MountPolicy {
    /// Host directories below which `host:` mounts may be (resolved).
    pub host_roots: Vec<PathBuf>,
    /// Named volumes `pvc:NAME` may mount: names or globs.
    pub volumes: Vec<String>,
    /// The files of the worker's own credentials and the flags naming them:
    /// no bind may show them, whatever the roots allow.
    pub worker_secrets: Vec<(PathBuf, &'static str)>,
    /// The directory `secret:NAME` mounts come from; `None`: none allowed.
    pub secrets_dir: Option<PathBuf>,
    /// The site's workspace, if jobs get it.
    pub workspace: Option<Workspace>,
}

/// An NVFlare-style workspace on the host.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Its root.
    pub root: PathBuf,
    /// Its folders every job gets read-only (`startup`, `local`).
    pub read_only: Vec<String>,
}

/// The Docker mounts of a request.
///
/// # Errors
/// [`LaunchError::MountNotAllowed`] for a mount the policy forbids or whose
/// source is not there; [`LaunchError::Unsupported`] for a volume name Docker
/// cannot take.
pub fn docker_mounts(
    job_id: &str,
    mounts: &[Mount],
    policy: &MountPolicy,
) -> Result<Vec<DockerMount>, LaunchError> {
    let mut docker: Vec<DockerMount> = mounts
        .iter()
        .map(|mount| one(mount, policy))
        .collect::<Result<_, _>>()?;
    if let Some(workspace) = &policy.workspace {
        docker.extend(workspace_mounts(job_id, workspace)?);
    }
    Ok(docker)
}

/// The job's folder of the workspace (made if missing), read-write, and the
/// shared folders, read-only, each at its host path.
fn workspace_mounts(job_id: &str, workspace: &Workspace) -> Result<Vec<DockerMount>, LaunchError> {
    // A job id may be `..`, which names no folder of its own.
    if matches!(job_id, "." | "..") {
        return Err(LaunchError::MountNotAllowed(
            format!("job id {job_id:?} names no folder of the workspace").into(),
        ));
    }
    let job_folder = workspace.root.join(job_id);
    std::fs::create_dir_all(&job_folder).map_err(|e| {
        LaunchError::Spawn(Failure::because(
            format!(
                "cannot create the job's workspace folder {}",
                job_folder.display()
            ),
            e,
        ))
    })?;
    let bind = |path: PathBuf, read_only: bool| {
        let path = path.to_string_lossy().into_owned();
        DockerMount {
            target: Some(path.clone()),
            source: Some(path),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..DockerMount::default()
        }
    };
    let mut mounts = vec![bind(job_folder, false)];
    mounts.extend(
        workspace
            .read_only
            .iter()
            .map(|name| workspace.root.join(name))
            .filter(|folder| folder.is_dir())
            .map(|folder| bind(folder, true)),
    );
    Ok(mounts)
}

fn one(mount: &Mount, policy: &MountPolicy) -> Result<DockerMount, LaunchError> {
    let source = mount
        .parsed_source()
        .map_err(|e| LaunchError::Unsupported(Failure::of(e)))?;
    let (typ, source, read_only) = match source {
        MountSource::Host(path) => (
            MountType::BIND,
            Some(not_worker_secret(
                "host path",
                allowed_host_path(&path, &policy.host_roots)?,
                &policy.worker_secrets,
            )?),
            mount.read_only,
        ),
        MountSource::Pvc(name) => {
            check_volume_name(&name)?;
            NameList {
                what: "volumes",
                option: "docker-allowed-volumes",
                patterns: &policy.volumes,
            }
            .check(&name)?;
            (MountType::VOLUME, Some(name), mount.read_only)
        }
        MountSource::Secret(name) => (
            MountType::BIND,
            Some(not_worker_secret(
                "secret",
                secret_path(&name, policy.secrets_dir.as_deref())?,
                &policy.worker_secrets,
            )?),
            true,
        ),
        MountSource::EmptyDir => (MountType::TMPFS, None, mount.read_only),
    };
    Ok(DockerMount {
        target: Some(mount.target.clone()),
        source,
        typ: Some(typ),
        read_only: Some(read_only),
        ..DockerMount::default()
    })
}

/// `path` resolved (symlinks followed, `..` gone), if it lies below one of the
/// resolved `roots`.
fn allowed_host_path(path: &str, roots: &[PathBuf]) -> Result<String, LaunchError> {
    let refused = |why: &str| {
        LaunchError::MountNotAllowed(format!("host mount {}: {why}", quoted(path)).into())
    };
    if roots.is_empty() {
        return Err(refused("this worker allows no host mounts"));
    }
    let resolved =
        std::fs::canonicalize(path).map_err(|e| refused(&format!("cannot be resolved: {e}")))?;
    let allowed = roots
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .any(|root| resolved.starts_with(&root));
    if !allowed {
        return Err(refused(&format!(
            "it resolves to {}, outside the roots this worker allows",
            resolved.display()
        )));
    }
    resolved
        .into_os_string()
        .into_string()
        .map_err(|_| refused("it resolves to a path that is not UTF-8"))
}

/// `resolved`, unless it is, or is a directory holding, one of the worker's
/// own credential files.
fn not_worker_secret(
    what: &str,
    resolved: String,
    worker_secrets: &[(PathBuf, &'static str)],
) -> Result<String, LaunchError> {
    let shown = worker_secrets.iter().find(|(file, _)| {
        std::fs::canonicalize(file).is_ok_and(|file| file.starts_with(&resolved))
    });
    match shown {
        Some((_, flag)) => Err(never_mountable(what, &resolved, flag)),
        None => Ok(resolved),
    }
}

/// The file or directory `name` in the secrets directory; `name` must be one
/// plain path component.
fn secret_path(name: &str, secrets_dir: Option<&Path>) -> Result<String, LaunchError> {
    let refused = |why: &str| {
        LaunchError::MountNotAllowed(format!("secret mount {}: {why}", quoted(name)).into())
    };
    let dir = secrets_dir.ok_or_else(|| refused("this worker has no secrets directory"))?;
    let mut components = Path::new(name).components();
    if !matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(refused("a secret's name is one plain file name"));
    }
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(refused("no such secret"));
    }
    allowed_host_path(
        &path.to_string_lossy(),
        std::slice::from_ref(&dir.to_path_buf()),
    )
}

fn check_volume_name(name: &str) -> Result<(), LaunchError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(LaunchError::Unsupported(
            format!(
                "volume name {} must be letters, digits, _ . - (starting with a letter or digit)",
                quoted(name)
            )
            .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str) -> Mount {
        Mount {
            source: source.into(),
            target: "/m".into(),
            read_only: false,
        }
    }

    #[test]
    fn host_mounts_stay_below_the_allowed_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        let policy = MountPolicy {
            host_roots: vec![root.clone()],
            ..MountPolicy::default()
        };
        let inside = format!("host:{}", root.join("data").display());
        let mounted = docker_mounts("j", &[mount(&inside)], &policy).unwrap();
        assert_eq!(mounted[0].typ, Some(MountType::BIND));
        for escape in [
            format!("host:{}/data/../../outside", root.display()),
            format!("host:{}", root.join("link").display()),
            "host:/etc".to_owned(),
            format!("host:{}/missing", root.display()),
        ] {
            let refused = docker_mounts("j", &[mount(&escape)], &policy).unwrap_err();
            assert_eq!(refused.reason(), "MountNotAllowed", "{escape}: {refused}");
        }
        let none = docker_mounts("j", &[mount(&inside)], &MountPolicy::default()).unwrap_err();
        assert_eq!(none.reason(), "MountNotAllowed");
    }

    #[test]
    fn secrets_are_plain_names_in_the_secrets_dir_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let policy = MountPolicy {
            secrets_dir: Some(dir.path().to_owned()),
            ..MountPolicy::default()
        };
        let mounted = docker_mounts("j", &[mount("secret:token")], &policy).unwrap();
        assert_eq!(mounted[0].read_only, Some(true));
        for bad in [
            "secret:../token",
            "secret:a/b",
            "secret:..",
            "secret:missing",
        ] {
            let refused = docker_mounts("j", &[mount(bad)], &policy).unwrap_err();
            assert_eq!(refused.reason(), "MountNotAllowed", "{bad}");
        }
    }

    #[test]
    fn the_workers_own_credentials_are_never_mounted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nats")).unwrap();
        std::fs::write(dir.path().join("nats/worker.creds"), "c").unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let policy = MountPolicy {
            host_roots: vec![dir.path().to_owned()],
            secrets_dir: Some(dir.path().to_owned()),
            worker_secrets: vec![(
                dir.path().join("nats/worker.creds"),
                "nats-credentials-file",
            )],
            ..MountPolicy::default()
        };
        let root = dir.path().display();
        for shows in [
            "secret:nats".to_owned(),
            format!("host:{root}"),
            format!("host:{root}/nats/worker.creds"),
        ] {
            let refused = docker_mounts("j", &[mount(&shows)], &policy).unwrap_err();
            assert_eq!(refused.reason(), "NotAllowed", "{shows}: {refused}");
            assert!(
                refused.to_string().contains("--nats-credentials-file"),
                "{refused}"
            );
        }
        assert!(docker_mounts("j", &[mount("secret:token")], &policy).is_ok());
    }

    #[test]
    fn allowed_volumes_and_tmpfs() {
        let policy = MountPolicy {
            volumes: vec!["data-*".into()],
            ..MountPolicy::default()
        };
        let mounted =
            docker_mounts("j", &[mount("pvc:data-1"), mount("emptydir:")], &policy).unwrap();
        assert_eq!(mounted[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounted[0].source.as_deref(), Some("data-1"));
        assert_eq!(mounted[1].typ, Some(MountType::TMPFS));
        let bad = docker_mounts("j", &[mount("pvc:-x")], &policy).unwrap_err();
        assert_eq!(bad.reason(), "InvalidRequest");
        let other = docker_mounts("j", &[mount("pvc:models")], &policy).unwrap_err();
        assert_eq!(other.reason(), "NotAllowed");
        assert!(
            other.to_string().contains("--docker-allowed-volumes"),
            "{other}"
        );
        let none = docker_mounts("j", &[mount("pvc:data-1")], &MountPolicy::default());
        assert_eq!(none.unwrap_err().reason(), "NotAllowed");
    }

    #[test]
    fn the_workspace_gives_the_jobs_folder_and_the_shared_folders_read_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("startup")).unwrap();
        let policy = MountPolicy {
            workspace: Some(Workspace {
                root: dir.path().to_owned(),
                read_only: vec!["startup".into(), "local".into()],
            }),
            ..MountPolicy::default()
        };
        let mounted = docker_mounts("job-1", &[], &policy).unwrap();
        let job_folder = dir.path().join("job-1");
        assert!(job_folder.is_dir(), "made for the job");
        let seen: Vec<(String, bool)> = mounted
            .iter()
            .map(|m| (m.target.clone().unwrap(), m.read_only.unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                (job_folder.display().to_string(), false),
                (dir.path().join("startup").display().to_string(), true),
            ],
            "a missing shared folder is left out"
        );
        let refused = docker_mounts("..", &[], &policy).unwrap_err();
        assert_eq!(refused.reason(), "MountNotAllowed");
    }
}
