//! A minimal OpenAPI v3 description (`/openapi/v3`): enough for clients to learn
//! that every create, update and patch endpoint takes `fieldValidation`, so that
//! `kubectl` leaves validation to the server instead of needing full schemas. And
//! an OpenAPI v2 document without schemas (`/openapi/v2`), which older `kubectl`
//! (1.20) fetches to validate manifests, skipping kinds it has no schema for.

use bytes::Bytes;
use hyper::{Response, header};
use serde_json::{Map, Value, json};

use crate::http::{self, Body};
use crate::resources::{ALL, Resource};

/// The media type `kubectl` asks for an OpenAPI v2 document in protobuf with...
const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// ...and the one the real server answers with (Go's media type parser refuses `@`).
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `GET /openapi/v2`: a document with no paths or schemas; in protobuf when the
/// client accepts it (where the empty message is that document), else in JSON.
pub fn v2(accept: Option<&str>) -> Response<Body> {
    if accept.is_some_and(|a| a.contains(V2_PROTOBUF_ACCEPT) || a.contains(V2_PROTOBUF)) {
        let mut response = Response::new(http::full(Bytes::new()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(V2_PROTOBUF),
        );
        return response;
    }
    http::json(
        200,
        &json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0-kube-sim"},
            "paths": {},
            "definitions": {},
        }),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_is_an_empty_protobuf_document_for_kubectl_and_json_otherwise() {
        let pb = v2(Some(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json",
        ));
        assert_eq!(pb.headers()[header::CONTENT_TYPE], V2_PROTOBUF);
        assert_eq!(v2(None).headers()[header::CONTENT_TYPE], "application/json");
    }
}
