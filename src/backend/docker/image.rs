//! Getting a job's image onto the engine: one pull per image at a time (jobs
//! wanting an image being pulled wait for that pull), its progress in the
//! worker's log, and an image that cannot be had told apart from a pull that
//! failed.

use super::credentials;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often a long pull's progress goes to the log.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why an image cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No registry has it (or pulling is not allowed): the engine's message.
    #[error("image {image} not found: {message}")]
    NotFound {
        /// The image.
        image: String,
        /// What the engine said.
        message: String,
    },
    /// Pulling it failed: the engine's message.
    #[error("pulling image {image} failed: {message}")]
    PullFailed {
        /// The image.
        image: String,
        /// What the engine said.
        message: String,
    },
}

type Pull = Shared<BoxFuture<'static, Result<(), ImageError>>>;

/// The pulls under way, by image.
#[derive(Clone)]
pub struct Puller {
    docker: Docker,
    /// The Docker `config.json` registry credentials come from.
    auth_file: Option<PathBuf>,
    pulls: Arc<Mutex<HashMap<String, Pull>>>,
}

impl Puller {
    /// No pull under way; credentials from `auth_file` when it has some for
    /// the image's registry.
    pub fn new(docker: Docker, auth_file: Option<PathBuf>) -> Self {
        Puller {
            docker,
            auth_file,
            pulls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Pulls `image`, or waits for the pull of it under way.
    ///
    /// # Errors
    /// An [`ImageError`] saying why the image cannot be had.
    pub async fn pull(&self, image: &str) -> Result<(), ImageError> {
        let pull = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls
                .entry(image.to_owned())
                .or_insert_with(|| {
                    let docker = self.docker.clone();
                    let pulls = self.pulls.clone();
                    let image = image.to_owned();
                    let credentials = self
                        .auth_file
                        .as_deref()
                        .and_then(|file| credentials::for_image(file, &image));
                    async move {
                        let pulled = pull_once(&docker, &image, credentials).await;
                        pulls
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&image);
                        pulled
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        pull.await
    }
}

/// `image` with `:latest` when it names no tag nor digest: the engine would pull
/// every tag of the repository otherwise.
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

async fn pull_once(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), ImageError> {
    tracing::info!(image, "pulling image");
    let started = Instant::now();
    let mut progress_at = started + PROGRESS_EVERY;
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(with_tag(image)),
            ..CreateImageOptions::default()
        }),
        None,
        credentials,
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if Instant::now() >= progress_at {
                    progress_at = Instant::now() + PROGRESS_EVERY;
                    tracing::info!(
                        image,
                        status = info.status.as_deref().unwrap_or(""),
                        layer = info.id.as_deref().unwrap_or(""),
                        elapsed = ?started.elapsed(),
                        "still pulling image"
                    );
                }
            }
            Err(e) => return Err(classify(image, e)),
        }
    }
    tracing::info!(image, elapsed = ?started.elapsed(), "pulled image");
    Ok(())
}

/// Whether the engine's answer to a pull says the image does not exist (or may
/// not be seen), rather than that the pull broke.
fn classify(image: &str, error: DockerError) -> ImageError {
    let (status, message) = match &error {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(*status_code), message.clone()),
        DockerError::DockerStreamError { error } => (None, error.clone()),
        other => (None, other.to_string()),
    };
    let lower = message.to_ascii_lowercase();
    let not_found = status == Some(404)
        || [
            "manifest unknown",
            "not found",
            "repository does not exist",
            "pull access denied",
        ]
        .iter()
        .any(|sign| lower.contains(sign));
    let image = image.to_owned();
    if not_found {
        ImageError::NotFound { image, message }
    } else {
        ImageError::PullFailed { image, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_images_get_latest() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("busybox:1"), "busybox:1");
        assert_eq!(with_tag("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b:2"), "127.0.0.1:5000/a/b:2");
        assert_eq!(with_tag("a@sha256:00"), "a@sha256:00");
    }

    #[test]
    fn a_missing_image_is_told_apart_from_a_broken_pull() {
        let missing = DockerError::DockerStreamError {
            error: "manifest for x:1 not found: manifest unknown".into(),
        };
        assert!(matches!(
            classify("x:1", missing),
            ImageError::NotFound { .. }
        ));
        let refused = DockerError::DockerResponseServerError {
            status_code: 500,
            message: "Get \"https://127.0.0.1:1/v2/\": connection refused".into(),
        };
        assert!(matches!(
            classify("x:1", refused),
            ImageError::PullFailed { .. }
        ));
    }
}
