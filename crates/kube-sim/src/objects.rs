//! Decoding request bodies into objects of a resource: typed through the
//! Kubernetes API types, so unknown fields are dropped and wrong shapes refused as
//! the real server refuses them, then kept as JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;

use crate::resources::Resource;
use crate::status::ApiError;

fn through<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(value)?)
}

fn cannot_handle(resource: &Resource, why: &dyn std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: {why}",
        kind = resource.kind
    ))
}

/// Maps of resource quantities, where YAML's bare numbers (`nvidia.com/gpu: 1`)
/// stand for quantity strings.
const QUANTITY_MAPS: &[&str] = &["limits", "requests", "capacity", "allocatable", "hard"];

/// Turns numbers in quantity maps into the strings the API types hold.
fn quantities_as_strings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::Object(q) if QUANTITY_MAPS.contains(&k.as_str()) => {
                        for n in q.values_mut().filter(|n| n.is_number()) {
                            *n = Value::String(n.to_string());
                        }
                    }
                    other => quantities_as_strings(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(quantities_as_strings),
        _ => {}
    }
}

/// The fields of `given` that the decoded `kept` dropped, as dotted paths.
fn unknown_fields(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (name, value) in g {
                let here = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match k.get(name) {
                    Some(kept_value) => unknown_fields(value, kept_value, &here, out),
                    None if !value.is_null() => out.push(here),
                    None => {}
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                unknown_fields(gv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// How the server treats fields it does not know (`fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them, with a warning (the default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

/// `body` decoded as an object of `resource`, in the API's own shape (with
/// `apiVersion` and `kind` set), and warnings about fields that were dropped.
pub fn decode(
    resource: &Resource,
    body: &[u8],
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let cannot = |e: serde_json::Error| cannot_handle(resource, &e);
    let mut given: Value = serde_json::from_slice(body).map_err(cannot)?;
    quantities_as_strings(&mut given);
    let kept = normalize(resource, given.clone())?;
    let mut unknown = Vec::new();
    if validation != FieldValidation::Ignore {
        unknown_fields(&given, &kept, "", &mut unknown);
    }
    let unknown: Vec<String> = unknown
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        )));
    }
    Ok((kept, unknown))
}

/// `value` as an object of `resource`, in the API's own shape.
pub fn normalize(resource: &Resource, value: Value) -> Result<Value, ApiError> {
    let cannot = |e: serde_json::Error| cannot_handle(resource, &e);
    if !value.is_object() {
        return Err(cannot_handle(resource, &"the body is not an object"));
    }
    let typed = match resource.name {
        "pods" => through::<core::Pod>(value),
        "namespaces" => through::<core::Namespace>(value),
        "nodes" => through::<core::Node>(value),
        "events" => through::<core::Event>(value),
        "secrets" => through::<core::Secret>(value),
        "configmaps" => through::<core::ConfigMap>(value),
        "persistentvolumeclaims" => through::<core::PersistentVolumeClaim>(value),
        "serviceaccounts" => through::<core::ServiceAccount>(value),
        "deployments" => through::<apps::Deployment>(value),
        "poddisruptionbudgets" => through::<policy::PodDisruptionBudget>(value),
        "roles" => through::<rbac::Role>(value),
        "rolebindings" => through::<rbac::RoleBinding>(value),
        "clusterroles" => through::<rbac::ClusterRole>(value),
        "clusterrolebindings" => through::<rbac::ClusterRoleBinding>(value),
        other => return Err(ApiError::Internal(format!("no type for {other}"))),
    };
    let mut typed = typed.map_err(cannot)?;
    if typed.get("metadata").is_none_or(Value::is_null) {
        typed["metadata"] = Value::Object(Default::default());
    }
    Ok(typed)
}

/// The name of `object`.
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The uid of `object`.
pub fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The resourceVersion of `object`.
pub fn resource_version(object: &Value) -> &str {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PODS;

    const WITH_UNKNOWN: &[u8] = br#"{"metadata":{"name":"p"},"spec":{"containers":[
        {"name":"c","image":"i","resources":{"limits":{"nvidia.com/gpu":1}}}],"bogus":1}}"#;

    #[test]
    fn unknown_fields_are_dropped_with_a_warning_and_kind_is_set() {
        let (pod, warnings) = decode(&PODS, WITH_UNKNOWN, FieldValidation::Warn).expect("decodes");
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["apiVersion"], "v1");
        assert!(pod["spec"].get("bogus").is_none());
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        assert_eq!(warnings, ["unknown field \"spec.bogus\""]);
    }

    #[test]
    fn strict_validation_refuses_unknown_fields() {
        let err = decode(&PODS, WITH_UNKNOWN, FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "strict decoding error: unknown field \"spec.bogus\""
        );
        assert!(
            decode(&PODS, WITH_UNKNOWN, FieldValidation::Ignore).is_ok_and(|(_, w)| w.is_empty())
        );
    }

    #[test]
    fn wrong_shapes_are_bad_requests() {
        let err = decode(&PODS, br#"{"kind":"Service"}"#, FieldValidation::Warn).unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(decode(&PODS, b"[]", FieldValidation::Warn).is_err());
    }
}
