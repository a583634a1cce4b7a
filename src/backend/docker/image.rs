//! Getting a job's image onto the engine: one pull per image at a time (jobs
//! wanting an image being pulled wait for that pull), its progress in the
//! worker's log (layers done and bytes downloaded, at most every few seconds),
//! and an image that cannot be had told apart from a pull that failed.

use super::credentials::CredentialSources;
use super::engine::Engine;
use super::{EngineError, engine_message, status};
use crate::locked::lock;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often a long pull's progress goes to the log.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What made an image impossible to have: the engine's error, or the
/// credential helper's. Shared: every job waiting for a pull gets its end.
type PullCause = Arc<dyn std::error::Error + Send + Sync>;

/// Why an image cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No registry has it (or pulling is not allowed).
    #[error("image {image} not found: {source}")]
    NotFound {
        /// The image.
        image: String,
        /// The engine's error.
        #[source]
        source: PullCause,
    },
    /// Pulling it failed.
    #[error("pulling image {image} failed: {source}")]
    PullFailed {
        /// The image.
        image: String,
        /// The engine's or the credential helper's error.
        #[source]
        source: PullCause,
    },
}

type Pull = Shared<BoxFuture<'static, Result<(), ImageError>>>;

/// The pulls under way, by image.
#[derive(Clone)]
pub struct Puller {
    docker: Engine,
    /// Where registry credentials come from.
    credentials: Arc<CredentialSources>,
    pulls: Arc<Mutex<HashMap<String, Pull>>>,
}

impl Puller {
    /// No pull under way; credentials from `credentials` when they have some
    /// for the image's registry.
    pub fn new(docker: Engine, credentials: CredentialSources) -> Self {
        Puller {
            docker,
            credentials: Arc::new(credentials),
            pulls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Pulls `image`, or waits for the pull of it under way.
    ///
    /// # Errors
    /// An [`ImageError`] saying why the image cannot be had.
    pub async fn pull(&self, image: &str) -> Result<(), ImageError> {
        let pull = {
            let mut pulls = lock(&self.pulls);
            pulls
                .entry(image.to_owned())
                .or_insert_with(|| {
                    let docker = self.docker.clone();
                    let pulls = self.pulls.clone();
                    let image = image.to_owned();
                    let credentials = self.credentials.clone();
                    async move {
                        let pulled = match credentials.for_image(&image).await {
                            Ok(credentials) => {
                                let pulled = pull_once(&docker.api, &image, credentials).await;
                                docker.counted("create_image", pulled)
                            }
                            Err(e) => Err(ImageError::PullFailed {
                                image: image.clone(),
                                source: Arc::new(e),
                            }),
                        };
                        lock(&pulls).remove(&image);
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
    let mut progress = PullProgress::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                progress.note(&info);
                if Instant::now() >= progress_at {
                    progress_at = Instant::now() + PROGRESS_EVERY;
                    tracing::info!(
                        image,
                        progress = %progress.summary(),
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

/// What a pull has done so far, layer by layer, from the engine's progress
/// messages.
#[derive(Default)]
struct PullProgress {
    layers: HashMap<String, Layer>,
}

#[derive(Default)]
struct Layer {
    downloaded: u64,
    size: u64,
    done: bool,
}

impl PullProgress {
    /// Takes one progress message into account.
    fn note(&mut self, info: &CreateImageInfo) {
        let (Some(id), Some(status)) = (info.id.as_deref(), info.status.as_deref()) else {
            return;
        };
        // Messages about the image as a whole carry its tag as their id.
        if !status.contains("layer")
            && !matches!(
                status,
                "Waiting"
                    | "Downloading"
                    | "Verifying Checksum"
                    | "Download complete"
                    | "Extracting"
                    | "Pull complete"
                    | "Already exists"
            )
        {
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_default();
        let detail = info.progress_detail.as_ref();
        let bytes = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
        match status {
            "Downloading" => {
                if let Some(current) = bytes(detail.and_then(|d| d.current)) {
                    layer.downloaded = current;
                }
                if let Some(total) = bytes(detail.and_then(|d| d.total)) {
                    layer.size = total;
                }
            }
            "Download complete" | "Extracting" => layer.downloaded = layer.size,
            "Pull complete" | "Already exists" => {
                layer.downloaded = layer.size;
                layer.done = true;
            }
            _ => {}
        }
    }

    /// E.g. `2 of 5 layers done, 12.5 of 80.0 MB downloaded`.
    fn summary(&self) -> String {
        let done = self.layers.values().filter(|layer| layer.done).count();
        let megabytes = |bytes: u64| bytes as f64 / 1_000_000.0;
        let downloaded: u64 = self.layers.values().map(|layer| layer.downloaded).sum();
        let size: u64 = self.layers.values().map(|layer| layer.size).sum();
        format!(
            "{done} of {} layers done, {:.1} of {:.1} MB downloaded",
            self.layers.len(),
            megabytes(downloaded),
            megabytes(size)
        )
    }
}

/// Whether the engine's answer to a pull says the image does not exist (or may
/// not be seen), rather than that the pull broke.
fn classify(image: &str, error: DockerError) -> ImageError {
    let lower = engine_message(&error).to_ascii_lowercase();
    let not_found = status(&error) == Some(404)
        || [
            "manifest unknown",
            "not found",
            "repository does not exist",
            "pull access denied",
        ]
        .iter()
        .any(|sign| lower.contains(sign));
    let image = image.to_owned();
    let source = Arc::new(EngineError(error));
    if not_found {
        ImageError::NotFound { image, source }
    } else {
        ImageError::PullFailed { image, source }
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

    fn message(id: &str, status: &str, current: i64, total: i64) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(bollard::models::ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..CreateImageInfo::default()
        }
    }

    #[test]
    fn pull_progress_counts_layers_and_bytes() {
        let mut progress = PullProgress::default();
        for info in [
            message("1", "Pulling from flare/x", 0, 0),
            message("a", "Pulling fs layer", 0, 0),
            message("b", "Pulling fs layer", 0, 0),
            message("c", "Already exists", 0, 0),
            message("a", "Downloading", 500_000, 2_000_000),
            message("b", "Downloading", 1_000_000, 3_000_000),
            message("b", "Downloading", 3_000_000, 3_000_000),
            message("b", "Download complete", 0, 0),
            message("b", "Pull complete", 0, 0),
        ] {
            progress.note(&info);
        }
        assert_eq!(
            progress.summary(),
            "2 of 3 layers done, 3.5 of 5.0 MB downloaded"
        );
    }

    #[test]
    fn a_missing_image_is_told_apart_from_a_broken_pull() {
        let missing = DockerError::DockerStreamError {
            error: "manifest for x:1 not found: manifest unknown".into(),
        };
        let not_found = classify("x:1", missing);
        assert!(matches!(not_found, ImageError::NotFound { .. }));
        // What the engine said, once, and its error kept as the cause.
        assert_eq!(
            not_found.to_string(),
            "image x:1 not found: manifest for x:1 not found: manifest unknown"
        );
        let cause = std::error::Error::source(&not_found).expect("the engine's error");
        assert_eq!(
            cause.to_string(),
            "manifest for x:1 not found: manifest unknown"
        );
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
