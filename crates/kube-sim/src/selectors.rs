//! Label and field selectors (`labelSelector=`, `fieldSelector=`), parsed once per
//! request and matched against stored objects.
//!
//! Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! comma-separated and all required. Fields: `path=v`, `path==v`, `path!=v`, where
//! the path must be one the resource allows (as the real server refuses others with
//! `field label not supported`).

use serde_json::Value;

use crate::resources::Resource;
use crate::status::ApiError;

/// One requirement on labels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

/// Splits at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn bad_selector(text: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "unable to parse requirement: found '{text}', expected: in, notin, =, ==, !=, gt, lt"
    ))
}

fn parse_set(key: &str, rest: &str, whole: &str) -> Result<(String, Vec<String>), ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad_selector(whole))?;
    let values = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    Ok((key.trim().to_owned(), values))
}

fn parse_label_requirement(part: &str) -> Result<LabelRequirement, ApiError> {
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            k.trim().into(),
            v.trim().into(),
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelRequirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, rest)) = part.split_once(" notin ") {
        let (k, vs) = parse_set(k, rest, part)?;
        return Ok(LabelRequirement::NotIn(k, vs));
    }
    if let Some((k, rest)) = part.split_once(" in ") {
        let (k, vs) = parse_set(k, rest, part)?;
        return Ok(LabelRequirement::In(k, vs));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(k.trim().into()));
    }
    if part.contains(char::is_whitespace) || part.contains('(') {
        return Err(bad_selector(part));
    }
    Ok(LabelRequirement::Exists(part.into()))
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        split_top_level(text)
            .into_iter()
            .map(parse_label_requirement)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// One requirement on a field: path, wanted value, and whether it must differ.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    path: String,
    value: String,
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses a `fieldSelector` query value for `resource`.
    pub fn parse(text: &str, resource: &Resource) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let (path, value, negated) = if let Some((p, v)) = part.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, v, false)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            let known = path == "metadata.name"
                || (path == "metadata.namespace" && resource.namespaced)
                || resource.selectable_fields.contains(&path);
            if !known {
                return Err(ApiError::BadRequest(format!(
                    "field label not supported: {path}"
                )));
            }
            reqs.push(FieldRequirement {
                path: path.to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether `object` satisfies every requirement. A missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|req| {
            let field = req
                .path
                .split('.')
                .fold(object, |v, key| v.get(key).unwrap_or(&Value::Null));
            let text = match field {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            // `source` of an event is its component (the real server's field set).
            let text = if req.path == "source" {
                object["source"]["component"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                text
            };
            (text == req.value) != req.negated
        })
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PODS;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "a"}},
               "status": {"phase": "Running"}, "spec": {"nodeName": "node-1"}})
    }

    #[test]
    fn label_requirements_of_every_form() {
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=b", false),
            ("", true),
        ];
        for (text, want) in cases {
            let sel = LabelSelector::parse(text).expect(text);
            assert_eq!(sel.matches(&pod()), want, "{text}");
        }
    }

    #[test]
    fn field_selectors_match_known_fields_and_refuse_others() {
        let sel =
            FieldSelector::parse("metadata.name=p,status.phase!=Failed", &PODS).expect("parses");
        assert!(sel.matches(&pod()));
        let sel = FieldSelector::parse("spec.nodeName=", &PODS).expect("parses");
        assert!(!sel.matches(&pod()));
        let err = FieldSelector::parse("spec.foo=1", &PODS).unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
        assert_eq!(err.code(), 400);
    }
}
