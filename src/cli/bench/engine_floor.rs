//! The Docker engine's own floor, measured in the same run as a Docker bench:
//! raw Engine API create + start + wait + remove of the bench's image and argv,
//! without NATS or a worker, one at a time and at the bench's concurrency,
//! right before and right after the worker's jobs (so that a change of the
//! machine's load during the run shows). What a worker adds is the difference.

use crate::cli::CliError;
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::RemoveContainerOptions;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// When a floor is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Right before the worker's measured jobs.
    BeforeJobs,
    /// Right after them.
    AfterJobs,
}

impl Measured {
    /// `before` or `after`.
    pub fn as_str(self) -> &'static str {
        match self {
            Measured::BeforeJobs => "before",
            Measured::AfterJobs => "after",
        }
    }
}

/// What one round of raw containers measured.
pub struct Floor {
    /// When, beside the worker's jobs.
    pub measured: Measured,
    /// Concurrency of the round.
    pub concurrency: u32,
    /// Create + start, microseconds.
    pub create_start: Histogram<u64>,
    /// Containers per second over the round.
    pub per_second: f64,
}

/// Measures `containers` raw containers at concurrency 1 and at `concurrency`.
///
/// # Errors
/// A [`CliError`] when the engine cannot be reached or refuses a container.
pub async fn measure(
    image: &str,
    command: &[String],
    containers: usize,
    concurrency: u32,
    measured: Measured,
) -> Result<Vec<Floor>, CliError> {
    let docker = connect().await?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(command.to_vec()),
        entrypoint: Some(Vec::new()),
        ..ContainerCreateBody::default()
    };
    let mut floors = Vec::new();
    for level in [1, concurrency] {
        floors.push(round(&docker, &body, containers, level, measured).await?);
        if concurrency == 1 {
            break;
        }
    }
    Ok(floors)
}

/// The engine of `DOCKER_HOST`, else the local socket, at an API version it
/// speaks.
///
/// # Errors
/// A [`CliError`] when the engine cannot be reached.
pub async fn connect() -> Result<Docker, CliError> {
    let engine = |e: bollard::errors::Error| CliError::Other(format!("Docker engine: {e}"));
    Docker::connect_with_defaults()
        .map_err(engine)?
        .negotiate_version()
        .await
        .map_err(engine)
}

async fn round(
    docker: &Docker,
    body: &ContainerCreateBody,
    containers: usize,
    concurrency: u32,
    measured: Measured,
) -> Result<Floor, CliError> {
    let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| CliError::Other(format!("cannot create a histogram: {e}")))?;
    let create_start = Arc::new(Mutex::new(histogram));
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let started = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..containers {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CliError::Other(format!("bench semaphore: {e}")))?;
        let (docker, body, create_start) = (docker.clone(), body.clone(), create_start.clone());
        runs.push(tokio::spawn(async move {
            let _permit = permit;
            one(&docker, body, &create_start).await
        }));
    }
    for run in runs {
        run.await
            .map_err(|e| CliError::Other(format!("engine floor task: {e}")))??;
    }
    let wall = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let create_start = Arc::try_unwrap(create_start)
        .map_err(|_| CliError::Other("engine floor histogram still shared".into()))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(Floor {
        measured,
        concurrency,
        create_start,
        per_second: containers as f64 / wall,
    })
}

/// One container: create, start (timed together), wait, remove.
async fn one(
    docker: &Docker,
    body: ContainerCreateBody,
    create_start: &Mutex<Histogram<u64>>,
) -> Result<(), CliError> {
    let engine = |e: bollard::errors::Error| CliError::Other(format!("Docker engine: {e}"));
    let began = Instant::now();
    let id = docker
        .create_container(None, body)
        .await
        .map_err(engine)?
        .id;
    let started = docker.start_container(&id, None).await;
    let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    if started.is_ok() {
        create_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(took.max(1));
        let mut wait = docker.wait_container(&id, None);
        // The end (or an error saying it ended badly): either way it is over.
        let _ = tokio::time::timeout(Duration::from_secs(3600), wait.next()).await;
    }
    let remove = RemoveContainerOptions {
        force: true,
        ..RemoveContainerOptions::default()
    };
    docker
        .remove_container(&id, Some(remove))
        .await
        .map_err(engine)?;
    started.map_err(engine)
}
