//! The Docker backend: a job is a container on the worker's Docker engine, made
//! from the request's image and argv (no shell) under a name fixed by its site
//! and job id, so that a repeated launch meets the existing container and adopts
//! it rather than starting a second. One event stream per worker ([`watch`])
//! reports every end; a stop runs in the background; the output is copied into
//! the job's log file while the container runs ([`output`]), and the container
//! is removed once the job's end is recorded. After a restart, containers are found again by
//! label ([`Recover`], [`Sweep`]) or by name ([`Adopt`]), a container of any
//! worker on the same engine.

mod credential_helper;
pub mod credentials;
mod ending;
mod engine;
mod image;
mod mounts;
mod output;
mod secret_files;
mod spec;
mod watch;

use super::Leaving;
use super::container::followers::Following;
use super::container::given_up::GivenUp;
use super::container::kept::Kept;
use super::container::{Claim, ContainerSettings, claim_existing, container_image};
use super::{
    Adopt, AdoptionScope, Backend, Failure, GpuAssignment, LaunchError, LaunchProgress, Launched,
    LogDirError, LookupError, Observation, Recover, Recovered, Sweep, Workload, WorkloadControl,
    create_log_dir, new_log_file,
};
use crate::config::{DockerConfig, PullPolicy};
use crate::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};
use crate::report::error_chain;
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerStateStatusEnum, Mount as DockerMount};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures::FutureExt;
pub use spec::{JOB_ID as JOB_ID_LABEL, MANAGED_BY, MANAGED_BY_VALUE};

use credentials::CredentialSources;
use engine::Engine;
use image::{ImageError, Puller};
use mounts::{MountPolicy, Workspace};
use secret_files::{SecretFiles, SecretFilesError, SecretsTmpfsError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use watch::Watch;

/// What a Docker backend needs to know.
pub type DockerSettings = ContainerSettings<DockerConfig>;

/// Why a Docker backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DockerBackendError {
    /// The log directory cannot be created.
    #[error(transparent)]
    LogDir(#[from] LogDirError),
    /// The folder for jobs' secret files cannot be used.
    #[error(transparent)]
    SecretsTmpfs(#[from] SecretsTmpfsError),
    /// The engine cannot be reached or does not answer.
    #[error("cannot reach the Docker engine{}: {source}", .host.as_deref().map(|h| format!(" at {h}")).unwrap_or_default())]
    Engine {
        /// The address tried, when one was configured.
        host: Option<String>,
        /// What failed.
        #[source]
        source: DockerError,
    },
}

/// Runs jobs as containers.
pub struct DockerBackend {
    docker: Engine,
    settings: DockerSettings,
    puller: Puller,
    mount_policy: MountPolicy,
    secret_files: SecretFiles,
    watch: Arc<Watch>,
    events: JoinHandle<()>,
    /// Containers of ended jobs kept for `--docker-keep-s`.
    kept: Kept,
}

/// A container of this worker's, as the engine lists or inspects it.
struct FoundContainer {
    job_id: String,
    id: String,
    name: String,
    /// `created`, `running`, `exited`, ...
    state: String,
    /// When it was created, in seconds since the epoch.
    created: Option<i64>,
}

impl DockerBackend {
    /// Connects to the engine (agreeing on an API version it speaks) and starts
    /// watching this worker's containers.
    ///
    /// # Errors
    /// A [`DockerBackendError`] saying what is missing.
    pub async fn start(settings: DockerSettings) -> Result<Self, DockerBackendError> {
        create_log_dir(&settings.log_dir)?;
        let secret_files = SecretFiles::open(
            &settings.config.secrets_tmpfs,
            &settings.worker_id,
            settings.config.user,
            settings.config.host.as_deref(),
        )?;
        let engine_error = |source| DockerBackendError::Engine {
            host: settings.config.host.clone(),
            source,
        };
        let docker = match &settings.config.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(engine_error)?;
        let docker = docker.negotiate_version().await.map_err(engine_error)?;
        let docker = Engine::new(docker, settings.metrics.api_calls("docker"));
        let pinged = docker.api.ping().await;
        docker.counted("ping", pinged).map_err(engine_error)?;
        let watch = Watch::new(
            docker.clone(),
            &settings.worker_id,
            settings.config.stop_patience,
        );
        let events = tokio::spawn(watch.clone().run());
        Ok(DockerBackend {
            puller: Puller::new(
                docker.clone(),
                CredentialSources {
                    logins: settings.config.registry_logins.clone(),
                    auth_file: settings
                        .config
                        .auth_file
                        .clone()
                        .or_else(credentials::default_auth_file),
                },
            ),
            mount_policy: MountPolicy {
                host_roots: settings.config.host_roots.clone(),
                volumes: settings.config.allowed_volumes.clone(),
                worker_secrets: settings.worker_secrets.clone(),
                secrets_dir: settings.config.secrets_dir.clone(),
                workspace: settings.config.workspace.clone().map(|root| Workspace {
                    root,
                    read_only: settings.config.workspace_read_only.clone(),
                }),
            },
            secret_files,
            docker,
            settings,
            watch,
            events,
            kept: Kept::default(),
        })
    }

    /// Every container carrying this worker's labels.
    async fn found_containers(&self) -> Result<Vec<FoundContainer>, LookupError> {
        let containers = self
            .watch
            .list()
            .await
            .map_err(|e| LookupError(EngineError(e).into()))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let job_id = container.labels.as_ref()?.get(spec::JOB_ID)?.clone();
                let id = container.id?;
                let name = container
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| id.clone());
                Some(FoundContainer {
                    job_id,
                    id,
                    name,
                    state: container.state.map(|s| s.to_string()).unwrap_or_default(),
                    created: container.created,
                })
            })
            .collect())
    }

    /// Follows a container found again from its current state: one created but
    /// never started is started now; one that ended has its end read.
    async fn reattach(&self, found: FoundContainer) -> Launched {
        let FoundContainer {
            job_id,
            id,
            name,
            state,
            created,
        } = found;
        let log = self.log_of_day(created, &job_id);
        let detail = output_detail(&name, &log);
        let following = self.watch.followers().follow(&job_id, &name, log);
        match state.as_str() {
            "created" => match self.start_container(&id).await {
                Ok(()) => self.watch.running(&job_id),
                Err(e) => self.watch.followers().tell(
                    &job_id,
                    Observation::StartFailed {
                        reason: e.reason().to_owned(),
                        message: e.to_string(),
                    },
                ),
            },
            "running" | "restarting" | "paused" => self.watch.running(&job_id),
            _ => {}
        }
        self.watch.ended(&job_id);
        Launched {
            backend_ref: BackendRef::Docker {
                container_id: id.clone(),
                name,
            },
            detail: Some(detail),
            observations: following.observations,
            control: self.control(&job_id, &id),
        }
    }

    /// The log file of a job whose container was created at `created` (seconds
    /// since the epoch): under that day's directory, as the job's `running` event
    /// named it.
    fn log_of_day(&self, created: Option<i64>, job_id: &str) -> PathBuf {
        crate::job_logs::of_job_created(&self.settings.log_dir, created, job_id)
    }

    fn owner(&self) -> spec::Owner<'_> {
        spec::Owner {
            worker: &self.settings.worker_id,
            pool: &self.settings.pool,
        }
    }

    fn control(&self, job_id: &str, container: &str) -> Box<dyn WorkloadControl> {
        Box::new(ContainerControl {
            watch: self.watch.clone(),
            job_id: job_id.to_owned(),
            container: container.to_owned(),
        })
    }

    /// Creates the container (pulling its image as the policy says); on a name
    /// already taken, the existing container's id and state, if it is this job's.
    async fn create(
        &self,
        plan: ContainerPlan<'_>,
        progress: &LaunchProgress,
    ) -> Result<Created, LaunchError> {
        let ContainerPlan {
            request,
            gpus,
            image,
            name,
            mounts,
        } = plan;
        let pull = self.settings.config.pull;
        let pull_image = || async {
            progress.step(&format!("pulling image {image}"));
            self.puller.pull(image).await.map_err(image_error)?;
            progress.step(&format!("creating container {name}"));
            Ok::<(), LaunchError>(())
        };
        if pull == PullPolicy::Always {
            pull_image().await?;
        }
        let body = spec::container(
            request,
            gpus,
            image,
            &self.owner(),
            &self.settings.config,
            mounts,
        );
        let options = || {
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..CreateContainerOptions::default()
            })
        };
        let create = |body| async {
            let created = self.docker.api.create_container(options(), body).await;
            self.docker.counted("create_container", created)
        };
        let created = match create(body.clone()).await {
            Err(e) if status(&e) == Some(404) && pull == PullPolicy::IfMissing => {
                pull_image().await?;
                create(body).await
            }
            created => created,
        };
        match created {
            Ok(created) => Ok(Created::New(created.id)),
            Err(e) if status(&e) == Some(409) => self.existing(&request.job_id, name).await,
            Err(e) if status(&e) == Some(404) => Err(LaunchError::ImageNotFound(Failure::because(
                format!("image {image} not found (pull policy {pull:?})"),
                EngineError(e),
            ))),
            Err(e) => Err(LaunchError::Spawn(Failure::because(
                "the engine refused to create the container",
                EngineError(e),
            ))),
        }
    }

    /// The container named `name`, if it carries `job_id`'s label.
    async fn existing(&self, job_id: &str, name: &str) -> Result<Created, LaunchError> {
        let inspected = self.docker.api.inspect_container(name, None).await;
        let inspected = self
            .docker
            .counted("inspect_container", inspected)
            .map_err(|e| {
                LaunchError::Spawn(Failure::because(
                    format!("container {name} exists but cannot be inspected"),
                    EngineError(e),
                ))
            })?;
        let labels = inspected
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default();
        let claim = if labels.get(spec::JOB_ID).map(String::as_str) == Some(job_id) {
            Claim::Ours
        } else {
            Claim::AnotherJob
        };
        let state = inspected.state.unwrap_or_default();
        let existing = Created::Existing {
            id: inspected.id.unwrap_or_else(|| name.to_owned()),
            started: state.status != Some(ContainerStateStatusEnum::CREATED),
        };
        claim_existing("container", name, claim, existing)
    }

    /// Starts a container this worker created; on failure it is removed.
    async fn start_container(&self, id: &str) -> Result<(), LaunchError> {
        let started = self.docker.api.start_container(id, None).await;
        if let Err(e) = self.docker.counted("start_container", started) {
            remove_container(&self.docker, id).await;
            return Err(LaunchError::Spawn(Failure::because(
                "could not start the job's container",
                EngineError(e),
            )));
        }
        Ok(())
    }

    /// Creates (or adopts) and starts the container of a followed job; `created`
    /// holds the id of a container made here as soon as it exists.
    async fn launch_followed(
        &self,
        plan: ContainerPlan<'_>,
        progress: &LaunchProgress,
        created: &mut Option<String>,
    ) -> Result<String, LaunchError> {
        let (request, name) = (plan.request, plan.name);
        let made = self.create(plan, progress).await?;
        let (Created::New(id) | Created::Existing { id, .. }) = &made;
        progress.created(BackendRef::Docker {
            container_id: id.clone(),
            name: name.to_owned(),
        });
        match made {
            Created::New(id) => {
                *created = Some(id.clone());
                self.start_container(&id).await?;
                self.watch.running(&request.job_id);
                Ok(id)
            }
            Created::Existing { id, started } => {
                if !started {
                    self.start_container(&id).await?;
                }
                self.watch.running(&request.job_id);
                // Should it have ended already, its end is read now.
                self.watch.ended(&request.job_id);
                Ok(id)
            }
        }
    }
}

/// What a job's container is made from.
struct ContainerPlan<'a> {
    request: &'a LaunchRequest,
    gpus: &'a GpuAssignment,
    image: &'a str,
    name: &'a str,
    mounts: Vec<DockerMount>,
}

/// A container for a launch.
enum Created {
    /// Made now.
    New(String),
    /// There already (an earlier launch of the same job): whether it was started.
    Existing { id: String, started: bool },
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn launch(
        &self,
        request: &LaunchRequest,
        gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError> {
        let image = container_image(request, self.kind())?;
        self.settings.labels.check(&request.labels)?;
        let mut mounts =
            mounts::docker_mounts(&request.job_id, &request.mounts, &self.mount_policy)?;
        let log = new_log_file(&self.settings.log_dir, &request.job_id)?;
        let name = spec::container_name(request.site.as_deref(), &request.job_id);
        let Following { observations } =
            self.watch
                .followers()
                .follow(&request.job_id, &name, log.clone());
        match self
            .secret_files
            .write(&request.job_id, &request.secret_env)
        {
            Ok(secrets) => mounts.extend(secrets),
            Err(e) => {
                self.watch.followers().forget(&request.job_id);
                return Err(secrets_error(e));
            }
        }
        let (docker, watch, job_id, secret_files) = (
            self.docker.clone(),
            self.watch.clone(),
            request.job_id.clone(),
            self.secret_files.clone(),
        );
        let mut given_up = GivenUp::new(None, move |created: Option<String>| {
            watch.followers().forget(&job_id);
            secret_files.remove(&job_id);
            let container = created?;
            tracing::warn!(%container, "launch given up; removing its container");
            Some(async move { remove_container(&docker, &container).await }.boxed())
        });
        let launched = self
            .launch_followed(
                ContainerPlan {
                    request,
                    gpus,
                    image,
                    name: &name,
                    mounts,
                },
                progress,
                given_up.made(),
            )
            .await;
        given_up.disarm();
        match launched {
            Ok(id) => Ok(Launched {
                backend_ref: BackendRef::Docker {
                    container_id: id.clone(),
                    name: name.clone(),
                },
                detail: Some(output_detail(&name, &log)),
                observations,
                control: self.control(&request.job_id, &id),
            }),
            Err(e) => {
                self.watch.followers().forget(&request.job_id);
                self.secret_files.remove(&request.job_id);
                Err(e)
            }
        }
    }

    async fn answers(&self) -> Result<(), Failure> {
        let pinged = self.docker.api.ping().await;
        self.docker
            .counted("ping", pinged)
            .map(drop)
            .map_err(|e| Failure::because("the Docker engine does not answer", e))
    }

    async fn release(&self, job_id: &str) {
        self.secret_files.release(job_id);
        let Some(followed) = self.watch.followers().forget(job_id) else {
            return;
        };
        let docker = self.docker.clone();
        let remove = |name: String| async move { remove_container(&docker, &name).await };
        self.kept
            .remove_after(followed.name, self.settings.config.keep, remove)
            .await;
    }

    async fn close(&self, _leaving: Leaving) {
        // The containers go on; a worker with the same id finds them again.
        self.events.abort();
        self.secret_files.close();
    }

    fn gives_secrets(&self) -> bool {
        true
    }

    fn recovery(&self) -> Option<&dyn Recover> {
        Some(self)
    }

    fn adoption(&self) -> Option<&dyn Adopt> {
        Some(self)
    }

    fn sweep(&self) -> Option<&dyn Sweep> {
        Some(self)
    }
}

#[async_trait]
impl Recover for DockerBackend {
    async fn recover(&self) -> Vec<Recovered> {
        let containers = match self.found_containers().await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot list this worker's containers; none recovered");
                return Vec::new();
            }
        };
        let jobs = containers
            .iter()
            .map(|found| found.job_id.clone())
            .collect();
        self.secret_files.keep_only(&jobs);
        let mut recovered = Vec::new();
        for found in containers {
            let job_id = found.job_id.clone();
            let launched = self.reattach(found).await;
            recovered.push(Recovered { job_id, launched });
        }
        recovered
    }
}

#[async_trait]
impl Adopt for DockerBackend {
    fn scope(&self) -> AdoptionScope {
        // The container is found by the name its job gives it and checked by
        // its job's label, whichever worker made it.
        AdoptionScope::AnyWorker
    }

    async fn adopt(&self, record: &JobRecord) -> Result<Option<Launched>, LookupError> {
        let name = match &record.backend_ref {
            Some(BackendRef::Docker { name, .. }) => name.clone(),
            _ => spec::container_name(record.site.as_deref(), &record.job_id),
        };
        let inspected = self.docker.api.inspect_container(&name, None).await;
        let inspected = match self.docker.counted("inspect_container", inspected) {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(LookupError(EngineError(e).into())),
        };
        let config = inspected.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        if labels.get(spec::JOB_ID) != Some(&record.job_id) {
            return Ok(None);
        }
        if let Some(worker) = labels.get(spec::WORKER) {
            self.secret_files.adopted(&record.job_id, worker);
        }
        let created = inspected
            .created
            .as_deref()
            .and_then(|at| time::OffsetDateTime::parse(at, &Rfc3339).ok())
            .map(time::OffsetDateTime::unix_timestamp);
        let found = FoundContainer {
            job_id: record.job_id.clone(),
            id: inspected.id.unwrap_or_else(|| name.clone()),
            state: inspected
                .state
                .and_then(|state| state.status)
                .map(|status| status.to_string())
                .unwrap_or_default(),
            name,
            created,
        };
        Ok(Some(self.reattach(found).await))
    }
}

#[async_trait]
impl Sweep for DockerBackend {
    async fn discover(&self) -> Result<Vec<Workload>, LookupError> {
        let kept = self.kept.now();
        Ok(self
            .found_containers()
            .await?
            .into_iter()
            .map(|found| Workload {
                held: self.watch.followers().follows(&found.job_id) || kept.contains(&found.name),
                created: found
                    .created
                    .and_then(|at| u64::try_from(at).ok())
                    .map(|at| SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
                backend_ref: BackendRef::Docker {
                    container_id: found.id,
                    name: found.name,
                },
                job_id: found.job_id,
            })
            .collect())
    }

    async fn remove(&self, workload: &Workload) {
        if let BackendRef::Docker { container_id, .. } = &workload.backend_ref {
            remove_container(&self.docker, container_id).await;
        }
        self.secret_files.remove(&workload.job_id);
    }
}

/// Stops one container: SIGTERM now, SIGKILL after the grace, tried until its
/// end is seen by a task of their own (see [`Watch::stop`]), so that the job
/// task never waits for the grace.
struct ContainerControl {
    watch: Arc<Watch>,
    job_id: String,
    container: String,
}

#[async_trait]
impl WorkloadControl for ContainerControl {
    async fn stop(&self, grace: Duration) {
        self.watch.stop(&self.job_id, &self.container, grace);
    }
}

/// What the `running` event of a container's job says: where its output goes.
fn output_detail(name: &str, log: &std::path::Path) -> String {
    format!(
        "container {name}; once it ends, output in {}",
        log.display()
    )
}

/// Removes a container (and its anonymous volumes), running or not.
async fn remove_container(docker: &Engine, container: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..RemoveContainerOptions::default()
    };
    let removed = docker.api.remove_container(container, Some(options)).await;
    match docker.counted("remove_container", removed) {
        Ok(()) => {}
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => tracing::warn!(container, error = %error_chain(&e), "cannot remove a container"),
    }
}

/// The HTTP status of the engine's answer, if it answered.
fn status(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// What the engine said, without the status line.
fn engine_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// An error of the engine's, shown as what the engine said (without the
/// status line); its source is the error itself.
#[derive(Debug, thiserror::Error)]
#[error("{}", engine_message(.0))]
pub struct EngineError(#[source] pub DockerError);

/// A launch whose secrets cannot reach its container: refused, never run
/// without them.
fn secrets_error(error: SecretFilesError) -> LaunchError {
    match error {
        SecretFilesError::RemoteEngine(_) => LaunchError::Unsupported(Failure::of(error)),
        SecretFilesError::Write { .. } => LaunchError::Spawn(Failure::of(error)),
    }
}

fn image_error(error: ImageError) -> LaunchError {
    match error {
        ImageError::NotFound { .. } => LaunchError::ImageNotFound(Failure::of(error)),
        ImageError::PullFailed { .. } => LaunchError::ImagePullFailed(Failure::of(error)),
    }
}
