//! The Kubernetes backend: a job is a pod (`restartPolicy: Never`) in the
//! worker's namespace, named from its site and job id so that a repeated launch
//! meets the existing pod (409) and adopts it after checking its job id (moving
//! it to this worker when another made it, as [`adoption`] does). One watch per
//! worker ([`watch`]) reports every change, one of the nodes ([`nodes`]) tells
//! when a job's node is lost; startup failures end the job at once with the
//! cluster's reason ([`status`]); a stop deletes the pod until its end is seen;
//! the output is copied into the job's log file before the pod is deleted, with
//! its uid as precondition, once the job's end is recorded.

mod adoption;
mod api;
mod cluster;
mod counted;
mod logs;
pub mod manifest;
pub mod name;
mod nodes;
mod recovery;
mod secret;
pub mod status;
mod watch;

pub use cluster::{ClusterError, MAX_REQUESTS_IN_FLIGHT};

use super::Leaving;
use super::container::followers::Following;
use super::container::given_up::GivenUp;
use super::container::kept::Kept;
use super::container::{Claim, ContainerSettings, claim_existing, container_image};
use super::{
    Adopt, Backend, Failure, GpuAssignment, LaunchError, LaunchProgress, Launched, LogDirError,
    LookupError, Recover, Recovered, Sweep, Workload, WorkloadControl, create_log_dir,
    new_log_file,
};
use crate::config::K8sConfig;
use crate::locked::lock;
use crate::protocol::bounded::{bounded, bounded_to};
use crate::protocol::{BackendKind, BackendRef, LaunchRequest};
use crate::report::error_chain;
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use watch::{Released, Watch};

/// What a Kubernetes backend needs to know.
pub type K8sSettings = ContainerSettings<K8sConfig>;

/// Why a Kubernetes backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum K8sBackendError {
    /// The log directory cannot be created.
    #[error(transparent)]
    LogDir(#[from] LogDirError),
    /// The cluster cannot be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The pod template cannot be used.
    #[error("cannot use the pod template {path}: {source}")]
    Template {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TemplateError,
    },
    /// The worker's pods cannot be listed (the API does not answer, or refuses).
    #[error("cannot list this worker's pods in namespace {namespace}: {source}")]
    List {
        /// The namespace.
        namespace: String,
        /// The API's error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Why a pod template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// It cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// It is neither YAML nor JSON.
    #[error(transparent)]
    Parse(Box<serde_saphyr::Error>),
    /// It is not a mapping.
    #[error("it must be a pod (a mapping)")]
    NotAMapping,
    /// It is a mapping but no pod.
    #[error(transparent)]
    NotAPod(#[from] serde_json::Error),
}

/// Runs jobs as pods.
pub struct K8sBackend {
    pods: Api<Pod>,
    events: Api<Event>,
    secrets: Api<Secret>,
    /// The jobs whose pods take variables from a Secret of their own.
    job_secrets: secret::JobSecrets,
    namespace: String,
    settings: K8sSettings,
    template: Value,
    watch: Arc<Watch>,
    watching: JoinHandle<()>,
    /// The worker's pods as listed at start, for [`Recover::recover`].
    found: Mutex<Vec<Pod>>,
    /// Ended jobs' pods kept for `--k8s-keep-s`: not orphans.
    kept: Kept,
}

impl K8sBackend {
    /// Connects to the cluster, lists the worker's pods (which also proves the
    /// API answers and lets it list them) and starts watching them.
    ///
    /// # Errors
    /// A [`K8sBackendError`] saying what is missing.
    pub async fn start(settings: K8sSettings) -> Result<Self, K8sBackendError> {
        create_log_dir(&settings.log_dir)?;
        let template = match &settings.config.pod_template {
            Some(path) => read_template(path)?,
            None => Value::Object(serde_json::Map::new()),
        };
        let (client, namespace) =
            cluster::connect(&settings.config, settings.metrics.api_calls("kubernetes")).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let selector = manifest::selector(&settings.worker_id);
        let found = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| K8sBackendError::List {
                namespace: namespace.clone(),
                source: Box::new(source),
            })?
            .items;
        let watch = Watch::new(
            pods.clone(),
            &settings.worker_id,
            selector,
            settings.config.stop_patience,
            settings.config.node_lost_after,
        );
        let watching = tokio::spawn(watch.clone().run(Api::all(client.clone())));
        Ok(K8sBackend {
            events: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client, &namespace),
            job_secrets: secret::JobSecrets::default(),
            pods,
            namespace,
            settings,
            template,
            watch,
            watching,
            found: Mutex::new(found),
            kept: Kept::default(),
        })
    }

    fn owner(&self) -> manifest::Owner<'_> {
        manifest::Owner {
            worker: &self.settings.worker_id,
            pool: &self.settings.pool,
            namespace: &self.namespace,
        }
    }

    fn control(&self, job_id: &str) -> Box<dyn WorkloadControl> {
        Box::new(PodControl {
            watch: self.watch.clone(),
            events: self.events.clone(),
            job_id: job_id.to_owned(),
        })
    }

    fn launched(
        &self,
        job_id: &str,
        pod: &str,
        uid: String,
        detail: Option<String>,
        following: Following,
    ) -> Launched {
        Launched {
            backend_ref: BackendRef::K8s {
                namespace: self.namespace.clone(),
                pod: pod.to_owned(),
                uid,
            },
            detail,
            observations: following.observations,
            control: self.control(job_id),
        }
    }

    /// Creates the pod; on a name already taken, the existing pod if it is
    /// this job's, moved to this worker if another made it.
    async fn create(&self, job_id: &str, pod: &Pod, name: &str) -> Result<Pod, LaunchError> {
        match api::create(&self.pods, pod).await {
            Ok(created) => Ok(created),
            Err(e) if api::status(&e) == Some(409) => {
                let existing = api::get(&self.pods, name).await.map_err(|e| {
                    LaunchError::Spawn(Failure::because(
                        format!("pod {name} exists but cannot be read"),
                        api::ApiError(e),
                    ))
                })?;
                let claim = if watch::job_of(&existing) == Some(job_id) {
                    Claim::Ours
                } else {
                    Claim::AnotherJob
                };
                let existing = claim_existing("pod", name, claim, existing)?;
                self.make_ours(existing).await.map_err(|e| {
                    LaunchError::Spawn(Failure::because(
                        format!("pod {name} is another worker's and cannot be moved to this one"),
                        api::ApiError(e),
                    ))
                })
            }
            Err(e) => Err(LaunchError::Spawn(Failure::because(
                format!("the cluster refused to create pod {name}"),
                api::ApiError(e),
            ))),
        }
    }
}

impl K8sBackend {
    /// Creates the pod, after its job's Secret when it has one, and makes it
    /// the Secret's owner.
    async fn create_with_secret(
        &self,
        request: &LaunchRequest,
        pod: &Pod,
        secret: Option<&Secret>,
    ) -> Result<Pod, LaunchError> {
        if let Some(secret) = secret {
            self.put_secret(&request.job_id, secret).await?;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let created = self.create(&request.job_id, pod, name).await?;
        if let Some(secret) = secret {
            self.own_secret(secret, &created).await;
        }
        Ok(created)
    }

    /// What undoes a launch of `job_id` given up: the job no longer
    /// followed, its pod (once made) and its Secret deleted.
    fn removal_of(&self, job_id: &str) -> impl FnOnce() -> Option<BoxFuture<'static, ()>> + '_ {
        let job_id = job_id.to_owned();
        move || {
            let released = self.watch.forget(&job_id);
            let secret = self.secret_removal(&job_id);
            let pods = self.pods.clone();
            if released.is_none() && secret.is_none() {
                return None;
            }
            Some(
                async move {
                    if let Some(released) = released {
                        tracing::warn!(pod = %released.pod, "launch given up; deleting its pod");
                        api::delete(&pods, &released.pod, &released.uid, Duration::ZERO).await;
                    }
                    if let Some(secret) = secret {
                        secret.await;
                    }
                }
                .boxed(),
            )
        }
    }
}

#[async_trait]
impl Backend for K8sBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::K8s
    }

    fn gives_secrets(&self) -> bool {
        true
    }

    async fn launch(
        &self,
        request: &LaunchRequest,
        gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError> {
        let image = container_image(request, self.kind())?;
        self.settings.labels.check(&request.labels)?;
        let manifest = manifest::pod(
            request,
            gpus,
            image,
            &self.owner(),
            &self.settings.config,
            &self.template,
        )?;
        let pod: Pod = serde_json::from_value(manifest).map_err(|e| {
            LaunchError::Unsupported(Failure::because(
                "the pod template and the request make no valid pod",
                e,
            ))
        })?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let secret = secret::manifest(request, &pod);
        let log = new_log_file(&self.settings.log_dir, &request.job_id)?;
        let following = self.watch.follow(&request.job_id, &name, log.clone());
        let removal = self.removal_of(&request.job_id);
        let given_up = GivenUp::new((), move |()| removal());
        let created = self
            .create_with_secret(request, &pod, secret.as_ref())
            .await;
        given_up.disarm();
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                self.watch.forget(&request.job_id);
                if let Some(removal) = self.secret_removal(&request.job_id) {
                    removal.await;
                }
                return Err(e);
            }
        };
        // Its state now (an adopted pod may have ended already); later changes
        // come through the watch.
        self.watch.observe(&created);
        let uid = created.metadata.uid.clone().unwrap_or_default();
        progress.created(BackendRef::K8s {
            namespace: self.namespace.clone(),
            pod: name.clone(),
            uid: uid.clone(),
        });
        let detail = format!(
            "pod {name} in namespace {}; once it ends, output in {}",
            self.namespace,
            log.display()
        );
        Ok(self.launched(&request.job_id, &name, uid, Some(detail), following))
    }

    async fn answers(&self) -> Result<(), Failure> {
        self.pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map(drop)
            .map_err(|e| Failure::because("the Kubernetes API does not answer", e))
    }

    async fn release(&self, job_id: &str) {
        if let Some(removal) = self.secret_removal(job_id) {
            removal.await;
        }
        let Some(released) = self.watch.forget(job_id) else {
            return;
        };
        let pods = self.pods.clone();
        let Released { pod, uid } = released;
        let remove =
            |pod: String| async move { api::delete(&pods, &pod, &uid, Duration::ZERO).await };
        self.kept
            .remove_after(pod, self.settings.config.keep, remove)
            .await;
    }

    async fn close(&self, _leaving: Leaving) {
        // The pods go on; a worker with the same id finds them again.
        self.watching.abort();
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
impl Recover for K8sBackend {
    async fn recover(&self) -> Vec<Recovered> {
        let found = std::mem::take(&mut *lock(&self.found));
        recovery::recover(self, found)
    }
}

#[async_trait]
impl Sweep for K8sBackend {
    async fn discover(&self) -> Result<Vec<Workload>, LookupError> {
        let kept = self.kept.now();
        Ok(self
            .watch
            .seen()
            .into_iter()
            .map(|(pod, seen)| Workload {
                held: self.watch.follows(&seen.job_id) || kept.contains(&pod),
                created: seen.created,
                backend_ref: BackendRef::K8s {
                    namespace: self.namespace.clone(),
                    pod,
                    uid: seen.uid,
                },
                job_id: seen.job_id,
            })
            .collect())
    }

    async fn remove(&self, workload: &Workload) {
        if let BackendRef::K8s { pod, uid, .. } = &workload.backend_ref {
            api::delete(&self.pods, pod, uid, Duration::ZERO).await;
            if let Some(secret) = self.watch.seen().remove(pod).and_then(|seen| seen.secret) {
                self.removal_of_secret(secret).await;
            }
        }
    }
}

/// Stops one pod: a delete with the grace period, sent in the background.
struct PodControl {
    watch: Arc<Watch>,
    events: Api<Event>,
    job_id: String,
}

#[async_trait]
impl WorkloadControl for PodControl {
    async fn stop(&self, grace: Duration) {
        self.watch.stop(&self.job_id, grace);
    }

    async fn start_blocker(&self) -> Option<(String, String)> {
        if let Some(blocked) = self.watch.blocked(&self.job_id) {
            return Some(blocked);
        }
        // Not the scheduler: the node's latest warning (a volume that cannot be
        // mounted, say), read once.
        let uid = self.watch.uid(&self.job_id)?;
        let params =
            ListParams::default().fields(&format!("involvedObject.uid={uid},type=Warning"));
        let listed = tokio::time::timeout(Duration::from_secs(5), self.events.list(&params)).await;
        let events = match listed {
            Ok(Ok(events)) => events.items,
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the pod's events");
                return None;
            }
            Err(_) => return None,
        };
        let latest = events.into_iter().max_by_key(|event| {
            event
                .last_timestamp
                .as_ref()
                .map(|at| at.0)
                .or_else(|| event.event_time.as_ref().map(|at| at.0))
        })?;
        Some((
            bounded_to(latest.reason.as_deref().unwrap_or("Warning"), 128),
            bounded(latest.message.as_deref().unwrap_or_default()),
        ))
    }
}

/// The pod template in `path` (YAML or JSON), as JSON.
fn read_template(path: &std::path::Path) -> Result<Value, K8sBackendError> {
    let read = || -> Result<Value, TemplateError> {
        let text = std::fs::read_to_string(path)?;
        let template: Value =
            serde_saphyr::from_str(&text).map_err(|e| TemplateError::Parse(Box::new(e)))?;
        if !template.is_object() {
            return Err(TemplateError::NotAMapping);
        }
        serde_json::from_value::<Pod>(template.clone())?;
        Ok(template)
    };
    read().map_err(|source| K8sBackendError::Template {
        path: path.to_owned(),
        source,
    })
}
