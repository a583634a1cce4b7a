//! The job's output: the log of its pod's container, appended to the job's log
//! file before the pod is deleted; read once when the container ended, or
//! followed from the moment the worker stops the pod (whose log goes with it).

use super::api::{CLEANUP_PATIENCE, is_transient};
use crate::backend::container::job_output::JobLog;
use crate::report::error_chain;
use crate::retry::retry_transient;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use std::path::Path;

/// The output of the job's container in pod `name`, as a stream; with `follow`,
/// one that lasts until the container ends. `None` (logged) when it cannot be
/// had.
pub async fn open_log(
    api: &Api<Pod>,
    name: &str,
    container: &str,
    follow: bool,
) -> Option<impl futures::AsyncRead + use<>> {
    let params = LogParams {
        container: Some(container.to_owned()),
        follow,
        ..LogParams::default()
    };
    let opened = tokio::time::timeout(
        CLEANUP_PATIENCE,
        retry_transient(
            "reading a pod's log",
            || api.log_stream(name, &params),
            is_transient,
        ),
    )
    .await;
    match opened {
        Ok(Ok(output)) => Some(output),
        Ok(Err(e)) => {
            tracing::warn!(pod = name, error = %error_chain(&e), "cannot read the pod's output");
            None
        }
        Err(_) => {
            tracing::warn!(
                pod = name,
                "gave up reading the pod's output after {CLEANUP_PATIENCE:?}"
            );
            None
        }
    }
}

/// Appends the output of the job's container in pod `name` to `log`; with
/// `follow`, until the container ends.
pub async fn copy_log(api: &Api<Pod>, name: &str, container: &str, log: &Path, follow: bool) {
    if let Some(output) = open_log(api, name, container, follow).await {
        append(output, name, log).await;
    }
}

/// Appends what `output`, the output of pod `name`, gives to `log`.
pub async fn append(output: impl futures::AsyncRead, name: &str, log: &Path) {
    let mut output = Box::pin(output);
    let Some(mut file) = JobLog::open(log).await else {
        return;
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match output.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(pod = name, error = %error_chain(&e), "the pod's output broke off");
                break;
            }
        };
        if !file.write(&buffer[..read]).await {
            return;
        }
    }
    file.finish().await;
}
