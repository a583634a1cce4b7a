//! The supervisor process (`flare-launcher supervise --dir DIR`): one per worker,
//! in a session of its own, so that it outlives a worker that dies. It serves one
//! worker connection at a time on `DIR/supervisor.sock`, forks a job supervisor
//! per job (see [`super::job_supervisor`]), relays their start notes and ends as
//! [`Report`]s, and keeps every job's end in its job file for a worker that was
//! away.
//!
//! It is single-threaded on purpose: forking a process with one thread is safe
//! and cheap (it is small), which keeps a launch nearly as cheap as a plain spawn,
//! while a worker (many threads) could only spawn another program. It is itself a
//! child subreaper, so a job whose own supervisor was killed is re-parented here
//! and killed, not left to run unsupervised.
//!
//! It exits once it has no job and no worker: after a worker's [`Request::Bye`],
//! or when no worker has been connected for [`IDLE_EXIT`].

use super::cgroup::JobCgroup;
use super::job_file::{JobEnd, JobFile, jobs_dir};
use super::job_supervisor::{self, NOTE_FD, StartNote};
use super::job_uids::{JobUids, NoFreeJobUid};
use super::tree::{children_of, signal_group};
use super::wire::{JobUserIds, MAX_LINE, Report, Request, RunningJob, Spawn, encode};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a supervisor without jobs waits for a worker before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);
/// How long a supervisor waits for the directory's lock before it leaves the
/// directory to the supervisor that holds it.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// Longest path a Unix socket address holds (`sun_path`, less its final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The socket a supervisor serves in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("supervisor.sock")
}

/// Why a supervisor could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Its directory, lock or socket could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What failed.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Setup {
        what: what.into(),
        source,
    }
}

impl From<Errno> for ServeError {
    fn from(errno: Errno) -> Self {
        setup("system call")(errno.into())
    }
}

/// One job as the supervisor knows it.
struct Supervised {
    job_id: String,
    /// Its first process, once its supervisor has noted the start.
    pid: Option<u32>,
    /// The user id of its own it runs as (`--job-uids`), if any.
    uid: Option<u32>,
    /// It never started: its end is not reported.
    failed: bool,
    /// The worker has recorded its end already (it gave up on it): its file
    /// goes when it has ended.
    forgotten: bool,
}

/// The worker's connection.
struct Connection {
    stream: UnixStream,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

struct Server {
    dir: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    notes: std::fs::File,
    note_writer: OwnedFd,
    connection: Option<Connection>,
    base_env: Vec<(String, String)>,
    user: Option<JobUserIds>,
    /// The user ids of their own that jobs get, when the worker asks for them.
    uids: Option<JobUids>,
    /// Each job in a cgroup of its own, where the host allows it.
    cgroups: bool,
    greeted: bool,
    /// Job supervisors by pid.
    jobs: HashMap<Pid, Supervised>,
    note_buffer: Vec<u8>,
    leaving: bool,
    idle_since: Instant,
}

/// Serves in `dir` until there is nothing left to supervise. Returns at once when
/// another supervisor serves `dir` already.
///
/// # Errors
/// A [`ServeError`] when the directory, its lock or its socket cannot be set up.
pub fn serve(dir: &Path) -> Result<(), ServeError> {
    // A session of its own: a worker's terminal or process group signals do not
    // reach it, and it outlives the worker.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!(
            "cannot start a session of its own ({e}); signals to the worker's group may reach it"
        );
    }
    nix::sys::prctl::set_child_subreaper(true)?;
    nix::sys::prctl::set_dumpable(false)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(jobs_dir(dir))
        .map_err(setup(format!("cannot create {}", dir.display())))?;
    // Held until this function returns: one supervisor per directory.
    let Some(_lock) = lock_directory(dir)? else {
        return Ok(());
    };
    let socket = socket_path(dir);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(setup(format!("cannot listen on {}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(setup("cannot restrict the socket"))?;
    listener
        .set_nonblocking(true)
        .map_err(setup("cannot configure the socket"))?;
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let (notes, note_writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        &notes,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut server = Server {
        dir: dir.to_owned(),
        listener,
        signals,
        notes: std::fs::File::from(notes),
        note_writer,
        connection: None,
        base_env: Vec::new(),
        user: None,
        uids: None,
        cgroups: false,
        greeted: false,
        jobs: HashMap::new(),
        note_buffer: Vec::new(),
        leaving: false,
        idle_since: Instant::now(),
    };
    server.run();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Takes the directory's lock, waiting up to [`LOCK_WAIT`] for a predecessor that
/// is on its way out (a worker that restarts at once can start this supervisor
/// while the last one, told goodbye, is still exiting). `None` when another
/// supervisor keeps the lock: it serves the directory.
///
/// # Errors
/// A [`ServeError`] when the lock file cannot be created or locked.
fn lock_directory(dir: &Path) -> Result<Option<Flock<std::fs::File>>, ServeError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut file = std::fs::File::create(dir.join("supervisor.lock"))
        .map_err(setup("cannot create the supervisor's lock file"))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((unlocked, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = unlocked;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => {
                return Err(setup("cannot lock the supervisor's lock file")(
                    errno.into(),
                ));
            }
        }
    }
}

impl Server {
    fn run(&mut self) {
        loop {
            if self.jobs.is_empty()
                && (self.leaving
                    || (self.connection.is_none() && self.idle_since.elapsed() >= IDLE_EXIT))
            {
                // Nothing is left to supervise: nothing unsupervised is left either.
                self.kill_orphans();
                return;
            }
            let mut fds = vec![
                poll_fd(self.listener.as_raw_fd(), libc::POLLIN),
                poll_fd(self.signals.as_raw_fd(), libc::POLLIN),
                poll_fd(self.notes.as_raw_fd(), libc::POLLIN),
            ];
            if let Some(connection) = &self.connection {
                let mut events = libc::POLLIN;
                if !connection.outbox.is_empty() {
                    events |= libc::POLLOUT;
                }
                fds.push(poll_fd(connection.stream.as_raw_fd(), events));
            }
            let timeout = if self.connection.is_none() && self.jobs.is_empty() {
                IDLE_EXIT
                    .saturating_sub(self.idle_since.elapsed())
                    .as_millis() as i32
                    + 1
            } else {
                -1
            };
            // SAFETY: `fds` is a valid array of pollfd for the call's duration.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                continue;
            }
            // Notes before ends: a job's supervisor notes its start before it can end.
            if fds[2].revents != 0 {
                self.read_notes();
            }
            if fds[1].revents != 0 {
                self.take_signals();
            }
            // The connection first: a worker's hang-up and its successor's connect
            // may come in one turn.
            if let Some(fd) = fds.get(3)
                && fd.revents != 0
            {
                self.serve_connection(fd.revents);
            }
            if fds[0].revents != 0 {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            // A worker that said goodbye gives way to its successor at once.
            if self.connection.is_some() && !self.leaving {
                let mut stream = stream;
                let _ = stream.write_all(&encode(&Report::Refused {
                    error: "another worker with this id is connected to this supervisor".into(),
                }));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.connection = Some(Connection {
                stream,
                inbox: Vec::new(),
                outbox: Vec::new(),
            });
            self.greeted = false;
            // A new worker: this supervisor stays for it.
            self.leaving = false;
        }
    }

    fn serve_connection(&mut self, revents: i16) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let mut closed = revents & (libc::POLLHUP | libc::POLLERR) != 0;
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match connection.stream.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => connection.inbox.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut requests = Vec::new();
        while let Some(end) = connection.inbox.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = connection.inbox.drain(..=end).collect();
            requests.push(serde_json::from_slice::<Request>(&line));
        }
        if connection.inbox.len() > MAX_LINE {
            eprintln!("the worker sent a line over {MAX_LINE} bytes; closing its connection");
            closed = true;
        }
        for request in requests {
            match request {
                Ok(request) => self.handle(request),
                Err(e) => eprintln!("unreadable request from the worker: {e}"),
            }
        }
        self.flush();
        if closed {
            self.connection = None;
            self.idle_since = Instant::now();
        }
    }

    fn flush(&mut self) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        while !connection.outbox.is_empty() {
            match connection.stream.write(&connection.outbox) {
                Ok(n) => {
                    connection.outbox.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The rest goes when the socket can take it; a broken one shows
                // as a hang-up on the next poll.
                Err(_) => return,
            }
        }
    }

    fn report(&mut self, report: &Report) {
        if let Some(connection) = self.connection.as_mut() {
            connection.outbox.extend_from_slice(&encode(report));
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Hello {
                base_env,
                user,
                cgroups,
            } => {
                self.base_env = base_env;
                // The turn through a range goes on across a worker's restarts.
                let range = user.as_ref().and_then(|user| user.uids);
                if self.uids.as_ref().map(JobUids::range) != range {
                    self.uids = range.map(JobUids::new);
                }
                self.user = user;
                self.cgroups = cgroups;
                self.greeted = true;
                // A worker that comes after a goodbye is served as any other.
                self.leaving = false;
            }
            Request::Launch(spawn) => self.launch(spawn),
            Request::Stop { job_id, grace_ms } => {
                if let Some(supervisor) = self.supervisor_of(&job_id) {
                    stop(supervisor, grace_ms);
                }
            }
            Request::Forget { job_id } => {
                match self.jobs.values_mut().find(|job| job.job_id == job_id) {
                    Some(running) => running.forgotten = true,
                    None => forget(&self.dir, &job_id),
                }
            }
            Request::List => {
                let running = self
                    .jobs
                    .values()
                    .filter(|job| !job.failed)
                    .map(|job| RunningJob {
                        job_id: job.job_id.clone(),
                        pid: job.pid,
                    })
                    .collect();
                let job_uids = self.uids.as_ref().map(JobUids::range);
                self.report(&Report::Jobs {
                    running,
                    job_uids,
                    limits: true,
                });
            }
            Request::Bye => {
                self.leaving = true;
                for supervisor in self.jobs.keys() {
                    stop(*supervisor, 0);
                }
            }
        }
    }

    fn supervisor_of(&self, job_id: &str) -> Option<Pid> {
        self.jobs
            .iter()
            .find(|(_, job)| job.job_id == job_id)
            .map(|(pid, _)| *pid)
    }

    fn launch(&mut self, spawn: Spawn) {
        let refusal = if !self.greeted {
            Some("the worker did not introduce itself".to_owned())
        } else if self.supervisor_of(&spawn.job_id).is_some() {
            Some("this job runs under this supervisor already".to_owned())
        } else if spawn.argv.is_empty() {
            Some("empty command".to_owned())
        } else {
            None
        };
        if let Some(error) = refusal {
            return self.report(&Report::SpawnFailed {
                job_id: spawn.job_id,
                error,
            });
        }
        let (user, uid) = match self.user_of_next_job() {
            Ok(user) => user,
            Err(error) => {
                return self.report(&Report::SpawnFailed {
                    job_id: spawn.job_id,
                    error: error.to_string(),
                });
            }
        };
        let me = getpid();
        // SAFETY: this process has one thread, so the child is a full copy that
        // may run any code; it never returns from `job_supervisor::run`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                self.become_job_supervisor();
                let settings = job_supervisor::Settings {
                    base_env: &self.base_env,
                    user: user.as_ref(),
                    cgroup: self.cgroups,
                    dir: &self.dir,
                    supervisor: me,
                };
                job_supervisor::run(&spawn, &settings)
            }
            Ok(ForkResult::Parent { child }) => {
                self.jobs.insert(
                    child,
                    Supervised {
                        job_id: spawn.job_id,
                        pid: None,
                        uid,
                        failed: false,
                        forgotten: false,
                    },
                );
            }
            Err(e) => self.report(&Report::SpawnFailed {
                job_id: spawn.job_id,
                error: format!("could not fork its supervisor: {e}"),
            }),
        }
    }

    /// Who the next job runs as: the job user, under a user id of its own
    /// (returned too) when the worker asked for them.
    ///
    /// # Errors
    /// Every id of the range is held by a job that still runs.
    fn user_of_next_job(&mut self) -> Result<(Option<JobUserIds>, Option<u32>), NoFreeJobUid> {
        let (Some(user), Some(uids)) = (&self.user, &mut self.uids) else {
            return Ok((self.user.clone(), None));
        };
        let in_use: HashSet<u32> = self.jobs.values().filter_map(|job| job.uid).collect();
        let uid = uids.take(&in_use).ok_or(NoFreeJobUid(uids.range()))?;
        let user = JobUserIds {
            uid,
            ..user.clone()
        };
        Ok((Some(user), Some(uid)))
    }

    /// In a freshly forked job supervisor: keeps only the standard streams and the
    /// note pipe (at [`NOTE_FD`]), and unblocks nothing (the job supervisor sets
    /// its own signal mask).
    fn become_job_supervisor(&self) {
        // SAFETY: plain system calls on descriptors this process owns.
        unsafe {
            libc::dup2(self.note_writer.as_raw_fd(), NOTE_FD);
            libc::fcntl(NOTE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            let closed = libc::syscall(
                libc::SYS_close_range,
                (NOTE_FD + 1) as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            // Before Linux 5.9: one by one, up to the limit of open files.
            if closed != 0 {
                let limit =
                    libc::sysconf(libc::_SC_OPEN_MAX).clamp(NOTE_FD as libc::c_long + 1, 1 << 20);
                for fd in NOTE_FD + 1..limit as i32 {
                    libc::close(fd);
                }
            }
        }
    }

    fn read_notes(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match self.notes.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => self.note_buffer.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        while let Some(end) = self.note_buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.note_buffer.drain(..=end).collect();
            match serde_json::from_slice::<StartNote>(&line) {
                Ok(note) => self.noted(note),
                Err(e) => eprintln!("unreadable note from a job's supervisor: {e}"),
            }
        }
    }

    fn noted(&mut self, note: StartNote) {
        let Some(job) = self.jobs.get_mut(&Pid::from_raw(note.supervisor_pid)) else {
            return;
        };
        let job_id = job.job_id.clone();
        let report = match (note.pid, note.error) {
            (Some(pid), _) => {
                job.pid = Some(pid);
                Report::Started { job_id, pid }
            }
            (None, error) => {
                job.failed = true;
                Report::SpawnFailed {
                    job_id,
                    error: error.unwrap_or_else(|| "it did not start".into()),
                }
            }
        };
        self.report(&report);
    }

    fn take_signals(&mut self) {
        let mut child_ended = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => child_ended = true,
                Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) => {
                    eprintln!("asked to stop: stopping every job");
                    self.handle(Request::Bye);
                }
                _ => {}
            }
        }
        if child_ended {
            self.reap();
        }
    }

    fn reap(&mut self) {
        let mut ended = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => ended.extend(status.pid()),
            }
        }
        // A job supervisor notes its start before it can end: what the ones just
        // reaped noted is in the pipe now, also if it was not when notes were
        // last read.
        self.read_notes();
        let mut orphans_left = false;
        for pid in ended {
            let Some(job) = self.jobs.remove(&pid) else {
                // An orphan of a job whose supervisor died, re-parented here: its
                // own children are re-parented here now, and are killed below.
                orphans_left = true;
                continue;
            };
            if job.failed {
                if job.forgotten {
                    forget(&self.dir, &job.job_id);
                }
                continue;
            }
            let end = match JobFile::read(&self.dir, &job.job_id) {
                Ok(Some(JobFile { end: Some(end), .. })) => end,
                _ => {
                    // Its supervisor died before the job's end: what it left runs
                    // on, re-parented here, and is killed below, as is whatever
                    // its cgroup holds.
                    orphans_left = true;
                    if let Some(group) = job.pid {
                        signal_group(Pid::from_raw(group as i32), Signal::SIGKILL);
                    }
                    if let Some(cgroup) = JobCgroup::locate(&job.job_id, pid) {
                        cgroup.kill_all_and_remove();
                    }
                    let file = JobFile {
                        job_id: job.job_id.clone(),
                        pid: job.pid.unwrap_or(0),
                        supervisor_pid: pid.as_raw() as u32,
                        end: Some(JobEnd::OwnerLost),
                    };
                    if let Err(e) = file.write(&self.dir) {
                        eprintln!("job {}: cannot write its file: {e}", job.job_id);
                    }
                    JobEnd::OwnerLost
                }
            };
            if job.forgotten {
                forget(&self.dir, &job.job_id);
            }
            self.report(&Report::Exited {
                job_id: job.job_id,
                end,
            });
        }
        if orphans_left {
            self.kill_orphans();
        }
        self.flush();
    }

    /// Kills every child of this process that is not a job supervisor: the
    /// remains of jobs whose own supervisor died.
    fn kill_orphans(&self) {
        for child in children_of(getpid()) {
            if !self.jobs.contains_key(&child) {
                let _ = kill(child, Signal::SIGKILL);
            }
        }
    }
}

/// Removes a job's file once the worker has recorded its end.
fn forget(dir: &Path, job_id: &str) {
    if let Err(e) = JobFile::remove(dir, job_id) {
        eprintln!("job {job_id}: cannot remove its file: {e}");
    }
}

/// Asks a job's supervisor to stop its job, the grace travelling as the signal's value.
fn stop(supervisor: Pid, grace_ms: u64) {
    let value = libc::sigval {
        sival_ptr: grace_ms as usize as *mut libc::c_void,
    };
    // SAFETY: plain system call; the supervisor is a child not yet reaped, so the
    // pid cannot name another process.
    unsafe {
        libc::sigqueue(supervisor.as_raw(), libc::SIGTERM, value);
    }
}

fn poll_fd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
