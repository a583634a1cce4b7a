//! The admin API under `/kube-sim/`, for the admin token only:
//! - `GET /kube-sim/requests`: the request counter and the most requests served
//!   at once (`peakInFlight`); `DELETE` resets them.
//! - `GET /kube-sim/faults`: the faults in force; `PUT` replaces them (a
//!   [`Faults`] as JSON); `DELETE` clears them.
//! - `POST /kube-sim/compact`: compacts the change history at the current
//!   revision, so that lists and watches at any older one get `410 Gone`.
//! - `POST /kube-sim/oom-kill` with `{"namespace", "pod", "container"}`: kills
//!   the running container for its memory ([`crate::oom`]).
//! - `POST /kube-sim/lose-node` with `{"node"}`: the node stops reporting
//!   ([`crate::node_loss`]); `POST /kube-sim/restore-node` with `{"node"}`
//!   brings it back.

use bytes::Bytes;
use hyper::{Method, Response};
use serde_json::json;

use crate::auth::User;
use crate::cluster::Cluster;
use crate::faults::Faults;
use crate::http::{self, Body};
use crate::node_loss;
use crate::oom::ContainerName;
use crate::status::ApiError;

/// The longest part of a refused path repeated in the `Forbidden` message.
const MAX_PATH_SHOWN: usize = 256;

/// Refuses anyone but the admin, as the real server refuses a non-resource path
/// no role grants.
pub fn authorize(user: &User, method: &Method, path: &str) -> Result<(), ApiError> {
    if user.admin {
        return Ok(());
    }
    let mut end = path.len().min(MAX_PATH_SHOWN);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    Err(ApiError::ForbiddenPath {
        user: user.name.clone(),
        verb: method.as_str().to_ascii_lowercase(),
        path: path[..end].to_owned(),
    })
}

/// Serves an admin request for `path` (the part after `/kube-sim/`).
pub fn handle(
    cluster: &Cluster,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    match (path, method) {
        ("requests", &Method::GET) => Ok(requests(cluster)),
        ("requests", &Method::DELETE) => {
            cluster.requests.reset();
            Ok(requests(cluster))
        }
        ("faults", &Method::GET) => Ok(faults(cluster)),
        ("faults", &Method::PUT) => {
            let wanted: Faults = parse(body, "faults")?;
            cluster
                .faults
                .set(wanted)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(faults(cluster))
        }
        ("faults", &Method::DELETE) => {
            // No faults are always valid.
            let _ = cluster.faults.set(Faults::default());
            Ok(faults(cluster))
        }
        ("compact", &Method::POST) => {
            let revision = cluster.store.compact();
            Ok(http::json(200, &json!({"revision": revision.to_string()})))
        }
        ("oom-kill", &Method::POST) => {
            let wanted: OomKill = parse(body, "OOM kill")?;
            let name = ContainerName {
                namespace: wanted.namespace,
                pod: wanted.pod,
                container: wanted.container,
            };
            cluster
                .oom
                .kill(&name)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(http::json(200, &json!({"killed": true})))
        }
        ("lose-node", &Method::POST) => {
            let wanted: LoseNode = parse(body, "node loss")?;
            node_loss::lose(cluster, &wanted.node)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(http::json(200, &json!({"lost": wanted.node})))
        }
        ("restore-node", &Method::POST) => {
            let wanted: LoseNode = parse(body, "node restore")?;
            node_loss::restore(cluster, &wanted.node)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(http::json(200, &json!({"restored": wanted.node})))
        }
        ("requests" | "faults" | "compact" | "oom-kill" | "lose-node" | "restore-node", _) => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::NoRoute),
    }
}

/// The container `POST /kube-sim/oom-kill` kills.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OomKill {
    namespace: String,
    pod: String,
    container: String,
}

/// The node `POST /kube-sim/lose-node` loses (or `restore-node` restores).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoseNode {
    node: String,
}

/// The JSON body of an admin request, `what` naming it in the refusal.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))
}

fn requests(cluster: &Cluster) -> Response<Body> {
    http::json(
        200,
        &json!({
            "requests": cluster.requests.snapshot(),
            "peakInFlight": cluster.requests.peak_in_flight(),
        }),
    )
}

fn faults(cluster: &Cluster) -> Response<Body> {
    http::json(200, &json!(cluster.faults.get()))
}
