//! A cgroup per job, where the host lets the supervisor make one (a writable
//! cgroup v2 hierarchy, or v1 hierarchies: in practice, a supervisor running as
//! root), and the limits a job names, enforced in it.
//!
//! The job's first process joins it before it runs the job's program, so every
//! process of the job is in it, whatever it does to its parentage or sessions.
//! The subreaper already finds all of them while the job's supervisor lives; the
//! cgroup also finds them when that supervisor itself was killed (the supervisor
//! then kills what the cgroup holds), and it shows the job's processes to an
//! operator (`/sys/fs/cgroup/.../flare-launcher/job-ID-PID`). On v1 hierarchies
//! the job is in the `pids` hierarchy's cgroup, and in the `memory` and `cpu`
//! hierarchies' when it names memory or CPU limits ([`limits`]). Before the
//! cgroup goes, it tells whether the out-of-memory killer killed a process of
//! the job ([`oom`]).
//!
//! A job without limits, where no cgroup can be made, runs without one,
//! contained by the subreaper alone; a job with limits is refused there: it
//! never runs unbounded.

mod hierarchy;
mod limits;
mod oom;

use super::wire::JobLimits;
use hierarchy::{Controller, Hierarchies};
use limits::Version;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Folder, under the supervisor's own cgroup, of the jobs' cgroups.
const JOBS_FOLDER: &str = "flare-launcher";
/// Rounds of killing what a cgroup holds before giving up on emptying it.
const KILL_ROUNDS: usize = 200;

/// Why a job's cgroup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup hierarchy to make it in.
    #[error("the host has no cgroup hierarchy this supervisor can use")]
    NoHierarchy,
    /// The v1 hierarchy of a controller the job's limits need is not mounted.
    #[error("the host has no cgroup v1 hierarchy of the {} controller", .0.name())]
    NoController(Controller),
    /// In the unified hierarchy, a controller the limits need could not be
    /// enabled for the jobs' cgroups.
    #[error(
        "the cgroup {} controller cannot be enabled in {}: {source}",
        .controller.name(),
        .path.display()
    )]
    Enable {
        /// The controller.
        controller: Controller,
        /// The `cgroup.subtree_control` it was written to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup's folder could not be made.
    #[error("cannot create the cgroup {}: {source}", .path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A limit could not be set.
    #[error("cannot write {value} to {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// One job's cgroup.
pub struct JobCgroup {
    /// Its folder in each hierarchy it is in.
    folders: Hierarchies,
    /// Whether its limits hold only if the job's first process joins it.
    limited: bool,
}

impl JobCgroup {
    /// The cgroup of the job `job_id` under the job supervisor `supervisor`, in
    /// every hierarchy the host has (it may not exist in all, or any).
    pub fn locate(job_id: &str, supervisor: Pid) -> Option<JobCgroup> {
        Some(JobCgroup {
            folders: Hierarchies::own()?.join(&job_folder(job_id, supervisor)),
            limited: false,
        })
    }

    /// Makes the job's cgroup, in the hierarchies it needs, with its limits set.
    ///
    /// # Errors
    /// A [`CgroupError`] when the host does not let this process make it or set
    /// a limit; what was made of it is removed again.
    pub fn create(
        job_id: &str,
        supervisor: Pid,
        limits: &JobLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let own = used(Hierarchies::own().ok_or(CgroupError::NoHierarchy)?, limits)?;
        if let Hierarchies::V2(base) = &own {
            enable(base, &limits.controllers())?;
        }
        let cgroup = JobCgroup {
            folders: own.join(&job_folder(job_id, supervisor)),
            limited: !limits.is_none(),
        };
        match cgroup.set_up(limits) {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                cgroup.kill_all_and_remove();
                Err(e)
            }
        }
    }

    /// Makes its folders and writes its limits.
    fn set_up(&self, limits: &JobLimits) -> Result<(), CgroupError> {
        for folder in self.folders.folders() {
            std::fs::create_dir_all(folder).map_err(|source| CgroupError::Create {
                path: folder.to_owned(),
                source,
            })?;
        }
        let version = match &self.folders {
            Hierarchies::V2(_) => Version::V2,
            Hierarchies::V1(_) => Version::V1 {
                memsw: self
                    .folders
                    .folder_of(Controller::Memory)
                    .is_some_and(|dir| dir.join("memory.memsw.limit_in_bytes").exists()),
            },
        };
        for setting in limits.settings(version) {
            let Some(dir) = self.folders.folder_of(setting.controller) else {
                return Err(CgroupError::NoController(setting.controller));
            };
            let path = dir.join(setting.file);
            std::fs::write(&path, &setting.value).map_err(|source| CgroupError::Write {
                path,
                value: setting.value,
                source,
            })?;
        }
        Ok(())
    }

    /// What the job's first process needs to join it, made before fork.
    pub fn joining(&self) -> Joining {
        Joining {
            procs: self
                .folders
                .folders()
                .into_iter()
                .filter_map(|dir| {
                    CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()
                })
                .collect(),
            required: self.limited,
        }
    }

    /// Whether the out-of-memory killer killed a process of the job in it.
    pub fn oom_killed(&self) -> bool {
        let file = match &self.folders {
            Hierarchies::V2(dir) => dir.join("memory.events"),
            Hierarchies::V1(_) => match self.folders.folder_of(Controller::Memory) {
                Some(dir) => dir.join("memory.oom_control"),
                None => return false,
            },
        };
        std::fs::read_to_string(file).is_ok_and(|text| oom::oom_kills(&text) > 0)
    }

    /// Kills every process in the cgroup until it is empty (or, for a process
    /// that will not die, after [`KILL_ROUNDS`] rounds), then removes it.
    pub fn kill_all_and_remove(self) {
        let folders = self.folders.folders();
        for _ in 0..KILL_ROUNDS {
            let members: Vec<Pid> = folders.iter().flat_map(|dir| members(dir)).collect();
            if members.is_empty() {
                break;
            }
            for pid in members {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for dir in folders {
            if let Err(e) = std::fs::remove_dir(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("cannot remove the job cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// The cgroup files a job's first process writes itself into.
pub struct Joining {
    /// `cgroup.procs` of each of the job's cgroup folders.
    procs: Vec<CString>,
    /// The job's limits hold only if it joins: a failure stops it.
    required: bool,
}

impl Joining {
    /// Moves the calling process into the job's cgroup, for a job's first
    /// process between fork and exec (only system calls, nothing allocated). A
    /// failure leaves a job without limits outside the cgroup, contained by the
    /// subreaper alone.
    ///
    /// # Errors
    /// The system's error, for a job whose limits the cgroup holds.
    pub fn join(&self) -> std::io::Result<()> {
        for procs in &self.procs {
            // SAFETY: plain system calls on a NUL-terminated path made before fork.
            let joined = unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let written = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let error = std::io::Error::last_os_error();
                if fd >= 0 {
                    libc::close(fd);
                }
                if written { Ok(()) } else { Err(error) }
            };
            if self.required {
                joined?;
            }
        }
        Ok(())
    }
}

/// The name of a job's cgroup folder under the jobs' folder.
fn job_folder(job_id: &str, supervisor: Pid) -> String {
    format!("{JOBS_FOLDER}/job-{job_id}-{supervisor}")
}

/// The hierarchies a job with `limits` is put in: the unified one; or the v1
/// `pids` hierarchy, where there is one, and those of the controllers its
/// limits need, which must be there.
///
/// # Errors
/// [`CgroupError::NoController`] for a needed controller the host does not
/// mount, [`CgroupError::NoHierarchy`] when no hierarchy is left to use.
fn used(own: Hierarchies, limits: &JobLimits) -> Result<Hierarchies, CgroupError> {
    let Hierarchies::V1(mounted) = own else {
        return Ok(own);
    };
    let needed = limits.controllers();
    if let Some(missing) = needed
        .iter()
        .find(|c| !mounted.iter().any(|(m, _)| m == *c))
    {
        return Err(CgroupError::NoController(*missing));
    }
    let used: Vec<(Controller, PathBuf)> = mounted
        .into_iter()
        .filter(|(c, _)| *c == Controller::Pids || needed.contains(c))
        .collect();
    if used.is_empty() {
        return Err(CgroupError::NoHierarchy);
    }
    Ok(Hierarchies::V1(used))
}

/// In the unified hierarchy, enables `controllers` for the jobs' cgroups: in
/// the supervisor's own cgroup's children (where they are not yet), then in
/// the jobs' folder's.
///
/// # Errors
/// [`CgroupError::Create`] when the jobs' folder cannot be made,
/// [`CgroupError::Enable`] when a controller cannot be enabled (the
/// supervisor's cgroup holds processes, and is not the root; or it was not
/// delegated the controller).
fn enable(base: &Path, controllers: &[Controller]) -> Result<(), CgroupError> {
    let jobs = base.join(JOBS_FOLDER);
    std::fs::create_dir_all(&jobs).map_err(|source| CgroupError::Create {
        path: jobs.clone(),
        source,
    })?;
    for controller in controllers {
        let name = controller.name();
        let available = std::fs::read_to_string(jobs.join("cgroup.controllers"))
            .is_ok_and(|list| list.split_whitespace().any(|c| c == name));
        let mut steps = vec![jobs.join("cgroup.subtree_control")];
        if !available {
            steps.insert(0, base.join("cgroup.subtree_control"));
        }
        for path in steps {
            std::fs::write(&path, format!("+{name}")).map_err(|source| CgroupError::Enable {
                controller: *controller,
                path,
                source,
            })?;
        }
    }
    Ok(())
}

/// The processes in the cgroup at `dir`.
fn members(dir: &Path) -> Vec<Pid> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(controllers: &[Controller]) -> Hierarchies {
        Hierarchies::V1(
            controllers
                .iter()
                .map(|c| (*c, PathBuf::from(format!("/cg/{}", c.name()))))
                .collect(),
        )
    }

    const MEMORY: JobLimits = JobLimits {
        cpus: None,
        memory_mb: Some(64),
    };

    #[test]
    fn a_job_with_limits_is_refused_where_their_controller_is_not_mounted() {
        let pids_only = v1(&[Controller::Pids]);
        assert!(matches!(
            used(pids_only.clone(), &MEMORY),
            Err(CgroupError::NoController(Controller::Memory))
        ));
        let cpus = JobLimits {
            cpus: Some(1.0),
            memory_mb: None,
        };
        assert!(matches!(
            used(v1(&[Controller::Pids, Controller::Memory]), &cpus),
            Err(CgroupError::NoController(Controller::Cpu))
        ));
        assert!(matches!(
            used(v1(&[Controller::Memory]), &JobLimits::default()),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn a_job_goes_in_the_pids_hierarchy_and_those_its_limits_need() {
        let all = v1(&[Controller::Pids, Controller::Memory, Controller::Cpu]);
        assert_eq!(
            used(all.clone(), &JobLimits::default()).unwrap(),
            v1(&[Controller::Pids])
        );
        assert_eq!(
            used(all, &MEMORY).unwrap(),
            v1(&[Controller::Pids, Controller::Memory])
        );
        assert_eq!(
            used(v1(&[Controller::Memory]), &MEMORY).unwrap(),
            v1(&[Controller::Memory])
        );
        let unified = Hierarchies::V2("/cg".into());
        assert_eq!(used(unified.clone(), &MEMORY).unwrap(), unified);
    }
}
