//! A minimal OpenAPI v3 description (`/openapi/v3`): enough for clients to learn
//! that every create, update and patch endpoint takes `fieldValidation`, so that
//! `kubectl` leaves validation to the server instead of needing full schemas.

use serde_json::{Map, Value, json};

use crate::resources::{ALL, Resource};

/// The group-version paths, as `/openapi/v3` lists them (`api/v1`, `apis/G/v1`).
fn group_version_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".to_owned()
    } else {
        format!("apis/{group}/v1")
    }
}

/// `GET /openapi/v3`.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in ALL {
        let gv = group_version_path(r.group);
        let url = format!("/openapi/v3/{gv}?hash=kube-sim");
        paths.insert(gv, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn operation(r: &Resource, action: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": "v1", "kind": r.kind},
    })
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/v1`, if served.
pub fn group_version(path: &str) -> Option<Value> {
    let group = match path {
        "api/v1" => "",
        other => other.strip_prefix("apis/")?.strip_suffix("/v1")?,
    };
    let mut paths = Map::new();
    for r in ALL.iter().filter(|r| r.group == group) {
        let base = format!("/{}", group_version_path(group));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.name)
        } else {
            format!("{base}/{}", r.name)
        };
        paths.insert(collection.clone(), json!({"post": operation(r, "post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": operation(r, "put"), "patch": operation(r, "patch")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-kube-sim"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
