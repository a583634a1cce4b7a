//! The API calls a job costs (create, delete, the relabelling of a pod another
//! worker made; the log read is in [`super::logs`]), each retried with backoff
//! while the failure is transient (429, 5xx, a connection that failed), but for
//! the single delete of a stop, which its caller tries again; and what the
//! API's refusals mean: 409 on create is the job's own pod met again, 404 on
//! delete is a pod already gone, 409 on delete (the uid precondition) is a pod
//! that is no longer the job's.

use crate::report::error_chain;
use crate::retry::retry_transient;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use std::time::Duration;

/// Longest a delete or a log read keeps retrying before it is given up (and
/// logged): the job's end is recorded already.
pub const CLEANUP_PATIENCE: Duration = Duration::from_secs(120);

/// The HTTP status of an API refusal, if the API answered.
pub fn status(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// What the API said, without the status line.
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// An error of the API's, shown as what the API said (without the status
/// line); its source is the error itself.
#[derive(Debug, thiserror::Error)]
#[error("{}", message(.0))]
pub struct ApiError(#[source] pub kube::Error);

/// Whether trying again may help: throttled, a server error, or no answer.
pub fn is_transient(error: &kube::Error) -> bool {
    match status(error) {
        Some(code) => code == 429 || code >= 500,
        None => matches!(
            error,
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
        ),
    }
}

/// Creates `pod`, retrying transient failures (the caller bounds the time).
///
/// # Errors
/// The API's refusal (409 when a pod of that name exists).
pub async fn create(api: &Api<Pod>, pod: &Pod) -> Result<Pod, kube::Error> {
    let params = PostParams::default();
    retry_transient("creating a pod", || api.create(&params, pod), is_transient).await
}

/// The pod `name`, retrying transient failures (the caller bounds the time).
///
/// # Errors
/// The API's refusal.
pub async fn get(api: &Api<Pod>, name: &str) -> Result<Pod, kube::Error> {
    retry_transient("reading a pod", || api.get(name), is_transient).await
}

/// Sets the worker label of pod `name` to `worker` (one merge patch): the pod
/// moves into that worker's watch, out of its former worker's.
///
/// # Errors
/// The API's refusal.
pub async fn relabel(api: &Api<Pod>, name: &str, worker: &str) -> Result<Pod, kube::Error> {
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {"labels": {crate::backend::container::workload::WORKER: worker}}
    }));
    let params = PatchParams::default();
    retry_transient(
        "relabelling a pod",
        || api.patch(name, &params, &patch),
        is_transient,
    )
    .await
}

/// Deletes pod `name` if it is still the one with `uid`, its containers given
/// `grace` to stop (whole seconds, rounded up). A pod already gone, or
/// replaced, counts as deleted.
///
/// # Errors
/// The API's refusal, or no answer: tried once.
pub async fn delete_once(
    api: &Api<Pod>,
    name: &str,
    uid: &str,
    grace: Duration,
) -> Result<(), kube::Error> {
    match api.delete(name, &delete_params(uid, grace)).await {
        Err(e) if !matches!(status(&e), Some(404 | 409)) => Err(e),
        _ => Ok(()),
    }
}

fn delete_params(uid: &str, grace: Duration) -> DeleteParams {
    let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    DeleteParams {
        grace_period_seconds: Some(u32::try_from(seconds).unwrap_or(u32::MAX)),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes pod `name` if it is still the one with `uid`, its containers given
/// `grace` to stop. A pod already gone, or replaced, counts as deleted.
pub async fn delete(api: &Api<Pod>, name: &str, uid: &str, grace: Duration) {
    let deleted = tokio::time::timeout(
        CLEANUP_PATIENCE,
        retry_transient(
            "deleting a pod",
            || delete_once(api, name, uid, grace),
            is_transient,
        ),
    )
    .await;
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(pod = name, error = %error_chain(&e), "cannot delete a pod"),
        Err(_) => tracing::warn!(
            pod = name,
            "gave up deleting a pod after {CLEANUP_PATIENCE:?}"
        ),
    }
}
