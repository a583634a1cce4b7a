//! The excerpt of an unusable launch payload that a report on `P.invalid`
//! echoes, without the values of its `secret_env`.
//!
//! A JSON object with a `secret_env` is echoed re-encoded, each of its values
//! (or the whole field, when it is no object) replaced by [`HIDDEN`]; one
//! without is echoed as it came. Any other payload (broken JSON, or JSON that is no object) is
//! echoed only up to the first place where a `secret_env` key could start: its
//! literal name, or a backslash (any other spelling of the name in JSON needs
//! an escape); what follows is left out.

use serde_json::Value;

/// What stands for a secret value in an excerpt.
pub const HIDDEN: &str = "<secret>";
/// The field whose values are never echoed.
const SECRET_FIELD: &str = "secret_env";

/// `payload` without any `secret_env` value.
pub fn without_secrets(payload: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut object)) => match object.get_mut(SECRET_FIELD) {
            Some(secrets) => {
                hide(secrets);
                serde_json::to_vec(&object).expect("a JSON value always serializes")
            }
            None => payload.to_vec(),
        },
        _ => {
            let end = payload
                .windows(SECRET_FIELD.len())
                .position(|window| window == SECRET_FIELD.as_bytes())
                .into_iter()
                .chain(payload.iter().position(|b| *b == b'\\'))
                .min()
                .unwrap_or(payload.len());
            payload[..end].to_vec()
        }
    }
}

/// Replaces every value of a `secret_env` field by [`HIDDEN`].
fn hide(secrets: &mut Value) {
    match secrets {
        Value::Object(values) => values
            .values_mut()
            .for_each(|value| *value = Value::String(HIDDEN.into())),
        other => *other = Value::String(HIDDEN.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excerpt(payload: &str) -> String {
        String::from_utf8(without_secrets(payload.as_bytes())).unwrap()
    }

    #[test]
    fn values_of_a_json_object_are_hidden_and_names_kept() {
        let shown = excerpt(r#"{"command":["x"],"secret_env":{"TOKEN":"s3cret"}}"#);
        assert!(shown.contains("TOKEN") && shown.contains(HIDDEN), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let shown = excerpt(r#"{"secret_env":"s3cret","secret_env":["s3cret"]}"#);
        assert!(!shown.contains("s3cret"), "{shown}");
        let plain = r#"{"job_id": 1, "command": ["a\"b"]}"#;
        assert_eq!(excerpt(plain), plain);
    }

    #[test]
    fn broken_json_is_cut_where_a_secret_could_start() {
        let shown = excerpt(r#"{"job_id":"a b","secret_env":{"T":"s3cret"}"#);
        assert_eq!(shown, r#"{"job_id":"a b",""#);
        let escaped = excerpt(r#"{"secret\u005fenv":{"T":"s3cret"}"#);
        assert_eq!(escaped, r#"{"secret"#);
        assert_eq!(excerpt("{oops"), "{oops");
        let listed = excerpt(r#"[{"secret_env":{"T":"s3cret"}}]"#);
        assert_eq!(listed, r#"[{""#);
    }
}
