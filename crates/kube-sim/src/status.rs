//! API errors and the `Status` objects the real API server answers them with.
//!
//! Every failure a handler can hit is an [`ApiError`]; [`ApiError::to_status`] turns
//! it into the `kind: Status` body (with `reason`, `code`, `details`) and
//! [`ApiError::code`] gives the HTTP status, with the messages worded as the real
//! server words them, because clients match on `reason` and people read `message`.

use serde_json::{Value, json};

/// One field-level validation failure (`details.causes[]` of an `Invalid` status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    /// A required field that is missing (`FieldValueRequired`).
    pub fn required(field: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".to_owned(),
            field: field.to_owned(),
        }
    }

    /// A field whose value is not allowed (`FieldValueInvalid`).
    pub fn invalid(field: &str, value: &str, why: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {why}"),
            field: field.to_owned(),
        }
    }
}

/// A failed API request, one variant per `reason` a client can act on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", causes_text(.causes))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    BadRequest(String),
    /// A patch that cannot be applied (a JSON patch's failed `test`); carries
    /// why, which the real server gives as the cause.
    #[error("the server rejected our request due to an error in our request")]
    PatchRejected(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(Box<ForbiddenRequest>),
    #[error("forbidden: User \"{user}\" cannot {verb} path \"{path}\"")]
    ForbiddenPath {
        user: String,
        verb: String,
        path: String,
    },
    #[error("{0}")]
    Gone(String),
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("Too many requests, please try again later.")]
    TooManyRequests { retry_after_seconds: u64 },
    /// A body in a media type kube-sim does not read; carries the ones it does.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(&'static str),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    #[error("{0}")]
    ServiceUnavailable(String),
}

/// Who was refused what, for the `Forbidden` message and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenRequest {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub group: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl std::fmt::Display for ForbiddenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `roles.rbac.authorization.k8s.io "x" is forbidden: ... resource "roles"`,
        // `pods "x" is forbidden: ... resource "pods/log"`, as the real server words it.
        let r = &self.resource;
        let qualified = if self.group.is_empty() {
            r.clone()
        } else {
            format!("{r}.{}", self.group)
        };
        match &self.name {
            Some(name) => write!(f, "{qualified} \"{name}\" is forbidden: ")?,
            None => write!(f, "{qualified} is forbidden: ")?,
        }
        let full = match &self.subresource {
            Some(sub) => format!("{r}/{sub}"),
            None => r.clone(),
        };
        write!(
            f,
            "User \"{}\" cannot {} resource \"{full}\" in API group \"{}\"",
            self.user, self.verb, self.group
        )?;
        match &self.namespace {
            Some(ns) => write!(f, " in the namespace \"{ns}\""),
            None => write!(f, " at the cluster scope"),
        }
    }
}

fn causes_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    match parts.len() {
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("[{}]", parts.join(", ")),
    }
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::PatchRejected(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) | ApiError::ForbiddenPath { .. } => 403,
            ApiError::Gone(_) => 410,
            ApiError::TooLargeResourceVersion { .. } => 504,
            ApiError::MethodNotAllowed => 405,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Internal(_) => 500,
            ApiError::ServiceUnavailable(_) => 503,
        }
    }

    /// The `reason` field of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::PatchRejected(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) | ApiError::ForbiddenPath { .. } => "Forbidden",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Internal(_) => "InternalError",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
        }
    }

    /// Seconds a client should wait before retrying, when the server says so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            ApiError::TooLargeResourceVersion { .. } => Some(1),
            _ => None,
        }
    }

    fn details(&self) -> Option<Value> {
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => json!({"name": name, "kind": resource}),
            ApiError::Invalid { kind, name, causes } => json!({
                "name": name,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason, "message": c.message, "field": c.field,
                })).collect::<Vec<_>>(),
            }),
            ApiError::Forbidden(req) => {
                let mut details = json!({"kind": req.resource});
                if let Some(name) = &req.name {
                    details["name"] = json!(name);
                }
                if !req.group.is_empty() {
                    details["group"] = json!(req.group);
                }
                details
            }
            ApiError::TooLargeResourceVersion { .. } => json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            }),
            ApiError::TooManyRequests {
                retry_after_seconds,
            } => json!({"retryAfterSeconds": retry_after_seconds}),
            ApiError::Internal(message) => json!({"causes": [{"message": message}]}),
            ApiError::PatchRejected(why) => {
                json!({"causes": [{"reason": "UnexpectedServerResponse", "message": why}]})
            }
            ApiError::NoRoute | ApiError::ForbiddenPath { .. } => json!({}),
            _ => return None,
        };
        Some(details)
    }

    /// The `kind: Status` object a real server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

/// The `Status` a successful delete of an object without `returnDeletedObject` sends.
pub fn success(resource: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": resource, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_worded_as_the_real_server_words_it() {
        let e = ApiError::NotFound {
            resource: "pods".into(),
            name: "x".into(),
        };
        let s = e.to_status();
        assert_eq!(s["message"], "pods \"x\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"], json!({"name": "x", "kind": "pods"}));
    }

    #[test]
    fn forbidden_names_user_verb_resource_and_scope() {
        let e = ApiError::Forbidden(Box::new(ForbiddenRequest {
            user: "alice".into(),
            verb: "list".into(),
            resource: "pods".into(),
            subresource: None,
            group: String::new(),
            name: None,
            namespace: Some("default".into()),
        }));
        assert_eq!(
            e.to_string(),
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(e.code(), 403);
        let e = ApiError::Forbidden(Box::new(ForbiddenRequest {
            user: "alice".into(),
            verb: "get".into(),
            resource: "roles".into(),
            subresource: None,
            group: "rbac.authorization.k8s.io".into(),
            name: Some("r".into()),
            namespace: None,
        }));
        assert_eq!(
            e.to_string(),
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: User \"alice\" cannot get resource \"roles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        assert_eq!(
            e.to_status()["details"],
            json!({"name": "r", "kind": "roles", "group": "rbac.authorization.k8s.io"})
        );
    }

    #[test]
    fn invalid_lists_every_cause() {
        let e = ApiError::Invalid {
            kind: "Pod".into(),
            name: "p".into(),
            causes: vec![Cause::required("spec.containers")],
        };
        assert_eq!(
            e.to_string(),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            "spec.containers"
        );
    }
}
