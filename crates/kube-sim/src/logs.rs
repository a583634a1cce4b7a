//! `GET pods/NAME/log`: a container's output, whole, its last lines, or followed
//! until the container ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::cluster::Cluster;
use crate::http::{self, Body};
use crate::query::Query;
use crate::router::Target;
use crate::status::ApiError;
use crate::store::{Change, Key};

/// How often a followed log looks for new output (its container's end is seen
/// at once: the pod's every change wakes it).
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The status entry of `container` in `pod`.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == container)
}

fn terminated(cluster: &Cluster, key: &Key, container: &str) -> bool {
    cluster.store.get(key).is_none_or(|pod| {
        container_status(&pod, container).is_some_and(|s| !s["state"]["terminated"].is_null())
    })
}

/// Serves the log of a container of pod `name`.
pub async fn serve(
    cluster: &Arc<Cluster>,
    t: &Target,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let ns = t.namespace.as_deref().unwrap_or_default();
    let key = Key::new(t.resource.name, ns, name);
    let pod = cluster.store.get(&key).ok_or_else(|| ApiError::NotFound {
        resource: "pods".to_owned(),
        name: name.to_owned(),
    })?;
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match (&query.container, names.as_slice()) {
        (Some(c), _) if names.contains(c) => c.clone(),
        (Some(c), _) => {
            return Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let path = cluster.log_path(uid, &container);
    let waiting = container_status(&pod, &container)
        .and_then(|s| s["state"]["waiting"]["reason"].as_str())
        .map(str::to_owned);
    let started = tokio::fs::metadata(&path).await.is_ok();
    // A crash-looping container still has the output of its last run.
    if let Some(reason) = waiting.filter(|r| !started || r != "CrashLoopBackOff") {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    if !started {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let content = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))?;
    let body = match query.tail_lines {
        Some(n) => tail(&content, n),
        None => content.clone(),
    };
    if !query.follow {
        return Ok(http::text(200, body));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let cluster = cluster.clone();
    let offset = content.len() as u64;
    tokio::spawn(async move {
        if tx.send(Bytes::from(body)).await.is_err() {
            return;
        }
        let _ = follow(&cluster, &key, &container, &path, offset, tx).await;
    });
    Ok(Response::new(http::streamed(rx)))
}

/// Sends what is appended to `path` after `offset` until the container ends.
async fn follow(
    cluster: &Cluster,
    key: &Key,
    container: &str,
    path: &std::path::Path,
    mut offset: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    // Taken before the first look at the end state, so that no change is missed.
    let mut changes = cluster.store.changes();
    loop {
        // Read the end state first, so output written before the end is not missed.
        let done = terminated(cluster, key, container);
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk).await?;
        offset += chunk.len() as u64;
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return Ok(());
        }
        if done {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = changed(&mut changes, key) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Returns once the object at `key` has changed (or changes may have been
/// missed).
async fn changed(changes: &mut broadcast::Receiver<Arc<Change>>, key: &Key) {
    loop {
        match changes.recv().await {
            Ok(change) if change.key == *key => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            // The store is gone with kube-sim: the poll goes on until the end.
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// The last `n` lines of `content`.
fn tail(content: &[u8], n: usize) -> Vec<u8> {
    let text = content.strip_suffix(b"\n").unwrap_or(content);
    let start = text
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    if n == 0 {
        return Vec::new();
    }
    content[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb", 1), b"b");
        assert_eq!(tail(b"a\n", 0), b"");
    }
}
