//! One job's supervisor: a process forked from the supervisor for each job, in a
//! session of its own, that is a child subreaper for the job's whole tree. It
//! starts the job, waits for its first process, relays stops (SIGTERM to the job's
//! process group, SIGKILL to its whole tree after the grace), kills whatever the
//! job left behind when its first process ends (so `setsid` and double forks do
//! not escape: orphans of the tree are re-parented to this process), writes the
//! job's file with the end, and exits.
//!
//! It learns of stops and of its owner's death through signals, which it takes
//! synchronously (`sigtimedwait`), so it needs no threads and no file descriptors
//! besides the note it writes once to the supervisor:
//! - `SIGTERM`, queued with the grace in milliseconds as its value: stop;
//! - `SIGUSR2`, its parent-death signal: the supervisor died; kill the tree.
//!
//! It runs in a process forked from the single-threaded supervisor, so it may
//! allocate; it leaves with `_exit` so nothing of the parent's state is flushed
//! twice.

use super::cgroup::JobCgroup;
use super::job_file::{JobEnd, JobFile};
use super::tree::{kill_children, kill_tree, signal_group};
use super::wire::{JobUserIds, Spawn};
use crate::state::Exit;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file descriptor a job's supervisor writes its [`StartNote`] to.
pub const NOTE_FD: i32 = 3;
/// Grace of a stop whose signal carries none (a SIGTERM sent by hand).
const DEFAULT_GRACE: Duration = Duration::from_secs(crate::protocol::DEFAULT_GRACE_S);
/// Longest error text in a note: notes must stay under `PIPE_BUF` so that the
/// writes of many supervisors to one pipe never interleave.
const MAX_NOTE_ERROR: usize = 1024;

/// What a job's supervisor tells the supervisor once, through the shared pipe.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartNote {
    /// The job's supervisor.
    pub supervisor_pid: i32,
    /// The job's first process, when it started.
    pub pid: Option<u32>,
    /// Why it did not start.
    pub error: Option<String>,
}

/// The signals a job's supervisor takes synchronously.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGUSR2,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// What every job of a supervisor shares.
pub struct Settings<'a> {
    /// The environment every job inherits, before its own.
    pub base_env: &'a [(String, String)],
    /// The user jobs run as.
    pub user: Option<&'a JobUserIds>,
    /// Each job in a cgroup of its own, where the host allows it.
    pub cgroup: bool,
    /// The supervisor's directory (job files).
    pub dir: &'a Path,
    /// The supervisor that forked the job supervisor.
    pub supervisor: Pid,
}

/// Supervises `spawn` in a freshly forked process and exits; never returns. The
/// note descriptor is [`NOTE_FD`].
pub fn run(spawn: &Spawn, settings: &Settings<'_>) -> ! {
    let code = match supervise(spawn, settings) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("job {}: supervision failed: {e}", spawn.job_id);
            1
        }
    };
    // SAFETY: `_exit` ends the process at once; nothing of this forked copy's
    // state (buffers, destructors) is meant to run.
    unsafe { libc::_exit(code) }
}

fn supervise(spawn: &Spawn, settings: &Settings<'_>) -> std::io::Result<()> {
    let Settings {
        base_env,
        user,
        dir,
        supervisor,
        ..
    } = *settings;
    // A session of its own: no process of another job can join this job's
    // process group, and no terminal's signals reach it.
    nix::unistd::setsid()?;
    nix::sys::prctl::set_child_subreaper(true)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR2)?;
    // A supervisor that died before the parent-death signal was armed cannot
    // send it: its death shows as a new parent.
    let owner_lost = getppid() != supervisor;
    let signals = handled_signals();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&signals), None)?;
    // SAFETY: the supervisor placed the note's pipe at NOTE_FD for this process,
    // which owns it from here on.
    let mut note = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(NOTE_FD) });
    // A job that names limits gets a cgroup in any case: they hold only there.
    let limited = !spawn.limits.is_none();
    let cgroup = match (settings.cgroup || limited)
        .then(|| JobCgroup::create(&spawn.job_id, getpid(), &spawn.limits))
    {
        None => None,
        Some(Ok(cgroup)) => Some(cgroup),
        // The subreaper alone contains a job without limits.
        Some(Err(_)) if !limited => None,
        Some(Err(e)) => {
            let error = short(&format!("cannot enforce the job's cpus and memory_mb: {e}"));
            return not_started(spawn, dir, &mut note, error);
        }
    };
    let child = match start(spawn, base_env, user, cgroup.as_ref()) {
        Ok(child) => child,
        Err(e) => {
            let place = match &spawn.workdir {
                Some(workdir) => format!(" in {}", short(workdir)),
                None => String::new(),
            };
            let error = format!("could not start {}{place}: {e}", short(&spawn.argv[0]));
            if let Some(cgroup) = cgroup {
                cgroup.kill_all_and_remove();
            }
            return not_started(spawn, dir, &mut note, error);
        }
    };
    let pid = child.id();
    let mut file = JobFile {
        job_id: spawn.job_id.clone(),
        pid,
        supervisor_pid: getpid().as_raw() as u32,
        end: None,
    };
    if let Err(e) = file.write(dir) {
        eprintln!("job {}: cannot write its file: {e}", spawn.job_id);
    }
    write_note(&mut note, Some(pid), None)?;
    drop(note);
    let mut end = watch(Pid::from_raw(pid as i32), owner_lost, &signals);
    contain(Pid::from_raw(pid as i32));
    if let Some(cgroup) = cgroup {
        // Read before the cgroup goes, with it its count.
        if let JobEnd::Exited { oom_killed, .. } = &mut end {
            *oom_killed = cgroup.oom_killed();
        }
        cgroup.kill_all_and_remove();
    }
    file.end = Some(end);
    file.write(dir)
}

/// Ends a job that was not started: its file says why, for a worker that is
/// away now and asks after the job later, and so does its note.
fn not_started(
    spawn: &Spawn,
    dir: &Path,
    note: &mut std::fs::File,
    error: String,
) -> std::io::Result<()> {
    let file = JobFile {
        job_id: spawn.job_id.clone(),
        pid: 0,
        supervisor_pid: getpid().as_raw() as u32,
        end: Some(JobEnd::NotStarted {
            error: error.clone(),
        }),
    };
    if let Err(e) = file.write(dir) {
        eprintln!("job {}: cannot write its file: {e}", spawn.job_id);
    }
    write_note(note, None, Some(error))
}

/// Starts the job's first process as the leader of its own process group, its
/// output in the log file, as the job user if there is one.
fn start(
    spawn: &Spawn,
    base_env: &[(String, String)],
    user: Option<&JobUserIds>,
    cgroup: Option<&JobCgroup>,
) -> std::io::Result<std::process::Child> {
    // Readable by the worker's user and group only: a job's output is nobody
    // else's (other jobs' included).
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&spawn.log)?;
    let mut command = Command::new(&spawn.argv[0]);
    command
        .args(&spawn.argv[1..])
        .env_clear()
        .envs(base_env.iter().map(|(k, v)| (k, v)))
        .envs(spawn.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let joining = cgroup.map(JobCgroup::joining);
    let user = user.map(Switch::to);
    // The job user enters the working directory itself, after the switch: a
    // directory it could not reach (under a root-only parent) stays out of reach.
    let user_workdir = match (&spawn.workdir, &user) {
        (Some(workdir), Some(_)) => Some(
            CString::new(workdir.as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        (Some(workdir), None) => {
            command.current_dir(workdir);
            None
        }
        (None, _) => None,
    };
    if joining.is_some() || user.is_some() {
        // SAFETY: runs in the forked child before exec, calling only system
        // calls (nothing allocates): the cgroup first (as root still), then the
        // user, then the working directory.
        unsafe {
            command.pre_exec(move || {
                if let Some(joining) = &joining {
                    joining.join()?;
                }
                if let Some(user) = &user {
                    user.carry_out()?;
                }
                match &user_workdir {
                    Some(workdir) => enter(workdir),
                    None => Ok(()),
                }
            })
        };
    }
    command.spawn()
}

/// Makes `dir` the working directory, between fork and exec.
fn enter(dir: &CString) -> std::io::Result<()> {
    // SAFETY: chdir reads the NUL-terminated path and nothing else.
    if unsafe { libc::chdir(dir.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The switch to the job user, made ready before the fork so that carrying it
/// out allocates nothing.
struct Switch {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
}

impl Switch {
    fn to(user: &JobUserIds) -> Switch {
        use nix::unistd::{Gid, Uid};
        Switch {
            uid: Uid::from_raw(user.uid),
            gid: Gid::from_raw(user.gid),
            groups: user.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        }
    }

    /// Becomes the job user, between fork and exec: supplementary groups,
    /// group, user, in that order (each step needs the privilege the next one
    /// drops), then no ambient capabilities, so that a worker holding
    /// CAP_SETUID and CAP_SETGID as ambient capabilities does not hand them to
    /// the job (root loses every capability in `setuid` already).
    fn carry_out(&self) -> std::io::Result<()> {
        use nix::unistd::{setgid, setgroups, setuid};
        setgroups(&self.groups)?;
        setgid(self.gid)?;
        setuid(self.uid)?;
        clear_ambient_capabilities()
    }
}

/// Empties the ambient capability set; a kernel without ambient capabilities
/// (before 4.3) has none to empty.
fn clear_ambient_capabilities() -> std::io::Result<()> {
    use libc::{EINVAL, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, c_ulong, prctl};
    // SAFETY: prctl with integer arguments only; it touches no memory of ours.
    let result = unsafe {
        prctl(
            PR_CAP_AMBIENT,
            PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(EINVAL) => Ok(()),
        _ => Err(error),
    }
}

fn write_note(
    note: &mut std::fs::File,
    pid: Option<u32>,
    error: Option<String>,
) -> std::io::Result<()> {
    let note_line = StartNote {
        supervisor_pid: getpid().as_raw(),
        pid,
        error,
    };
    let mut line = serde_json::to_vec(&note_line).expect("a note always serializes");
    line.push(b'\n');
    // One write, under PIPE_BUF: atomic on the shared pipe.
    note.write_all(&line)
}

/// A program name cut for a message.
fn short(text: &str) -> String {
    match text.char_indices().nth(MAX_NOTE_ERROR / 2) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What a job's supervisor waits for.
enum Wake {
    /// The kill deadline came.
    Deadline,
    /// A signal, with the value it was queued with (the grace of a stop).
    Signal(Signal, Option<u64>),
}

/// Waits for one of the handled signals, or until `deadline`.
fn wait(signals: &SigSet, deadline: Option<Instant>) -> Wake {
    loop {
        let timeout = deadline.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        // SAFETY: plain system call with valid pointers to local values.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let signo = unsafe {
            libc::sigtimedwait(
                signals.as_ref(),
                &mut info,
                timeout
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec),
            )
        };
        if signo < 0 {
            match Errno::last() {
                Errno::EAGAIN => return Wake::Deadline,
                _ => continue,
            }
        }
        let Ok(signal) = Signal::try_from(signo) else {
            continue;
        };
        // SAFETY: the kernel filled `info` for this signal; the value is only
        // read for signals queued by the supervisor (SI_QUEUE).
        let value = (info.si_code == libc::SI_QUEUE)
            .then(|| unsafe { info.si_value().sival_ptr as usize as u64 });
        return Wake::Signal(signal, value);
    }
}

/// Follows the job's first process until it ends, acting on stops.
fn watch(pid: Pid, mut owner_lost: bool, signals: &SigSet) -> JobEnd {
    let reaper = getpid();
    let mut stopped = false;
    let mut kill_at: Option<Instant> = None;
    if owner_lost {
        kill_tree(pid, reaper);
    }
    loop {
        match wait(signals, kill_at) {
            Wake::Deadline => {
                kill_tree(pid, reaper);
                kill_at = None;
            }
            Wake::Signal(Signal::SIGCHLD, _) => {
                if let Some(exit) = reap(pid) {
                    return end_of(exit, stopped, owner_lost);
                }
            }
            Wake::Signal(Signal::SIGTERM, grace_ms) => {
                // An exit that is there already wins over a stop arriving with it.
                if let Some(exit) = reap(pid) {
                    return end_of(exit, stopped, owner_lost);
                }
                stopped = true;
                signal_group(pid, Signal::SIGTERM);
                let grace = grace_ms.map_or(DEFAULT_GRACE, Duration::from_millis);
                let at = Instant::now() + grace;
                kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
            }
            Wake::Signal(Signal::SIGUSR2, _) => {
                owner_lost = true;
                kill_tree(pid, reaper);
            }
            Wake::Signal(..) => {}
        }
    }
}

fn end_of(exit: Exit, stopped: bool, owner_lost: bool) -> JobEnd {
    if owner_lost {
        JobEnd::OwnerLost
    } else {
        JobEnd::Exited {
            exit,
            stopped,
            oom_killed: false,
        }
    }
}

/// Reaps every child that has ended; returns how `pid` ended if it has.
fn reap(pid: Pid) -> Option<Exit> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                return Some(Exit::Signal(signal as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Kills and reaps whatever the job left behind, until this process has no
/// child at all: its group first, then, round by round, the orphans re-parented
/// here (each round's kills hand their children to this subreaper).
fn contain(pid: Pid) {
    let reaper = getpid();
    // The group once, now: its leader is reaped, and later its id could name
    // another process's group.
    signal_group(pid, Signal::SIGKILL);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => {}
            Err(_) => return,
            Ok(WaitStatus::StillAlive) => {
                kill_children(reaper);
                // Waits for one of them to end; the loop looks again.
                let _ = waitpid(None, None);
            }
            Ok(_) => {}
        }
    }
}
