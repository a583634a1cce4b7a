//! RFC 6902 JSON patch (`application/json-patch+json`): `add`, `remove`,
//! `replace`, `move`, `copy` and `test`, applied in order to a copy of the
//! object; the first operation that cannot be applied (a missing path, a
//! `test` whose value differs) refuses the whole patch, as the real server
//! refuses it with `422`.

use serde_json::Value;

/// Why a JSON patch cannot be applied, in the words of the real server's
/// patch library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("invalid JSON patch: {0}")]
    Malformed(String),
    #[error("testing value {0} failed: test failed")]
    TestFailed(String),
    #[error("{op} operation does not apply: doc is missing path: \"{path}\": missing value")]
    Missing { op: String, path: String },
}

/// `target` with `patch` (a JSON array of operations) applied.
///
/// # Errors
/// The first operation that cannot be applied, or a patch that is none.
pub fn apply(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch is an array".to_owned()))?;
    let mut out = target.clone();
    for operation in operations {
        let text = |field: &str| {
            operation[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| PatchError::Malformed(format!("an operation without \"{field}\"")))
        };
        let op = text("op")?;
        let path = text("path")?;
        let missing = || PatchError::Missing {
            op: op.clone(),
            path: path.clone(),
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("{op} without \"value\"")))
        };
        match op.as_str() {
            "add" => add(&mut out, &path, value()?).ok_or_else(missing)?,
            "remove" => drop(remove(&mut out, &path).ok_or_else(missing)?),
            "replace" => {
                *out.pointer_mut(&path).ok_or_else(missing)? = value()?;
            }
            "move" | "copy" => {
                let from = text("from")?;
                let moved = if op == "move" {
                    remove(&mut out, &from)
                } else {
                    out.pointer(&from).cloned()
                };
                add(&mut out, &path, moved.ok_or_else(missing)?).ok_or_else(missing)?;
            }
            "test" => {
                if out.pointer(&path) != Some(&value()?) {
                    return Err(PatchError::TestFailed(path));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "unknown operation {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

/// The parent of `path` and its last token, unescaped (`~1` is `/`, `~0` is `~`).
fn split(path: &str) -> Option<(&str, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

/// Adds `value` at `path`: a member set (or replaced), or an element inserted
/// (`-` appends).
fn add(target: &mut Value, path: &str, value: Value) -> Option<()> {
    if path.is_empty() {
        *target = value;
        return Some(());
    }
    let (parent, last) = split(path)?;
    match target.pointer_mut(parent)? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(list) => {
            let at = if last == "-" {
                list.len()
            } else {
                last.parse().ok().filter(|at| *at <= list.len())?
            };
            list.insert(at, value);
        }
        _ => return None,
    }
    Some(())
}

/// Removes what is at `path`, returning it.
fn remove(target: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(parent)? {
        Value::Object(map) => map.remove(&last),
        Value::Array(list) => {
            let at: usize = last.parse().ok().filter(|at| *at < list.len())?;
            Some(list.remove(at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_apply_in_order_and_a_failed_test_refuses_the_patch() {
        let doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let patched = apply(
            &doc,
            &json!([
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "add", "path": "/data", "value": {"K": "dg=="}},
                {"op": "replace", "path": "/list/0", "value": 9},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "copy", "from": "/list/0", "path": "/copied"},
                {"op": "move", "from": "/copied", "path": "/moved"},
                {"op": "remove", "path": "/list/1"},
            ]),
        )
        .unwrap();
        assert_eq!(
            patched,
            json!({"metadata": {"labels": {"a/b": "1"}}, "list": [9, 3], "data": {"K": "dg=="}, "moved": 9})
        );
        let refused = apply(
            &doc,
            &json!([{"op": "test", "path": "/metadata/labels/a~1b", "value": "2"}]),
        );
        assert_eq!(
            refused,
            Err(PatchError::TestFailed("/metadata/labels/a~1b".to_owned()))
        );
        let missing = apply(
            &doc,
            &json!([{"op": "replace", "path": "/nope/x", "value": 1}]),
        );
        assert!(
            matches!(missing, Err(PatchError::Missing { .. })),
            "{missing:?}"
        );
        assert!(matches!(
            apply(&doc, &json!({})),
            Err(PatchError::Malformed(_))
        ));
    }
}
