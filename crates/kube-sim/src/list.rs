//! `GET` on a collection: lists with selectors, `resourceVersion` and
//! `resourceVersionMatch` semantics, and `limit`/`continue` paging.
//!
//! As on the real server: no `resourceVersion` (or `0`) lists the newest state;
//! `resourceVersion=N` (with `NotOlderThan` or no match) lists the newest state if
//! it is at least N and answers `504 Timeout` if N is in the future;
//! `resourceVersionMatch=Exact` lists the state as of N, or `410 Expired` once N is
//! compacted. A continue token pins the revision of the first page.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::query::Query;
use crate::resources::Resource;
use crate::selectors::Selectors;
use crate::status::ApiError;
use crate::store::StoreError;

/// Where the next page of a paged list starts.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    /// The revision every page is listed at.
    rv: u64,
    /// The `namespace/name` of the last object already returned.
    start: String,
}

impl Continue {
    fn encode(&self) -> String {
        STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Result<Continue, ApiError> {
        STANDARD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::BadRequest("continue key is not valid".to_owned()))
    }
}

/// Maps a store error of a list at a revision to the server's reply.
pub fn revision_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted { requested, oldest } => {
            ApiError::Gone(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::Future { requested, current } => {
            ApiError::TooLargeResourceVersion { requested, current }
        }
        other => ApiError::Internal(other.to_string()),
    }
}

fn key_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// An object as it appears among a list's items (without `apiVersion`/`kind`).
fn item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    item
}

/// Lists `resource` in `namespace` (all namespaces when `None`).
pub fn list(
    cluster: &Cluster,
    resource: &'static Resource,
    namespace: Option<&str>,
    query: &Query,
    selectors: &Selectors,
) -> Result<Value, ApiError> {
    let requested = query.revision()?;
    let exact = match query.resource_version_match.as_deref() {
        None | Some("") => false,
        Some(_) if requested.is_none() => {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".to_owned(),
            ));
        }
        Some("Exact") => true,
        Some("NotOlderThan") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    };
    let (objects, revision, after): (Vec<Arc<Value>>, u64, Option<String>) = match &query
        .continue_token
    {
        Some(token) => {
            let token = Continue::decode(token)?;
            let objects = cluster
                    .store
                    .list_at(resource.name, namespace, token.rv)
                    .map_err(|e| match e {
                        StoreError::Compacted { .. } => ApiError::Gone(
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_owned(),
                        ),
                        other => revision_error(other),
                    })?;
            (objects, token.rv, Some(token.start))
        }
        None => match requested {
            Some(rv) if exact && rv > 0 => {
                let objects = cluster
                    .store
                    .list_at(resource.name, namespace, rv)
                    .map_err(revision_error)?;
                (objects, rv, None)
            }
            _ => {
                let (objects, current) = cluster.store.list(resource.name, namespace);
                if let Some(rv) = requested.filter(|rv| *rv > current) {
                    return Err(revision_error(StoreError::Future {
                        requested: rv,
                        current,
                    }));
                }
                (objects, current, None)
            }
        },
    };

    let mut matching = objects
        .iter()
        .filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a))
        .filter(|o| selectors.matches(o));
    let mut items = Vec::new();
    let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    for object in matching.by_ref().take(limit) {
        items.push(item(object));
    }
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if remaining > 0 {
        let start = items.last().map(key_of).unwrap_or_default();
        metadata["continue"] = json!(
            Continue {
                rv: revision,
                start
            }
            .encode()
        );
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}
