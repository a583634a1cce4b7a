//! `GET ...?watch=true`: a stream of `{"type", "object"}` lines, one per change.
//!
//! As on the real server: without a `resourceVersion` (or with `0`) the watch
//! starts with a synthetic `ADDED` for every existing object; with
//! `resourceVersion=N` it replays every change after N, and if N is compacted it
//! sends one `ERROR` event holding a `410 Expired` Status (the HTTP status stays
//! 200); `sendInitialEvents=true` sends the objects and then a `BOOKMARK` annotated
//! `k8s.io/initial-events-end`; `allowWatchBookmarks` adds a `BOOKMARK` every
//! bookmark interval; with selectors, an object that starts or stops matching is
//! seen as `ADDED` or `DELETED`; a watch that falls too far behind is closed, so its
//! client watches again from its last revision. The `watchDropAfter` fault closes
//! every stream once it has sent that many events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::Cluster;
use crate::http::{self, Body};
use crate::list::revision_error;
use crate::query::Query;
use crate::resources::Resource;
use crate::router::Target;
use crate::selectors::Selectors;
use crate::status::ApiError;
use crate::store::{Change, ChangeKind, StoreError, Subscription};

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One open watch: what it selects and where it writes.
struct Watcher {
    resource: &'static Resource,
    namespace: Option<String>,
    selectors: Selectors,
    out: mpsc::Sender<Bytes>,
    /// The newest revision this watch has seen (matching or not), for bookmarks.
    revision: u64,
    /// Events sent so far.
    sent: u64,
    /// Where the `watchDropAfter` fault is read.
    cluster: Arc<Cluster>,
}

/// The stream is over: the client went away, or the watch was told to end.
struct Closed;

impl Watcher {
    async fn send(&mut self, kind: &str, object: &Value) -> Result<(), Closed> {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        self.out.send(Bytes::from(line)).await.map_err(|_| Closed)?;
        self.sent += 1;
        self.check_dropped()
    }

    /// Ends the stream if the `watchDropAfter` fault says it has sent enough.
    fn check_dropped(&self) -> Result<(), Closed> {
        let limit = self.cluster.faults.watch_drop_after();
        if limit.is_some_and(|n| self.sent >= n) {
            return Err(Closed);
        }
        Ok(())
    }

    async fn bookmark(&mut self, initial_events_end: bool) -> Result<(), Closed> {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": metadata,
        });
        self.send("BOOKMARK", &object).await
    }

    fn in_scope(&self, change: &Change) -> bool {
        change.key.resource == self.resource.name
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == change.key.namespace)
    }

    /// The event this watch sends for `change`, if any.
    async fn forward(&mut self, change: &Change) -> Result<(), Closed> {
        self.revision = self.revision.max(change.revision);
        if !self.in_scope(change) {
            return Ok(());
        }
        let now = self.selectors.matches(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.selectors.matches(p));
        match change.kind {
            ChangeKind::Added if now => self.send("ADDED", &change.object).await,
            ChangeKind::Deleted if before => self.send("DELETED", &change.object).await,
            ChangeKind::Modified => match (before, now) {
                (true, true) => self.send("MODIFIED", &change.object).await,
                (false, true) => self.send("ADDED", &change.object).await,
                (true, false) => {
                    let mut gone = change.previous.as_deref().cloned().unwrap_or_default();
                    gone["metadata"]["resourceVersion"] = json!(change.revision.to_string());
                    self.send("DELETED", &gone).await
                }
                (false, false) => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Opens a watch on `target` and returns the streaming response.
pub fn serve(
    cluster: Arc<Cluster>,
    target: &Target,
    query: &Query,
    selectors: Selectors,
) -> Result<Response<Body>, ApiError> {
    let requested = query.revision()?;
    if query.send_initial_events
        && (query.resource_version_match.as_deref() != Some("NotOlderThan")
            || !query.allow_watch_bookmarks)
    {
        return Err(ApiError::Invalid {
            kind: "ListOptions".to_owned(),
            name: String::new(),
            causes: vec![crate::status::Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks".to_owned(),
                field: "sendInitialEvents".to_owned(),
            }],
        });
    }
    let namespace = target.namespace.clone();
    // Where the stream starts: the current objects (as ADDED) or a revision.
    let start: Result<(Vec<Arc<Value>>, Subscription), StoreError> = match requested {
        Some(rv) if rv > 0 && !query.send_initial_events => {
            cluster.store.subscribe(rv).map(|sub| (Vec::new(), sub))
        }
        _ => Ok(cluster
            .store
            .list_and_subscribe(target.resource.name, namespace.as_deref())),
    };
    let (tx, rx) = mpsc::channel(64);
    let mut watcher = Watcher {
        resource: target.resource,
        namespace,
        selectors,
        out: tx,
        revision: 0,
        sent: 0,
        cluster: cluster.clone(),
    };
    let timeout = query
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let bookmarks = query.allow_watch_bookmarks;
    let initial_end = query.send_initial_events;
    let interval = cluster.config.bookmark_interval;
    match start {
        Ok((initial, sub)) => {
            tokio::spawn(async move {
                let _ = run(
                    &mut watcher,
                    initial,
                    sub,
                    initial_end,
                    bookmarks,
                    interval,
                    timeout,
                )
                .await;
            });
        }
        Err(StoreError::Compacted { requested, oldest }) => {
            let status =
                ApiError::Gone(format!("too old resource version: {requested} ({oldest})"))
                    .to_status();
            tokio::spawn(async move {
                let _ = watcher.send("ERROR", &status).await;
            });
        }
        Err(e) => return Err(revision_error(e)),
    }
    let mut response = Response::new(http::streamed(rx));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn run(
    w: &mut Watcher,
    initial: Vec<Arc<Value>>,
    mut sub: Subscription,
    initial_events_end: bool,
    bookmarks: bool,
    interval: Duration,
    timeout: Duration,
) -> Result<(), Closed> {
    w.revision = sub.revision;
    for object in &initial {
        if w.selectors.matches(object) {
            w.send("ADDED", object).await?;
        }
    }
    if initial_events_end {
        w.bookmark(true).await?;
    }
    for change in std::mem::take(&mut sub.backlog) {
        w.forward(&change).await?;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = sub.receiver.recv() => match change {
                Ok(change) => {
                    if change.revision > w.revision {
                        w.forward(&change).await?;
                    }
                    // A limit set while the stream was open applies from its
                    // next change, whether that was sent or not.
                    w.check_dropped()?;
                }
                Err(RecvError::Lagged(_) | RecvError::Closed) => return Err(Closed),
            },
            _ = ticker.tick(), if bookmarks => w.bookmark(false).await?,
            () = &mut deadline => return Ok(()),
            () = w.out.closed() => return Err(Closed),
        }
    }
}
