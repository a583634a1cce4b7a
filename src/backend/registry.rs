//! How a worker builds its backends: one table from a [`BackendKind`] to the
//! constructor of its backend, each given what it needs of the worker's
//! settings ([`BackendSetup`]), and one error for a backend that cannot start
//! ([`BackendStartError`]), whatever its kind.

use super::Backend;
use super::container::ContainerSettings;
use super::docker::DockerBackend;
use super::k8s::K8sBackend;
use super::process::{ProcessBackend, ProcessSettings};
use crate::config::{DockerConfig, K8sConfig};
use crate::protocol::BackendKind;
use futures::future::BoxFuture;
use std::sync::Arc;

/// What every backend a worker may run is built from.
#[derive(Debug, Clone)]
pub struct BackendSetup {
    /// The process backend's.
    pub process: ProcessSettings,
    /// Every container backend's.
    pub containers: ContainerSettings<()>,
    /// The Docker backend's own.
    pub docker: DockerConfig,
    /// The Kubernetes backend's own.
    pub k8s: K8sConfig,
}

/// Why a backend cannot start: its kind, and its own error.
#[derive(Debug, thiserror::Error)]
#[error("the {kind} backend cannot start: {source}")]
pub struct BackendStartError {
    /// Which backend.
    pub kind: BackendKind,
    /// Its error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A started backend, or its own error.
type Started = Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>>;

/// Builds a backend from the setup.
type Constructor = fn(&BackendSetup) -> BoxFuture<'_, Started>;

/// The constructor of the backend of `kind`.
fn constructor(kind: BackendKind) -> Constructor {
    match kind {
        BackendKind::Process => start_process,
        BackendKind::Docker => start_docker,
        BackendKind::K8s => start_k8s,
    }
}

fn start_process(setup: &BackendSetup) -> BoxFuture<'_, Started> {
    Box::pin(async move {
        let backend = ProcessBackend::start(setup.process.clone()).await?;
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

fn start_docker(setup: &BackendSetup) -> BoxFuture<'_, Started> {
    Box::pin(async move {
        let backend = DockerBackend::start(setup.containers.with(setup.docker.clone())).await?;
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

fn start_k8s(setup: &BackendSetup) -> BoxFuture<'_, Started> {
    Box::pin(async move {
        let backend = K8sBackend::start(setup.containers.with(setup.k8s.clone())).await?;
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

/// Starts the backend of each of `kinds` in turn (a kind named twice once).
///
/// # Errors
/// A [`BackendStartError`] for the first backend that cannot start.
pub async fn start_all(
    kinds: &[BackendKind],
    setup: &BackendSetup,
) -> Result<Vec<Arc<dyn Backend>>, BackendStartError> {
    let mut started: Vec<Arc<dyn Backend>> = Vec::new();
    for &kind in kinds {
        if started.iter().any(|backend| backend.kind() == kind) {
            continue;
        }
        let backend = constructor(kind)(setup)
            .await
            .map_err(|source| BackendStartError { kind, source })?;
        started.push(backend);
    }
    Ok(started)
}
