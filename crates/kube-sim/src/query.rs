//! The query parameters of an API request, decoded and bounded.

use crate::objects::FieldValidation;
use crate::status::ApiError;

/// The longest query value kube-sim reads; longer ones are refused, not truncated.
const MAX_VALUE: usize = 4096;

/// The query parameters kube-sim acts on; others are ignored, as the real server
/// ignores unknown ones.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub label_selector: String,
    pub field_selector: String,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout_seconds: Option<u64>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub field_validation: FieldValidation,
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1" | "True")
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid value for {name}: {value:?}")))
}

impl Query {
    /// Decodes the query string of a request URI.
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if value.len() > MAX_VALUE {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {key} is longer than {MAX_VALUE} bytes"
                )));
            }
            let v = value.as_ref();
            match key.as_ref() {
                "watch" => q.watch = flag(v),
                "resourceVersion" => q.resource_version = Some(v.to_owned()),
                "resourceVersionMatch" => q.resource_version_match = Some(v.to_owned()),
                "labelSelector" => q.label_selector = v.to_owned(),
                "fieldSelector" => q.field_selector = v.to_owned(),
                "allowWatchBookmarks" => q.allow_watch_bookmarks = flag(v),
                "sendInitialEvents" => q.send_initial_events = flag(v),
                "timeoutSeconds" => q.timeout_seconds = Some(number(&key, v)?),
                "limit" => q.limit = Some(number(&key, v)?),
                "continue" if !v.is_empty() => q.continue_token = Some(v.to_owned()),
                "gracePeriodSeconds" => q.grace_period_seconds = Some(number(&key, v)?),
                "container" => q.container = Some(v.to_owned()),
                "follow" => q.follow = flag(v),
                "tailLines" => q.tail_lines = Some(number(&key, v)?),
                "fieldValidation" => {
                    q.field_validation = match v {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "fieldValidation: invalid value {other:?}, must be one of Ignore, Warn, Strict"
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The `resourceVersion` parameter as a revision: `None` when unset or empty,
    /// `Some(0)` for "0" (any), else the number.
    pub fn revision(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors_and_flags() {
        let q = Query::parse(Some(
            "watch=1&labelSelector=app%3Dweb%2Ctier+in+%28a%29&resourceVersion=12&timeoutSeconds=5",
        ))
        .expect("parses");
        assert!(q.watch);
        assert_eq!(q.label_selector, "app=web,tier in (a)");
        assert_eq!(q.revision().expect("number"), Some(12));
        assert_eq!(q.timeout_seconds, Some(5));
        assert!(Query::parse(Some("limit=x")).is_err());
        assert!(Query::parse(Some(&format!("labelSelector={}", "a".repeat(5000)))).is_err());
    }
}
