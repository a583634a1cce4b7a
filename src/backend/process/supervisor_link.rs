//! The worker's side of its supervisor: finds the supervisor of its directory or
//! starts one, introduces itself, launches and stops jobs through it, and routes
//! what it reports to each job's observations.
//!
//! Each connection (link) has a generation, and each job's route the generation
//! of the link that launched or found it. A link that drops is connected again at
//! once: a supervisor that still lives lists the jobs it runs, and their routes
//! move to the new link (re-attached, never ended); a job that ended while no
//! link was there ends as its job file says. An old link's end touches only the
//! routes still of its generation. A supervisor that went away (killed,
//! crashed) takes its jobs with it: each job it had gets a
//! [`Observation::Vanished`] with reason `OwnerLost`.
//!
//! A stop is confirmed by the job's end: until it comes, the stop is tried
//! again (a log line for each try that failed or went unanswered), and past the
//! grace and [`STOP_PATIENCE`] the job ends `Vanished` with reason
//! `StopUnconfirmed`: its process may still run.

use crate::backend::Observation;
use crate::locked::lock;
use crate::protocol::bounded::one_line;
use crate::protocol::reason;
use crate::report::error_chain;
use crate::supervisor::job_file::{JobEnd, JobFile};
use crate::supervisor::job_uids::JobUidRange;
use crate::supervisor::server::{MAX_SOCKET_PATH, socket_path};
use crate::supervisor::wire::{JobUserIds, Report, Request, RunningJob, Spawn, encode};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// How long a worker waits for a supervisor it started to listen, and for the
/// first answer of any supervisor.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long past its grace a stop waits for the job's end before it asks again.
const STOP_CONFIRM_WAIT: Duration = Duration::from_secs(2);
/// How long past its grace a stop keeps trying before the job ends lost
/// (`StopUnconfirmed`).
pub const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Why the supervisor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Its socket path does not fit a Unix socket address.
    #[error(
        "the supervisor's socket path {0} is longer than {MAX_SOCKET_PATH} bytes; use a shorter data directory"
    )]
    PathTooLong(PathBuf),
    /// It could not be started.
    #[error("cannot start the supervisor {program}: {source}")]
    Start {
        /// The program run in supervisor mode.
        program: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It did not answer in time, or the connection failed.
    #[error("the supervisor in {dir} did not answer: {reason}")]
    Unresponsive {
        /// Its directory.
        dir: PathBuf,
        /// What happened.
        reason: String,
    },
    /// It refused this worker.
    #[error("the supervisor refused this worker: {0}")]
    Refused(String),
    /// It does not hand jobs the user ids of their own this worker asks for
    /// (an older program, left running over an upgrade).
    #[error(
        "the supervisor in {dir} would not run jobs under user ids of their own \
         (--job-uids); it is an older flare-launcher: stop it once its jobs have \
         ended, then start the worker again"
    )]
    NoJobUids {
        /// Its directory.
        dir: PathBuf,
    },
}

/// A link the supervisor answered: the jobs it runs, and the reports of jobs it
/// sent before that answer.
struct Greeted {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    running: Vec<RunningJob>,
    early: Vec<Report>,
}

/// Why one attempt to greet the supervisor failed.
enum Greeting {
    /// The connection went before the answer came: worth another attempt.
    Dropped(String),
    /// Nothing another attempt would change.
    Failed(SupervisorError),
}

/// Why the supervisor did not start a job's program.
#[derive(Debug, thiserror::Error)]
pub enum SpawnRefusal {
    /// It could not start it: what it said (bounded when it goes into an event).
    #[error("{0}")]
    Failed(String),
    /// The job runs under the supervisor already.
    #[error("this job runs under the supervisor already")]
    AlreadyRunning,
    /// The supervisor went away before it answered.
    #[error("the job supervisor went away")]
    SupervisorGone,
    /// The job names limits that the supervisor, an older program left
    /// running over an upgrade, would not enforce.
    #[error(
        "the supervisor in {} is an older flare-launcher that cannot enforce cpus and \
         memory_mb; stop it once its jobs have ended, then start the worker again",
        .0.display()
    )]
    LimitsUnenforced(PathBuf),
}

/// Why a job could not be launched through the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum LaunchFailure {
    /// The job's program could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnRefusal),
    /// The supervisor is not there.
    #[error(transparent)]
    Unavailable(#[from] SupervisorError),
}

/// What the worker learns of a job from the supervisor.
struct Route {
    started: Option<oneshot::Sender<Result<u32, SpawnRefusal>>>,
    /// The launch request, until its start is known: sent again over a new
    /// link if the supervisor never read it.
    launch: Option<Spawn>,
    observe: mpsc::Sender<Observation>,
    /// The connection the job's launch went over (or that found it running):
    /// the job is lost with that connection's supervisor, not with an older one.
    generation: u64,
}

/// Where a launched job's start and observations go.
type JobChannels = (
    oneshot::Sender<Result<u32, SpawnRefusal>>,
    mpsc::Sender<Observation>,
);

/// Why a request with a route was not sent.
enum Routing {
    /// The job has a route already: it runs under the supervisor.
    Taken,
    /// The supervisor cannot be reached.
    Unavailable(SupervisorError),
}

/// A live connection's writing side: lines go to a task that writes them, so
/// that a caller that gives up (its future dropped) never leaves half a line.
struct Link {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    generation: u64,
}

struct Inner {
    dir: PathBuf,
    program: PathBuf,
    hello: Request,
    link: tokio::sync::Mutex<Option<Link>>,
    routes: Mutex<HashMap<String, Route>>,
    /// The observations of jobs the supervisor ran when the worker connected,
    /// routed before the first report is read, until [`Supervisor::follow`]
    /// takes them.
    found: Mutex<HashMap<String, mpsc::Receiver<Observation>>>,
    generations: std::sync::atomic::AtomicU64,
    /// The worker said goodbye: a link that drops now is not connected again
    /// (that would start a supervisor for a worker that has left).
    left: std::sync::atomic::AtomicBool,
    /// The supervisor last greeted enforces jobs' limits (an older one would
    /// run them without).
    enforces_limits: std::sync::atomic::AtomicBool,
}

/// A worker's handle on its supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Whether a connection to the supervisor is up now.
    pub async fn linked(&self) -> bool {
        self.inner
            .link
            .lock()
            .await
            .as_ref()
            .is_some_and(|link| !link.lines.is_closed())
    }

    /// Connects to the supervisor serving `dir`, starting `program supervise
    /// --dir DIR` when none does, and introduces this worker. Returns the jobs
    /// that supervisor runs (a worker restarting finds its jobs this way).
    ///
    /// # Errors
    /// A [`SupervisorError`] when no supervisor can be reached or started.
    pub async fn start(
        dir: &Path,
        program: &Path,
        base_env: Vec<(String, String)>,
        user: Option<JobUserIds>,
        cgroups: bool,
    ) -> Result<(Supervisor, Vec<RunningJob>), SupervisorError> {
        let socket = socket_path(dir);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SupervisorError::PathTooLong(socket));
        }
        let supervisor = Supervisor {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                program: program.to_owned(),
                hello: Request::Hello {
                    base_env,
                    user,
                    cgroups,
                },
                link: tokio::sync::Mutex::new(None),
                routes: Mutex::new(HashMap::new()),
                found: Mutex::new(HashMap::new()),
                generations: std::sync::atomic::AtomicU64::new(0),
                left: std::sync::atomic::AtomicBool::new(false),
                enforces_limits: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let mut link = supervisor.inner.link.lock().await;
        let running = supervisor.connect(&mut link).await?;
        drop(link);
        Ok((supervisor, running))
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<String, Route>> {
        lock(&self.inner.routes)
    }

    /// The range of user ids of their own this worker's jobs get, if any.
    fn job_uids(&self) -> Option<JobUidRange> {
        match &self.inner.hello {
            Request::Hello { user, .. } => user.as_ref().and_then(|user| user.uids),
            _ => None,
        }
    }

    /// Opens a connection (starting a supervisor if none listens), says hello,
    /// lists the jobs, and starts reading reports.
    ///
    /// A connection dropped before the answer is tried again until
    /// [`READY_TIMEOUT`]: it met a supervisor on its way out (told goodbye by
    /// this worker's predecessor), and the next attempt starts a new one; so is
    /// one refused while the supervisor has yet to see the previous link close.
    async fn connect(&self, link: &mut Option<Link>) -> Result<Vec<RunningJob>, SupervisorError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let greeted = loop {
            match self.greet().await {
                Ok(greeted) => break greeted,
                Err(Greeting::Dropped(reason)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%reason, "the supervisor dropped the connection; connecting again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Refused for an instant, until the supervisor has seen the
                // previous link (this worker's, or its predecessor's) close.
                Err(Greeting::Failed(SupervisorError::Refused(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(Greeting::Dropped(reason)) => {
                    return Err(SupervisorError::Unresponsive {
                        dir: self.inner.dir.clone(),
                        reason,
                    });
                }
                Err(Greeting::Failed(error)) => return Err(error),
            }
        };
        let Greeted {
            reader,
            writer,
            running,
            early,
        } = greeted;
        let generation = self
            .inner
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // What happened before the list: the list is as it left things.
        for report in early {
            self.dispatch(report);
        }
        // Routed before any report is read: a job that ends now is not missed.
        let mut found = lock(&self.inner.found);
        let mut routes = self.routes();
        for job in &running {
            match routes.get_mut(&job.job_id) {
                // Followed over an older link: the same supervisor runs it still.
                Some(route) => {
                    route.generation = generation;
                    if let Some(pid) = job.pid
                        && let Some(started) = route.started.take()
                    {
                        route.launch = None;
                        // Its start went out while no link was there.
                        let _ = route.observe.try_send(Observation::Running);
                        let _ = started.send(Ok(pid));
                    }
                }
                // The worker's first link: the jobs its predecessor left. (Later,
                // a job without a route is one whose launch was given up and
                // stopped.)
                None if generation == 0 => {
                    let (observe, observations) = mpsc::channel(4);
                    let _ = observe.try_send(Observation::Running);
                    routes.insert(
                        job.job_id.clone(),
                        Route {
                            started: None,
                            launch: None,
                            observe,
                            generation,
                        },
                    );
                    found.insert(job.job_id.clone(), observations);
                }
                None => {}
            }
        }
        // Followed over an older link, and no longer run: they ended while no
        // link was there to say so, or the supervisor is another one.
        let unlisted: Vec<(String, Route)> = routes
            .extract_if(|job_id, route| {
                route.generation != generation && !running.iter().any(|job| &job.job_id == job_id)
            })
            .collect();
        let reattached = routes
            .values()
            .filter(|r| r.generation == generation)
            .count();
        drop(routes);
        drop(found);
        if generation > 0 {
            tracing::info!(
                jobs = reattached,
                "connected to the job supervisor again; its jobs follow the new link"
            );
        }
        let resend = self.end_unlisted(unlisted, generation);
        let (lines, queued) = mpsc::unbounded_channel();
        for spawn in resend {
            let _ = lines.send(encode(&Request::Launch(spawn)));
        }
        *link = Some(Link { lines, generation });
        tokio::spawn(write_lines(writer, queued));
        tokio::spawn(self.clone().read_reports(reader, generation));
        Ok(running)
    }

    /// One attempt: connects (starting a supervisor if none listens), says hello
    /// and reads the list of the jobs the supervisor runs.
    async fn greet(&self) -> Result<Greeted, Greeting> {
        let dir = &self.inner.dir;
        let socket = socket_path(dir);
        let stream = match UnixStream::connect(&socket).await {
            Ok(stream) => stream,
            Err(_) => {
                self.spawn_supervisor().map_err(Greeting::Failed)?;
                self.wait_for_socket(&socket)
                    .await
                    .map_err(Greeting::Failed)?
            }
        };
        let (reader, mut writer) = stream.into_split();
        let mut greeting = encode(&self.inner.hello);
        greeting.extend(encode(&Request::List));
        writer
            .write_all(&greeting)
            .await
            .map_err(|e| Greeting::Dropped(e.to_string()))?;
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        let unresponsive = |reason: String| {
            Greeting::Failed(SupervisorError::Unresponsive {
                dir: dir.clone(),
                reason,
            })
        };
        // Reports of jobs may come before the answer: the supervisor sends them
        // on a link as soon as it accepts it.
        let mut early = Vec::new();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let running = loop {
            line.clear();
            let answer = tokio::time::timeout_at(deadline, reader.read_line(&mut line)).await;
            match answer {
                Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Report>(&line) {
                    Ok(Report::Jobs {
                        running,
                        job_uids,
                        limits,
                    }) => {
                        if job_uids != self.job_uids() {
                            return Err(Greeting::Failed(SupervisorError::NoJobUids {
                                dir: dir.clone(),
                            }));
                        }
                        self.inner
                            .enforces_limits
                            .store(limits, std::sync::atomic::Ordering::Relaxed);
                        break running;
                    }
                    Ok(Report::Refused { error }) => {
                        return Err(Greeting::Failed(SupervisorError::Refused(error)));
                    }
                    Ok(report) => early.push(report),
                    Err(e) => return Err(unresponsive(format!("unreadable answer: {e}"))),
                },
                Ok(Ok(_)) => return Err(Greeting::Dropped("it closed the connection".into())),
                Ok(Err(e)) => return Err(Greeting::Dropped(e.to_string())),
                Err(_) => return Err(unresponsive(format!("no answer within {READY_TIMEOUT:?}"))),
            }
        };
        Ok(Greeted {
            reader,
            writer,
            running,
            early,
        })
    }

    fn spawn_supervisor(&self) -> Result<(), SupervisorError> {
        let start = |source| SupervisorError::Start {
            program: self.inner.program.clone(),
            source,
        };
        std::fs::create_dir_all(&self.inner.dir).map_err(start)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.inner.dir.join("supervisor.log"))
            .map_err(start)?;
        // Its environment is empty: the worker's secrets stay the worker's; jobs
        // get theirs from the hello.
        let mut command = tokio::process::Command::new(&self.inner.program);
        command
            .arg("supervise")
            .arg("--dir")
            .arg(&self.inner.dir)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // It starts a session of its own at once (it must not be a group
            // leader for that): signals to the worker's group or terminal do not
            // reach it, and it outlives the worker.
            .stderr(log);
        let mut child = command.spawn().map_err(start)?;
        // Reaped when it exits; it outlives the worker otherwise.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    async fn wait_for_socket(&self, socket: &Path) -> Result<UnixStream, SupervisorError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => return Ok(stream),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(SupervisorError::Unresponsive {
                        dir: self.inner.dir.clone(),
                        reason: format!(
                            "it did not listen within {READY_TIMEOUT:?} ({e}); see {}",
                            self.inner.dir.join("supervisor.log").display()
                        ),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Reads a link's reports until it drops, then connects again (see
    /// [`Supervisor::lost`]). Boxed, with its type named: connecting again
    /// spawns the reading of the new link.
    fn read_reports(
        self,
        mut reader: BufReader<OwnedReadHalf>,
        generation: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => match serde_json::from_str::<Report>(&line) {
                        Ok(report) => self.dispatch(report),
                        Err(e) => {
                            tracing::error!(error = %error_chain(&e), "unreadable report from the supervisor")
                        }
                    },
                }
            }
            self.lost(generation).await;
        })
    }

    fn dispatch(&self, report: Report) {
        let mut routes = self.routes();
        match report {
            Report::Started { job_id, pid } => {
                if let Some(route) = routes.get_mut(&job_id) {
                    route.launch = None;
                    // Room for it: the channel is fresh.
                    let _ = route.observe.try_send(Observation::Running);
                    if let Some(started) = route.started.take() {
                        let _ = started.send(Ok(pid));
                    }
                }
            }
            Report::SpawnFailed { job_id, error } => match routes.remove(&job_id) {
                Some(Route {
                    started: Some(started),
                    ..
                }) => {
                    let _ = started.send(Err(SpawnRefusal::Failed(error)));
                }
                Some(followed) => {
                    let _ = followed
                        .observe
                        .try_send(observation_of(JobEnd::NotStarted { error }));
                }
                None => {}
            },
            Report::Exited { job_id, end } => {
                if let Some(route) = routes.remove(&job_id) {
                    let _ = route.observe.try_send(observation_of(end));
                }
            }
            Report::Jobs { .. } => {}
            Report::Refused { error } => {
                tracing::error!(error = %one_line(&error), "the supervisor refused a request")
            }
        }
    }

    /// Ends the routes of jobs an older link followed that the supervisor no
    /// longer runs: as their job files say, else (no end kept: the supervisor
    /// is another one) as lost with their owner. A launch among them whose
    /// start is not known and that left no file went with the old link before
    /// the supervisor read it: its route moves to the link of `generation`, and
    /// its request is returned, to be sent again.
    fn end_unlisted(&self, unlisted: Vec<(String, Route)>, generation: u64) -> Vec<Spawn> {
        let mut lost = 0;
        let mut resend = Vec::new();
        for (job_id, mut route) in unlisted {
            let file = JobFile::read(&self.inner.dir, &job_id).ok().flatten();
            let end = match file {
                Some(JobFile {
                    end: Some(end),
                    pid,
                    ..
                }) => {
                    if let Some(started) = route.started.take() {
                        // It started and ended while no link was there.
                        let _ = route.observe.try_send(Observation::Running);
                        let _ = started.send(Ok(pid));
                    }
                    end
                }
                _ => {
                    if let Some(spawn) = route.launch.take() {
                        route.generation = generation;
                        self.routes().insert(job_id, route);
                        resend.push(spawn);
                        continue;
                    }
                    JobEnd::OwnerLost
                }
            };
            match (route.started, end) {
                (Some(started), JobEnd::NotStarted { error }) => {
                    let _ = started.send(Err(SpawnRefusal::Failed(error)));
                }
                (Some(started), _) => {
                    let _ = started.send(Err(SpawnRefusal::SupervisorGone));
                }
                (None, end) => {
                    lost += usize::from(end == JobEnd::OwnerLost);
                    let _ = route.observe.try_send(observation_of(end));
                }
            }
        }
        if lost > 0 {
            tracing::error!(
                jobs = lost,
                "the job supervisor went away; its jobs are lost"
            );
        }
        resend
    }

    /// The link of `generation` is gone. If routes are still of it, it is
    /// connected again at once: a supervisor that lives on keeps its jobs, which
    /// follow the new link. Only when no supervisor can be reached are the
    /// routes of this generation ended as lost; a newer link's are never touched.
    async fn lost(&self, generation: u64) {
        // Under the link's lock: no launch is between connecting and routing.
        let mut link = self.inner.link.lock().await;
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            *link = None;
        }
        let orphaned = self.routes().values().any(|r| r.generation == generation);
        let left = self.inner.left.load(std::sync::atomic::Ordering::Relaxed);
        if orphaned && link.is_none() && !left {
            match self.reconnect(&mut link).await {
                // The new link re-attached the routes, or ended them as their
                // job files say.
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "could not connect to the job supervisor again")
                }
            }
        }
        let routes: Vec<Route> = self
            .routes()
            .extract_if(|_, route| route.generation == generation)
            .map(|(_, route)| route)
            .collect();
        drop(link);
        if !routes.is_empty() {
            tracing::error!(
                jobs = routes.len(),
                "the job supervisor went away; its jobs are lost"
            );
        }
        for route in routes {
            if let Some(started) = route.started {
                let _ = started.send(Err(SpawnRefusal::SupervisorGone));
            }
            let _ = route.observe.try_send(observation_of(JobEnd::OwnerLost));
        }
    }

    /// Connects again after a link dropped.
    async fn reconnect(&self, link: &mut Option<Link>) -> Result<(), SupervisorError> {
        self.connect(link).await.map(|_| ())
    }

    /// Sends one request, connecting first if there is no connection. Returns
    /// once the request is queued for the connection.
    async fn send(&self, request: &Request) -> Result<(), SupervisorError> {
        self.send_routed(request, None).await.map_err(|e| match e {
            Routing::Unavailable(e) => e,
            Routing::Taken => unreachable!("nothing to route"),
        })
    }

    /// Sends one request as [`Supervisor::send`] does; with a job's channels,
    /// the job's reports go to them from the connection the request goes over.
    /// The route is gone again when the request could not be sent.
    ///
    /// A link whose writing side has gone (it dropped, and its reader has yet to
    /// see it) is replaced at once: connecting again sends a routed launch anew
    /// (its start unknown, no file of it), and any other request goes over the
    /// new link.
    async fn send_routed(
        &self,
        request: &Request,
        job: Option<(&str, JobChannels)>,
    ) -> Result<(), Routing> {
        let mut link = self.inner.link.lock().await;
        if link.is_none() {
            self.connect(&mut link)
                .await
                .map_err(Routing::Unavailable)?;
        }
        let Some(live) = link.as_ref() else {
            unreachable!("connected just above");
        };
        let routed = job.as_ref().map(|(job_id, _)| (*job_id).to_owned());
        if let Some((job_id, (started, observe))) = job {
            match self.routes().entry(job_id.to_owned()) {
                Entry::Occupied(_) => return Err(Routing::Taken),
                Entry::Vacant(vacant) => vacant.insert(Route {
                    started: Some(started),
                    launch: match request {
                        Request::Launch(spawn) => Some(spawn.clone()),
                        _ => None,
                    },
                    observe,
                    generation: live.generation,
                }),
            };
        }
        if live.lines.send(encode(request)).is_ok() {
            return Ok(());
        }
        *link = None;
        let sent_again = routed.is_some() && matches!(request, Request::Launch(_));
        let connected = self
            .connect(&mut link)
            .await
            .and_then(|_| match link.as_ref() {
                Some(live) if sent_again || live.lines.send(encode(request)).is_ok() => Ok(()),
                _ => Err(SupervisorError::Unresponsive {
                    dir: self.inner.dir.clone(),
                    reason: "the connection is gone".into(),
                }),
            });
        connected.map_err(|e| {
            if let Some(job_id) = &routed {
                self.routes().remove(job_id);
            }
            Routing::Unavailable(e)
        })
    }

    /// Launches a job; returns its first process's pid and its observations (the
    /// first being `Running`).
    ///
    /// # Errors
    /// [`LaunchFailure::Spawn`] when the program cannot be started,
    /// [`LaunchFailure::Unavailable`] when the supervisor cannot be reached.
    pub async fn launch(
        &self,
        spawn: Spawn,
    ) -> Result<(u32, mpsc::Receiver<Observation>), LaunchFailure> {
        if !spawn.limits.is_none()
            && !self
                .inner
                .enforces_limits
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(SpawnRefusal::LimitsUnenforced(self.inner.dir.clone()).into());
        }
        let job_id = spawn.job_id.clone();
        let (started, answer) = oneshot::channel();
        let (observe, observations) = mpsc::channel(4);
        let routed = self
            .send_routed(&Request::Launch(spawn), Some((&job_id, (started, observe))))
            .await;
        match routed {
            Ok(()) => {}
            Err(Routing::Taken) => {
                return Err(SpawnRefusal::AlreadyRunning.into());
            }
            Err(Routing::Unavailable(e)) => return Err(e.into()),
        }
        let mut pending = PendingLaunch {
            supervisor: self.clone(),
            job_id: Some(job_id),
        };
        match answer.await {
            Ok(Ok(pid)) => {
                pending.job_id = None;
                Ok((pid, observations))
            }
            Ok(Err(error)) => {
                pending.job_id = None;
                Err(error.into())
            }
            Err(_) => Err(LaunchFailure::Unavailable(SupervisorError::Unresponsive {
                dir: self.inner.dir.clone(),
                reason: "it went away during the launch".into(),
            })),
        }
    }

    /// The observations of a job the supervisor ran when the worker connected.
    pub fn follow(&self, job_id: &str) -> mpsc::Receiver<Observation> {
        lock(&self.inner.found).remove(job_id).unwrap_or_else(|| {
            // Not listed: it ended before the worker asked; its file says how.
            let (_, observations) = mpsc::channel(1);
            observations
        })
    }

    /// Asks for a job to stop: SIGTERM now, SIGKILL after `grace`. Returns once
    /// the request is sent (or could not be); a task of its own then waits for
    /// the job's end and tries again until it comes (see [`Supervisor::confirm_stop`]).
    pub async fn stop(&self, job_id: &str, grace: Duration) {
        let sent = match self.send(&stop_request(job_id, grace)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(tries = 1, error = %error_chain(&e), "could not ask the supervisor to stop the job; trying again");
                false
            }
        };
        let confirm = self.clone().confirm_stop(job_id.to_owned(), grace, sent);
        tokio::spawn(confirm.instrument(tracing::Span::current()));
    }

    /// Waits for the end of a job told to stop (its route gone: its end went to
    /// the job); asks again when a try failed, and forcefully once the grace and
    /// [`STOP_CONFIRM_WAIT`] are over. Past the grace and [`STOP_PATIENCE`], the
    /// job ends `Vanished` (`StopUnconfirmed`). A job without a route (a launch
    /// given up) needs only the request to go.
    async fn confirm_stop(self, job_id: String, grace: Duration, mut sent: bool) {
        let began = tokio::time::Instant::now();
        let give_up = began + grace + STOP_PATIENCE;
        let mut delays = crate::retry::Delays::default();
        let mut next_try = if sent {
            began + grace + STOP_CONFIRM_WAIT
        } else {
            began + delays.next_delay()
        };
        let mut tries = 1;
        loop {
            let routed = self.routes().contains_key(&job_id);
            if sent && !routed {
                return;
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                break;
            }
            if now >= next_try {
                tries += 1;
                if sent {
                    tracing::warn!(tries, "the job did not end after its stop; asking again");
                }
                let grace_left = (began + grace).saturating_duration_since(now);
                match self.send(&stop_request(&job_id, grace_left)).await {
                    Ok(()) => {
                        sent = true;
                        next_try = now + grace_left + STOP_CONFIRM_WAIT;
                    }
                    Err(e) => {
                        tracing::warn!(tries, error = %error_chain(&e), "could not ask the supervisor to stop the job; trying again");
                        next_try = now + delays.next_delay();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(route) = self.routes().remove(&job_id) {
            tracing::error!(
                tries,
                "the job's end after its stop was never confirmed; it may still run"
            );
            let _ = route.observe.try_send(Observation::Vanished {
                reason: reason::STOP_UNCONFIRMED,
                message: format!(
                    "its supervisor did not confirm the job's end within {:?} of its stop; it may still run",
                    grace + STOP_PATIENCE
                ),
            });
        }
    }

    /// Tells the supervisor the job's end is recorded.
    pub async fn forget(&self, job_id: &str) {
        let request = Request::Forget {
            job_id: job_id.to_owned(),
        };
        if let Err(e) = self.send(&request).await {
            tracing::debug!(error = %error_chain(&e), "could not tell the supervisor a job's end is recorded");
        }
    }

    /// Lets go of the supervisor without a goodbye, as a worker that dies does:
    /// it keeps running its jobs for the worker that next connects.
    pub async fn detach(&self) {
        let mut link = self.inner.link.lock().await;
        self.inner
            .left
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Its writer ends with the queue, closing the connection.
        link.take();
    }

    /// Tells the supervisor the worker leaves in order: whatever still runs is
    /// killed, and the supervisor exits once nothing runs.
    pub async fn leave(&self) {
        let link = self.inner.link.lock().await;
        self.inner
            .left
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(live) = link.as_ref()
            && live.lines.send(encode(&Request::Bye)).is_err()
        {
            tracing::warn!("could not say goodbye to the supervisor");
        }
    }

    /// The directory the supervisor serves.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// The request to stop `job_id`, SIGKILL after `grace`.
fn stop_request(job_id: &str, grace: Duration) -> Request {
    Request::Stop {
        job_id: job_id.to_owned(),
        grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Writes queued lines to the supervisor until the connection or the queue ends.
async fn write_lines(mut writer: OwnedWriteHalf, mut queued: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = queued.recv().await {
        if let Err(e) = writer.write_all(&line).await {
            tracing::warn!(error = %error_chain(&e), "could not write to the supervisor");
            return;
        }
    }
}

/// A launch that has not been answered: if it is given up (its future dropped,
/// e.g. at the start timeout), the job is killed should it start after all.
struct PendingLaunch {
    supervisor: Supervisor,
    job_id: Option<String>,
}

impl Drop for PendingLaunch {
    fn drop(&mut self) {
        let Some(job_id) = self.job_id.take() else {
            return;
        };
        self.supervisor.routes().remove(&job_id);
        let supervisor = self.supervisor.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Dropped inside the job's span: the stop's log lines stay the job's.
            let stop = async move { supervisor.stop(&job_id, Duration::ZERO).await };
            runtime.spawn(stop.instrument(tracing::Span::current()));
        }
    }
}

/// What a job's end means to its job task.
pub fn observation_of(end: JobEnd) -> Observation {
    match end {
        JobEnd::Exited {
            exit,
            stopped,
            oom_killed,
        } => Observation::Exited {
            exit,
            stopped,
            reason: oom_killed.then_some(reason::OOM_KILLED),
        },
        JobEnd::OwnerLost => Observation::Vanished {
            reason: reason::OWNER_LOST,
            message: "the job's supervisor went away; the job was killed with it".into(),
        },
        JobEnd::NotStarted { error } => Observation::StartFailed {
            reason: reason::SPAWN_FAILED.into(),
            message: error,
        },
    }
}
