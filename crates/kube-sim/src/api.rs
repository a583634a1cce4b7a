//! The resource API: get, list, watch, create, update, patch and delete of every
//! served resource, with the pod-specific rules of the real server (status
//! subresource, graceful deletion, logs).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::http::{self, Body};
use crate::jsonpatch;
use crate::objects;
use crate::query::Query;
use crate::router::Target;
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::{self, ApiError, Cause};
use crate::store::{Key, StoreError};
use crate::{list, logs, meta, pods, resources, watch};

/// A write refused by the store or by the request's own checks.
enum WriteError {
    Store(StoreError),
    Api(ApiError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> WriteError {
        WriteError::Store(e)
    }
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> WriteError {
        WriteError::Api(e)
    }
}

impl WriteError {
    /// The reply for a write of object `name` of `t`.
    fn into_api(self, t: &Target, name: &str) -> ApiError {
        match self {
            WriteError::Store(StoreError::NotFound) => not_found(t, name),
            WriteError::Store(StoreError::Exists) => ApiError::AlreadyExists {
                resource: t.resource.name.to_owned(),
                name: name.to_owned(),
            },
            WriteError::Store(other) => ApiError::Internal(other.to_string()),
            WriteError::Api(e) => e,
        }
    }
}

/// A request on a resource, after authentication and authorization.
pub struct ResourceRequest<'a> {
    pub method: &'a Method,
    pub target: Target,
    pub query: Query,
    pub content_type: String,
    pub body: Bytes,
}

/// Serves `req`.
pub async fn handle(
    cluster: &Arc<Cluster>,
    req: ResourceRequest<'_>,
) -> Result<Response<Body>, ApiError> {
    let t = &req.target;
    let sub = t.subresource.as_deref();
    match (req.method, t.name.as_deref(), sub) {
        (&Method::GET, None, _) => {
            let selectors = Selectors {
                labels: LabelSelector::parse(&req.query.label_selector)?,
                fields: FieldSelector::parse(&req.query.field_selector, t.resource)?,
            };
            if req.query.watch {
                watch::serve(cluster.clone(), t, &req.query, selectors)
            } else {
                let list = list::list(
                    cluster,
                    t.resource,
                    t.namespace.as_deref(),
                    &req.query,
                    &selectors,
                )?;
                Ok(http::json(200, &list))
            }
        }
        (&Method::GET, Some(name), Some("log")) => logs::serve(cluster, t, name, &req.query).await,
        (&Method::GET, Some(name), _) => Ok(http::json(200, &get(cluster, t, name)?)),
        (&Method::POST, None, None) => {
            json_body(&req.content_type)?;
            let (mut object, warnings) =
                objects::decode(t.resource, &req.body, req.query.field_validation)?;
            let created = create_object(cluster, t, &mut object)?;
            Ok(http::with_warnings(http::json(201, &created), &warnings))
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            json_body(&req.content_type)?;
            let (object, warnings) =
                objects::decode(t.resource, &req.body, req.query.field_validation)?;
            let replaced = replace(cluster, t, name, object)?;
            Ok(http::with_warnings(http::json(200, &replaced), &warnings))
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            patch(cluster, t, name, &req.content_type, &req.body).map(|o| http::json(200, &o))
        }
        (&Method::DELETE, Some(name), None) => delete(cluster, t, name, &req.query, &req.body),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn key(t: &Target, name: &str) -> Key {
    Key::new(t.resource.name, t.namespace.as_deref().unwrap_or(""), name)
}

fn not_found(t: &Target, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: t.resource.name.to_owned(),
        name: name.to_owned(),
    }
}

fn get(cluster: &Cluster, t: &Target, name: &str) -> Result<Value, ApiError> {
    cluster
        .store
        .get(&key(t, name))
        .map(|o| (*o).clone())
        .ok_or_else(|| not_found(t, name))
}

/// The media type of a `Content-Type` value, without parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Refuses a body that is not JSON (protobuf, which kube-sim does not read)
/// with `415`, as the real server refuses a media type it does not serve.
fn json_body(content_type: &str) -> Result<(), ApiError> {
    match media_type(content_type) {
        "" | "application/json" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType("application/json")),
    }
}

/// Stores a decoded new object as `POST` would.
pub fn create_object(cluster: &Cluster, t: &Target, object: &mut Value) -> Result<Value, ApiError> {
    let meta = &mut object["metadata"];
    if let Some(ns) = &t.namespace {
        match meta["namespace"].as_str() {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".to_owned(),
                ));
            }
            _ => meta["namespace"] = json!(ns),
        }
    } else if let Some(map) = meta.as_object_mut() {
        map.remove("namespace");
    }
    if meta["name"].as_str().unwrap_or_default().is_empty() {
        match meta["generateName"].as_str().filter(|g| !g.is_empty()) {
            Some(prefix) => meta["name"] = json!(meta::generate_name(prefix)),
            None => {
                return Err(ApiError::Invalid {
                    kind: t.resource.kind.to_owned(),
                    name: String::new(),
                    causes: vec![Cause {
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".to_owned(),
                        field: "metadata.name".to_owned(),
                    }],
                });
            }
        }
    }
    for field in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "uid",
        "resourceVersion",
    ] {
        if let Some(map) = meta.as_object_mut() {
            map.remove(field);
        }
    }
    let name = objects::name(object).to_owned();
    if let Some(ns) = &t.namespace {
        let ns_key = Key::new(resources::NAMESPACES.name, "", ns);
        if cluster.store.get(&ns_key).is_none() {
            return Err(ApiError::NotFound {
                resource: "namespaces".to_owned(),
                name: ns.clone(),
            });
        }
    }
    match t.resource.name {
        "pods" => pods::prepare_create(object, cluster.config.default_toleration_seconds)?,
        "namespaces" => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        _ => {}
    }
    cluster
        .store
        .create(key(t, &name), object.clone())
        .map(|o| (*o).clone())
        .map_err(|e| WriteError::from(e).into_api(t, &name))
}

fn conflict(t: &Target, name: &str, message: &str) -> ApiError {
    ApiError::Conflict {
        resource: t.resource.name.to_owned(),
        name: name.to_owned(),
        message: message.to_owned(),
    }
}

/// Merges `next` (a whole new object from a client) into `current` as `PUT` on
/// the object or on its `status` does: the status subresource changes only the
/// status, the object itself everything but the status of a pod.
fn merge_update(t: &Target, current: &Value, next: Value) -> Value {
    let status_only = t.subresource.as_deref() == Some("status");
    let mut merged = if status_only {
        let mut merged = current.clone();
        merged["status"] = next["status"].clone();
        merged
    } else {
        let mut merged = next;
        if t.resource.name == "pods" {
            merged["status"] = current["status"].clone();
        }
        merged
    };
    for field in [
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        let value = current["metadata"][field].clone();
        if value.is_null() {
            if let Some(map) = merged["metadata"].as_object_mut() {
                map.remove(field);
            }
        } else {
            merged["metadata"][field] = value;
        }
    }
    merged
}

/// `PUT` of a whole object (or its status).
fn replace(cluster: &Cluster, t: &Target, name: &str, next: Value) -> Result<Value, ApiError> {
    let given = objects::name(&next);
    if !given.is_empty() && given != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let wanted_rv = objects::resource_version(&next).to_owned();
    let updated = cluster.store.update(&key(t, name), |current: &mut Value| {
        if !wanted_rv.is_empty() && wanted_rv != objects::resource_version(current) {
            return Err(WriteError::Api(conflict(
                t,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )));
        }
        *current = merge_update(t, current, next);
        Ok(())
    });
    updated
        .map(|o| (*o).clone())
        .map_err(|e| e.into_api(t, name))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(k);
                    }
                } else {
                    merge_patch(&mut target[k.as_str()], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// `PATCH` with a JSON patch, a merge or a strategic-merge patch (the latter
/// applied as a merge patch, which is what it does for the maps clients
/// patch: labels, annotations, status fields). A JSON patch that cannot be
/// applied (a failed `test`) is refused with `422`.
fn patch(
    cluster: &Cluster,
    t: &Target,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let json_patch = match media_type(content_type) {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
        "application/json-patch+json" => true,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
            ));
        }
    };
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
    let current = get(cluster, t, name)?;
    let next = if json_patch {
        jsonpatch::apply(&current, &patch).map_err(|e| ApiError::PatchRejected(e.to_string()))?
    } else {
        let mut next = current.clone();
        merge_patch(&mut next, &patch);
        next
    };
    let mut next = objects::normalize(t.resource, next)?;
    if patch["metadata"]["resourceVersion"].is_null() {
        // A patch without a resourceVersion applies to whatever is current.
        if let Some(map) = next["metadata"].as_object_mut() {
            map.remove("resourceVersion");
        }
    }
    replace(cluster, t, name, next)
}

/// The parts of `DeleteOptions` kube-sim acts on.
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
        };
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Ok(DeleteOptions {
            grace_period_seconds: opts["gracePeriodSeconds"]
                .as_i64()
                .or(query.grace_period_seconds),
            uid: text(&opts["preconditions"]["uid"]),
            resource_version: text(&opts["preconditions"]["resourceVersion"]),
        })
    }

    /// Refuses with `409 Conflict` when a precondition does not hold for `object`.
    fn check(&self, t: &Target, name: &str, object: &Value) -> Result<(), ApiError> {
        if let Some(uid) = &self.uid {
            let actual = objects::uid(object);
            if uid != actual {
                return Err(conflict(
                    t,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &self.resource_version {
            let actual = objects::resource_version(object);
            if rv != actual {
                return Err(conflict(
                    t,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `DELETE` of one object. A pod on a node with a grace period is only marked
/// (`deletionTimestamp`, `deletionGracePeriodSeconds`); its kubelet deletes it
/// once the containers have stopped.
fn delete(
    cluster: &Cluster,
    t: &Target,
    name: &str,
    query: &Query,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let opts = DeleteOptions::parse(query, body)?;
    let k = key(t, name);
    let current = cluster.store.get(&k).ok_or_else(|| not_found(t, name))?;
    opts.check(t, name, &current)?;
    if t.resource.name == "pods" {
        let grace = pods::grace_period(&current, opts.grace_period_seconds);
        if grace > 0 {
            let marked = cluster
                .store
                .update(&k, |pod: &mut Value| {
                    opts.check(t, name, pod)?;
                    mark_for_deletion(pod, grace);
                    Ok::<_, WriteError>(())
                })
                .map_err(|e| e.into_api(t, name))?;
            return Ok(http::json(200, &marked));
        }
    }
    let gone = cluster
        .store
        .delete(&k, |object| {
            Ok::<_, WriteError>(opts.check(t, name, object)?)
        })
        .map_err(|e| e.into_api(t, name))?;
    if t.resource.name == "namespaces" {
        delete_namespace_contents(cluster, name);
    }
    if matches!(t.resource.name, "pods" | "namespaces") {
        Ok(http::json(200, &gone))
    } else {
        Ok(http::json(
            200,
            &status::success(t.resource.name, name, objects::uid(&gone)),
        ))
    }
}

/// Sets the deletion mark; a second delete may only shorten the grace period.
pub fn mark_for_deletion(pod: &mut Value, grace: i64) {
    let now = jiff::Timestamp::now();
    let deadline = now + jiff::SignedDuration::from_secs(grace);
    let existing = pod["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(meta::parse_timestamp);
    if existing.is_some_and(|e| e <= deadline) {
        return;
    }
    pod["metadata"]["deletionTimestamp"] = json!(meta::timestamp(deadline));
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
}

/// Removes everything in a deleted namespace (pods are stopped by their kubelet).
fn delete_namespace_contents(cluster: &Cluster, namespace: &str) {
    for resource in resources::ALL.iter().filter(|r| r.namespaced) {
        let (objects, _) = cluster.store.list(resource.name, Some(namespace));
        for object in objects {
            let k = Key::new(resource.name, namespace, objects::name(&object));
            // Already gone is fine: something else deleted it meanwhile.
            let _ = cluster.store.delete::<StoreError>(&k, |_| Ok(()));
        }
    }
}
