//! A cgroup per job, where the host lets the supervisor make one (cgroup v2, or
//! the v1 `pids` controller, writable: in practice, a supervisor running as root).
//!
//! The job's first process joins it before it runs the job's program, so every
//! process of the job is in it, whatever it does to its parentage or sessions.
//! The subreaper already finds all of them while the job's supervisor lives; the
//! cgroup also finds them when that supervisor itself was killed (the supervisor
//! then kills what the cgroup holds), and it shows the job's processes to an
//! operator (`/sys/fs/cgroup/.../flare-launcher/job-ID-PID`). Where no cgroup can
//! be made, jobs run without one, contained by the subreaper alone.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Folder, under the supervisor's own cgroup, of the jobs' cgroups.
const JOBS_FOLDER: &str = "flare-launcher";
/// Rounds of killing what a cgroup holds before giving up on emptying it.
const KILL_ROUNDS: usize = 200;

/// One job's cgroup.
pub struct JobCgroup {
    dir: PathBuf,
    /// `dir/cgroup.procs`, made before fork: the job's first process writes to
    /// it after fork, where nothing may be allocated.
    procs: CString,
}

impl JobCgroup {
    /// The cgroup of the job `job_id` under the job supervisor `supervisor`, if
    /// the host has a cgroup hierarchy to put it in (it may not exist yet).
    pub fn locate(job_id: &str, supervisor: Pid) -> Option<JobCgroup> {
        let dir = base()?
            .join(JOBS_FOLDER)
            .join(format!("job-{job_id}-{supervisor}"));
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
        Some(JobCgroup { dir, procs })
    }

    /// Makes the job's cgroup; `None` where the host does not let this process.
    pub fn create(job_id: &str, supervisor: Pid) -> Option<JobCgroup> {
        let cgroup = Self::locate(job_id, supervisor)?;
        std::fs::create_dir_all(&cgroup.dir).ok()?;
        Some(cgroup)
    }

    /// The path of its `cgroup.procs`, for [`join`] in a job's first process.
    pub fn procs_path(&self) -> CString {
        self.procs.clone()
    }

    /// Kills every process in the cgroup until it is empty (or, for a process
    /// that will not die, after [`KILL_ROUNDS`] rounds), then removes it.
    pub fn kill_all_and_remove(self) {
        for _ in 0..KILL_ROUNDS {
            let members = members(&self.dir);
            if members.is_empty() {
                break;
            }
            for pid in members {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(e) = std::fs::remove_dir(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove the job cgroup {}: {e}", self.dir.display());
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`: for
/// a job's first process between fork and exec (only system calls, nothing
/// allocated). A failure leaves the job outside the cgroup, contained by the
/// subreaper alone.
pub fn join(procs: &CStr) {
    // SAFETY: plain system calls on a NUL-terminated path made before fork.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
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

/// This process's own cgroup folder: in the v2 hierarchy when the host has only
/// that, else in the v1 `pids` hierarchy.
fn base() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (mount, wanted) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        ("/sys/fs/cgroup", "")
    } else if Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        ("/sys/fs/cgroup/pids", "pids")
    } else {
        return None;
    };
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = if wanted.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == wanted)
        };
        matches.then(|| path.trim_start_matches('/').to_owned())
    })?;
    Some(Path::new(mount).join(path))
}
