//! The worker: wiring of intake, control and job tasks, and an orderly shutdown.
//! Each task is handed only what it uses; every job's record and events are
//! written by the [`story`] author.
//!
//! [`Worker::start`] connects, checks the server, prepares streams and buckets,
//! subscribes to control requests, starts pulling launch requests and starts
//! sweeping old job logs ([`retention`]).
//! [`Worker::shutdown`] stops pulling, lets running jobs finish within the drain
//! timeout, then terminates the rest (reason `WorkerShutdown`) and waits for their
//! final events.

pub mod adoption;
pub mod control;
pub mod fd_limit;
pub mod intake;
pub mod job;
pub mod orphans;
pub mod output;
pub mod placement;
pub mod reaper;
pub mod recovery;
pub mod registry;
pub mod reply;
pub mod request_ack;
pub mod resource_status;
pub mod retention;
pub mod service;
pub mod story;

use crate::backend::container::ContainerSettings;
use crate::backend::container::allowed::LabelPolicy;
use crate::backend::process::ProcessSettings;
use crate::backend::process::job_env::{JobEnvError, JobEnvPolicy};
use crate::backend::process::job_user::{JobUser, JobUserError};
use crate::backend::registry::{self as backend_registry, BackendSetup, BackendStartError};
use crate::backend::{Backend, Backends, Leaving};
use crate::config::{InvalidConfig, WorkerConfig};
use crate::nats::connect::{self, ConnectError};
use crate::nats::replicas::Replicas;
use crate::nats::setup::{self, Layout, SetupError};
use crate::nats::subjects::Subjects;
use crate::observe::{Bound, Endpoint, ListenError, Metrics, Probes, Readiness};
use crate::pool::lease::{LeaseError, LeaseKeeper};
use crate::pool::members::Members;
use crate::pool::owners::OwnerIndex;
use crate::protocol::{BackendKind, DEFAULT_GRACE_S, WorkerLease, random_suffix, timestamp_now};
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use crate::resources::inventory::InventoryError;
use crate::store::JobStore;
use job::JobSupport;
use registry::JobCommand;
use registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use story::{Author, AuthorParts};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits, after terminating the remaining jobs, for their final
/// events beyond their grace period.
const FINAL_EVENTS_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a handing-over worker tells the jobs still launching to let go.
const HAND_OVER_AGAIN: Duration = Duration::from_millis(200);
/// How long shutdown waits for the connection to hand over its last messages.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] InvalidConfig),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server lacks something, or streams and buckets could not be prepared.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The worker could not register as a NATS service, or subscribe to its
    /// control subjects.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    /// A backend cannot be used (its log directory, its supervisor, engine or
    /// cluster).
    #[error(transparent)]
    Backend(#[from] BackendStartError),
    /// Jobs cannot run as the configured user.
    #[error(transparent)]
    JobUser(#[from] JobUserError),
    /// The job environment policy is unusable.
    #[error(transparent)]
    JobEnv(#[from] JobEnvError),
    /// The resource policy cannot have the GPUs it is told to hand out.
    #[error(transparent)]
    Resources(#[from] InventoryError),
    /// The worker's lease could not be taken.
    #[error("cannot take the worker's lease: {0}")]
    Lease(#[source] LeaseError),
    /// The probe endpoint's address could not be bound.
    #[error(transparent)]
    Endpoint(#[from] ListenError),
}

/// The set of `started` backends, `default` the one for requests that name none.
fn backends_with_default(
    started: Vec<Arc<dyn Backend>>,
    default: BackendKind,
) -> Result<Backends, WorkerError> {
    let Some(first) = started.iter().find(|backend| backend.kind() == default) else {
        return Err(InvalidConfig::DefaultBackendNotStarted(default).into());
    };
    Ok(started
        .iter()
        .fold(Backends::new(first.clone()), |set, backend| {
            if backend.kind() == default {
                set
            } else {
                set.with(backend.clone())
            }
        }))
}

/// A running worker.
pub struct Worker {
    /// What the jobs' tasks share: the backends, and the hard stop.
    jobs: Arc<JobSupport>,
    /// The jobs it runs.
    registry: Registry,
    /// Its connection, flushed at the end.
    client: async_nats::Client,
    /// At shutdown, wait for the jobs rather than hand them over.
    drain: bool,
    drain_timeout: Duration,
    /// Takes over the jobs of workers that went.
    adoption: JoinHandle<()>,
    /// Stops keeping the lease.
    stop_lease: CancellationToken,
    /// Keeps the lease; hands the keeper back when stopped.
    lease_keeper: JoinHandle<LeaseKeeper>,
    stop_intake: CancellationToken,
    stop_control: CancellationToken,
    intake: JoinHandle<()>,
    control: JoinHandle<()>,
    /// Answers questions about the worker's resources.
    resource_answers: JoinHandle<()>,
    /// Answers readers of the jobs' output.
    output_answers: JoinHandle<()>,
    /// Removes old job logs.
    sweeper: JoinHandle<()>,
    /// Removes workloads no job claims.
    orphan_sweeper: JoinHandle<()>,
    /// Job tasks (and the intake's), which the drain waits for.
    tasks: TaskTracker,
    /// Control answers in flight, which shutdown lets finish after the jobs.
    answers: TaskTracker,
    /// Answers probes, if asked to.
    endpoint: Option<Endpoint>,
    /// Its registration in NATS's service discovery.
    service: service::Registration,
}

impl Worker {
    /// Starts a worker and returns once it takes requests.
    ///
    /// # Errors
    /// A [`WorkerError`] saying what is missing.
    pub async fn start(config: WorkerConfig) -> Result<Worker, WorkerError> {
        config.validate()?;
        // Jobs of the worker's own user cannot read its environment or memory
        // through /proc then.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %error_chain(&e), "cannot make the worker non-dumpable: same-user jobs can read its environment");
        }
        fd_limit::ensure_open_files(config.max_jobs).log();
        let endpoint = match config.metrics_listen {
            Some(address) => Some(Bound::bind(address).await?),
            None => None,
        };
        if config.keep_worker_id
            && let Err(e) = crate::config::keep_worker_id(&config.data_dir, &config.worker_id)
        {
            tracing::warn!(worker_id = %config.worker_id, error = %error_chain(&e), "cannot keep the worker id in the data directory; a restart will get another");
        }
        reaper::reap_orphans_if_init();
        let log_dir = config.data_dir.join("logs");
        let job_user =
            JobUser::for_jobs(config.job_user.as_ref(), config.job_uids, config.max_jobs)?;
        let job_user_name = job_user.as_ref().map(|user| user.name.clone());
        let env_policy = JobEnvPolicy::from_lists(
            config.job_env_allow.as_deref(),
            config.job_env_deny.as_deref(),
        )?;
        // Before anything is connected: a worker without the GPUs it is told to
        // hand out does not start.
        let resources = ResourcePolicy::from_config(&config.resources).await?;
        let client = connect::connect(
            &config.nats,
            &format!("flare-launcher worker {}", config.worker_id),
            true,
        )
        .await?;
        let js = async_nats::jetstream::new(client.clone());
        let subjects = Subjects::new(&config.subject_prefix);
        let lease_record = lease_of(&config);
        let service = service::Registration::start(&client, &lease_record).await?;
        let subscriptions =
            control::ControlSubscriptions::subscribe(&service, &subjects, &config.worker_id)
                .await?;
        let resource_questions = resource_status::ResourceSubscriptions::subscribe(
            &service,
            &subjects,
            &config.worker_id,
            &config.pool,
        )
        .await?;
        let output_requests = output::subscribe(&service, &subjects, &config.worker_id).await?;
        setup::check_server(&client, &js).await?;
        // Validated above: a count out of range never gets here.
        let replicas = Replicas::new(config.replicas).unwrap_or_default();
        let layout = Layout::new(js.clone(), subjects.clone(), &config.pool, config.ack_wait)
            .with_replicas(replicas);
        let prepared = layout.prepare().await?;
        let metrics = Arc::new(Metrics::new(config.max_jobs));
        // The backends come last: a worker that cannot reach NATS starts no
        // supervisor and watches no engine.
        let setup = BackendSetup {
            process: ProcessSettings {
                log_dir: log_dir.clone(),
                supervisor_dir: config.data_dir.join("supervisor").join(&config.worker_id),
                supervisor_program: config.supervisor_program.clone(),
                job_user,
                env_policy,
                cgroups: config.job_cgroups,
                gpu_naming: config.resources.gpu_naming,
            },
            containers: ContainerSettings {
                log_dir: log_dir.clone(),
                worker_id: config.worker_id.clone(),
                pool: config.pool.clone(),
                labels: LabelPolicy {
                    prefixes: config.allowed_label_prefixes.clone(),
                    keys: config.allowed_label_keys.clone(),
                },
                worker_secrets: config.nats.secret_files(),
                metrics: metrics.clone(),
                config: (),
            },
            docker: config.docker.clone(),
            k8s: config.k8s.clone(),
        };
        let started = backend_registry::start_all(&config.backends, &setup).await?;
        let backends = backends_with_default(started, config.backend)?;

        let store = JobStore::new(prepared.bucket, layout.clone()).with_retention(config.retention);
        let registry = Registry::default();
        let members = Members::new(prepared.workers.clone(), client.clone());
        let owners = OwnerIndex::new(prepared.owners, client.clone());
        let (keeper, lease) = LeaseKeeper::take(
            prepared.workers,
            js.clone(),
            lease_record,
            Arc::new({
                let registry = registry.clone();
                move || registry.count()
            }),
        )
        .await
        .map_err(WorkerError::Lease)?;
        let stop_lease = CancellationToken::new();
        let lease_keeper = tokio::spawn(keeper.run(stop_lease.clone()));
        let author = Arc::new(Author::new(AuthorParts {
            store: store.clone(),
            owners: owners.clone(),
            lease: lease.clone(),
            js,
            events: prepared.events,
            subjects: subjects.clone(),
            layout: layout.clone(),
            worker_id: config.worker_id.clone(),
            pool: config.pool.clone(),
            metrics: metrics.clone(),
        }));
        let jobs = Arc::new(JobSupport {
            backends,
            hard_stop: CancellationToken::new(),
        });
        let tasks = TaskTracker::new();
        let answers = TaskTracker::new();
        let stop_control = CancellationToken::new();
        let stop_intake = CancellationToken::new();
        let readiness = Readiness {
            client: client.clone(),
            lease: lease.clone(),
            backends: jobs.backends.clone(),
            leaving: stop_intake.clone(),
        };
        let control = tokio::spawn(control::run(
            Arc::new(control::Control {
                author: author.clone(),
                store: store.clone(),
                registry: registry.clone(),
                client: client.clone(),
                subjects: subjects.clone(),
                worker_id: config.worker_id.clone(),
                members: members.clone(),
            }),
            subscriptions,
            stop_control.clone(),
            answers.clone(),
        ));
        let capacity = Arc::new(Semaphore::new(config.max_jobs));
        let recovery = recovery::Recovery {
            author: author.clone(),
            jobs: jobs.clone(),
            registry: registry.clone(),
            resources: resources.clone(),
        };
        recovery::resume_jobs(&recovery, &capacity, &tasks).await;
        let (adoption_waiting, adoption_waits) = tokio::sync::watch::channel(false);
        let adoption = tokio::spawn(adoption::run(
            adoption::Adoption {
                recovery,
                members: members.clone(),
                owners,
                lease,
                capacity: capacity.clone(),
                max_jobs: config.max_jobs,
                tracker: tasks.clone(),
                pool: config.pool.clone(),
                lease_ttl: config.lease,
                owner_lost_after: config.owner_lost_after,
                waiting: adoption_waiting,
                metrics: metrics.clone(),
            },
            stop_intake.clone(),
        ));
        // After the recovery, which holds again the GPUs of the jobs it found: a
        // question asked meanwhile waits in its subscription instead of being
        // told they are free.
        let resource_answers = tokio::spawn(resource_status::run(
            resource_status::ResourceAnswers {
                resources: resources.clone(),
                worker_id: config.worker_id.clone(),
                pool: config.pool.clone(),
            },
            resource_questions,
            stop_control.clone(),
        ));
        let output_answers = tokio::spawn(output::run(
            output::OutputAnswers {
                store: store.clone(),
                client: client.clone(),
                worker_id: config.worker_id.clone(),
                log_dir: log_dir.clone(),
            },
            output_requests,
            stop_control.clone(),
            answers.clone(),
        ));
        // After the recovery, so that re-attached jobs' logs are spared; stops
        // with the intake.
        let sweeper = tokio::spawn(retention::run(
            log_dir,
            config.retention,
            registry.clone(),
            stop_intake.clone(),
        ));
        let orphan_sweeper = tokio::spawn(orphans::run(
            orphans::OrphanSweep {
                backends: jobs.backends.clone(),
                registry: registry.clone(),
                store,
            },
            config.orphan_grace,
            stop_intake.clone(),
        ));
        let probe_resources = resources.clone();
        let intake = tokio::spawn(intake::run(
            Arc::new(intake::Intake {
                author,
                jobs: jobs.clone(),
                registry: registry.clone(),
                resources,
                census: placement::Census {
                    client: client.clone(),
                    subject: subjects.pool_resources(&config.pool),
                },
                invalid: intake::InvalidReports {
                    client: client.clone(),
                    subject: subjects.invalid(),
                },
                max_request_bytes: config.max_request_bytes,
                members,
                ack_wait: config.ack_wait,
            }),
            prepared.consumer,
            layout,
            capacity,
            adoption_waits,
            stop_intake.clone(),
            tasks.clone(),
        ));
        tracing::info!(
            worker_id = %config.worker_id,
            pool = %config.pool,
            backend = %config.backend,
            backends = ?config.backends,
            max_jobs = config.max_jobs,
            max_request_bytes = config.max_request_bytes,
            retention = ?config.retention,
            job_user = job_user_name.as_deref().unwrap_or("(the worker's)"),
            launch_subject = %subjects.launch(&config.pool),
            "worker ready"
        );
        let endpoint = endpoint.map(|bound| {
            bound.serve(Probes {
                readiness,
                metrics,
                running: Arc::new({
                    let registry = registry.clone();
                    move || registry.count()
                }),
                resources: probe_resources,
            })
        });
        Ok(Worker {
            jobs,
            registry,
            client,
            drain: config.drain,
            drain_timeout: config.drain_timeout,
            adoption,
            stop_lease,
            lease_keeper,
            stop_intake,
            stop_control,
            intake,
            control,
            resource_answers,
            output_answers,
            sweeper,
            orphan_sweeper,
            tasks,
            answers,
            endpoint,
            service,
        })
    }

    /// Where the worker answers probes, if it does (the port the system chose
    /// for port 0).
    pub fn probe_address(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(Endpoint::address)
    }

    /// Starts a worker, runs it until `shutdown` completes, then shuts it down.
    ///
    /// # Errors
    /// A [`WorkerError`] when it cannot start.
    pub async fn run(
        config: WorkerConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let worker = Worker::start(config).await?;
        shutdown.await;
        worker.shutdown().await;
        Ok(())
    }

    /// Stops taking requests, then either hands its jobs over to the pool
    /// (the default: the jobs' tasks let go of them without touching their
    /// workloads, and the lease is released, so that the pool adopts the Docker
    /// and Kubernetes jobs at once; process jobs stay under their supervisor for
    /// the worker that next starts on this host) or, with `drain`, waits for
    /// them, terminates the rest and waits for their final events.
    pub async fn shutdown(self) {
        let Worker {
            jobs,
            registry,
            client,
            drain,
            drain_timeout,
            adoption,
            stop_lease,
            lease_keeper,
            stop_intake,
            stop_control,
            intake,
            control,
            resource_answers,
            output_answers,
            sweeper,
            orphan_sweeper,
            tasks,
            answers,
            endpoint,
            service,
        } = self;
        let running = || registry.count();
        tracing::info!(
            running = running(),
            drain,
            ?drain_timeout,
            "shutting down: no new jobs"
        );
        stop_intake.cancel();
        for (what, task) in [
            ("intake", intake),
            ("log sweep", sweeper),
            ("orphan sweep", orphan_sweeper),
            ("adoption", adoption),
        ] {
            if let Err(e) = task.await {
                tracing::error!(error = %error_chain(&e), "{what} task failed");
            }
        }
        tasks.close();
        if drain {
            drain_jobs(&jobs, &tasks, drain_timeout, running).await;
        } else {
            hand_over_jobs(&registry, &tasks, drain_timeout, running).await;
        }
        // Released before control stops: a terminate for a job handed over that
        // reaches this worker meanwhile is written into its record.
        stop_lease.cancel();
        match lease_keeper.await {
            Ok(keeper) => keeper.release().await,
            Err(e) => tracing::error!(error = %error_chain(&e), "lease task failed"),
        }
        stop_control.cancel();
        if let Err(e) = control.await {
            tracing::error!(error = %error_chain(&e), "control task failed");
        }
        if let Err(e) = resource_answers.await {
            tracing::error!(error = %error_chain(&e), "resource answer task failed");
        }
        if let Err(e) = output_answers.await {
            tracing::error!(error = %error_chain(&e), "output answer task failed");
        }
        service.stop().await;
        // Whatever still runs now, the worker gave up on or handed over.
        for backend in jobs.backends.all() {
            backend
                .close(if drain {
                    Leaving::GivingUp
                } else {
                    Leaving::HandingOver
                })
                .await;
        }
        answers.close();
        if tokio::time::timeout(control::ANSWER_TIMEOUT, answers.wait())
            .await
            .is_err()
        {
            tracing::warn!("control answers still in flight at exit");
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "could not flush the NATS connection")
            }
            Err(_) => {
                tracing::warn!("NATS did not take the last messages within {FLUSH_TIMEOUT:?}")
            }
        }
        if let Some(endpoint) = endpoint {
            endpoint.stop().await;
        }
        tracing::info!("worker stopped");
    }
}

/// Waits up to `drain_timeout` for the jobs to end, then terminates the rest
/// and waits for their final events.
async fn drain_jobs(
    jobs: &JobSupport,
    tasks: &TaskTracker,
    drain_timeout: Duration,
    running: impl Fn() -> usize,
) {
    if tokio::time::timeout(drain_timeout, tasks.wait())
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        running = running(),
        "drain timeout ran out; terminating the remaining jobs"
    );
    jobs.hard_stop.cancel();
    let limit = Duration::from_secs(DEFAULT_GRACE_S) + FINAL_EVENTS_TIMEOUT;
    if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
        tracing::error!(
            running = running(),
            "jobs did not finish after being terminated; exiting anyway"
        );
    }
}

/// Tells every job's task to let go of its job, and waits (up to
/// `drain_timeout`) for them: a job still being launched lets go once its
/// workload exists.
async fn hand_over_jobs(
    registry: &Registry,
    tasks: &TaskTracker,
    drain_timeout: Duration,
    running: impl Fn() -> usize,
) {
    tracing::info!(running = running(), "handing the jobs over to the pool");
    let handing_over = async {
        loop {
            registry.tell_all(JobCommand::HandOver).await;
            if tokio::time::timeout(HAND_OVER_AGAIN, tasks.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
    };
    if tokio::time::timeout(drain_timeout, handing_over)
        .await
        .is_err()
    {
        tracing::warn!(
            running = running(),
            "jobs still launching when the drain timeout ran out; their requests come again to the pool"
        );
    }
}

/// This worker's lease, as the pool sees it.
fn lease_of(config: &WorkerConfig) -> WorkerLease {
    WorkerLease {
        worker: config.worker_id.clone(),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|host| host.into_string().ok())
            .unwrap_or_default(),
        pool: config.pool.clone(),
        backends: config.backends.clone(),
        capacity: config.max_jobs as u64,
        running: 0,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started: timestamp_now(),
        lease_s: config.lease.as_secs(),
        instance: random_suffix(12),
    }
}
