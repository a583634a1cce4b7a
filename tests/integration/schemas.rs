//! The JSON Schemas checked in under `schemas/` against the Rust protocol types,
//! and the example payloads under `schemas/examples/` against both.
//!
//! Examples are named `<schema-stem>.<case>.json`: `launch_request.minimal.json` is a
//! payload that `schemas/launch_request.json` accepts. The files under
//! `schemas/examples/invalid/` are named the same way and must be refused.

use flare_launcher::protocol::{
    ErrorReply, InvalidRequest, JobEvent, JobRecord, LaunchRequest, OutputChunk, OutputRequest,
    ResourceStatus, TerminateReply, TerminateRequest, WorkerLease, decode_launch,
};
use flare_launcher::schema;
use flare_launcher::state::return_code_for;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};

const REGENERATE: &str = "cargo run -- schemas schemas";

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn examples_dir() -> PathBuf {
    schemas_dir().join("examples")
}

fn invalid_examples_dir() -> PathBuf {
    examples_dir().join("invalid")
}

/// The `.json` files directly inside `dir`, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .expect("file names are UTF-8")
}

/// The schema an example belongs to: `launch_request` for `launch_request.full.json`.
/// Panics on a name that is not `<stem>.<case>.json`.
fn example_stem(path: &Path) -> &str {
    let name = file_name(path);
    let parts: Vec<&str> = name.split('.').collect();
    assert!(
        parts.len() >= 3 && parts.iter().all(|part| !part.is_empty()),
        "{}: example files must be named <schema-stem>.<case>.json",
        path.display()
    );
    parts[0]
}

/// Relative to the crate, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", shown(path)));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", shown(path)))
}

/// The schema stems `schema::all()` produces: `launch_request`, `job_event`, ...
fn schema_stems() -> BTreeSet<&'static str> {
    schema::all()
        .into_iter()
        .map(|(name, _)| {
            name.strip_suffix(".json")
                .expect("schema names end in .json")
        })
        .collect()
}

/// A validator for each checked-in schema, by stem. Formats (`date-time`) are checked.
fn validators() -> BTreeMap<&'static str, jsonschema::Validator> {
    schema_stems()
        .into_iter()
        .map(|stem| {
            let path = schemas_dir().join(format!("{stem}.json"));
            let schema = read_json(&path);
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", shown(&path)));
            (stem, validator)
        })
        .collect()
}

fn validation_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("at '{}': {e}", e.instance_path()))
        .collect()
}

#[test]
fn checked_in_schemas_match_the_types() {
    let dir = schemas_dir();
    let generated = schema::all();
    let mut problems = Vec::new();
    for (name, text) in &generated {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(checked_in) if checked_in == text.as_bytes() => {}
            Ok(_) => problems.push(format!(
                "{} differs from the schema the Rust types generate",
                shown(&path)
            )),
            Err(e) => problems.push(format!("{} cannot be read: {e}", shown(&path))),
        }
    }
    let known: BTreeSet<&str> = generated.iter().map(|(name, _)| *name).collect();
    for path in json_files(&dir) {
        if !known.contains(file_name(&path)) {
            problems.push(format!(
                "{} is not generated from any Rust type: delete it",
                shown(&path)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the checked-in schemas are out of date:\n  {}\nrun `{REGENERATE}` to regenerate them",
        problems.join("\n  ")
    );
}

#[test]
fn examples_validate_against_their_schemas() {
    let validators = validators();
    let mut problems = Vec::new();
    let mut examples_per_schema: BTreeMap<&str, usize> =
        validators.keys().map(|stem| (*stem, 0)).collect();

    for path in json_files(&examples_dir()) {
        let stem = example_stem(&path);
        let Some(validator) = validators.get(stem) else {
            problems.push(format!("{}: there is no schemas/{stem}.json", shown(&path)));
            continue;
        };
        if let Some(count) = examples_per_schema.get_mut(stem) {
            *count += 1;
        }
        let errors = validation_errors(validator, &read_json(&path));
        if !errors.is_empty() {
            problems.push(format!(
                "{} does not validate against schemas/{stem}.json:\n    {}",
                shown(&path),
                errors.join("\n    ")
            ));
        }
    }
    for (stem, count) in &examples_per_schema {
        if *count == 0 {
            problems.push(format!(
                "schemas/{stem}.json has no example in schemas/examples/"
            ));
        }
    }

    let invalid = json_files(&invalid_examples_dir());
    if invalid.is_empty() {
        problems.push("schemas/examples/invalid/ holds no example".into());
    }
    for path in invalid {
        let stem = example_stem(&path);
        let Some(validator) = validators.get(stem) else {
            problems.push(format!("{}: there is no schemas/{stem}.json", shown(&path)));
            continue;
        };
        if validator.is_valid(&read_json(&path)) {
            problems.push(format!(
                "{} validates against schemas/{stem}.json but must not",
                shown(&path)
            ));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Decodes `bytes` as `T`, serializes the value and decodes that again: both values
/// must be equal. Returns the value and its serialized form.
fn round_trip<T>(bytes: &[u8]) -> Result<(T, Value), String>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let decoded: T = serde_json::from_slice(bytes).map_err(|e| format!("does not decode: {e}"))?;
    let reencoded = serde_json::to_vec(&decoded).map_err(|e| format!("does not encode: {e}"))?;
    let again: T = serde_json::from_slice(&reencoded)
        .map_err(|e| format!("its re-encoded form does not decode: {e}"))?;
    if again != decoded {
        return Err(format!(
            "changes in a round trip:\n    {decoded:?}\n    {again:?}"
        ));
    }
    let value = serde_json::from_slice(&reencoded).expect("serde_json output is JSON");
    Ok((decoded, value))
}

/// `return_code` must be what the protocol's table gives for `state` and `exit_code`.
fn check_return_code(
    state: flare_launcher::state::JobState,
    exit_code: Option<i32>,
    return_code: Option<i32>,
) -> Result<(), String> {
    let expected = return_code_for(state, exit_code);
    if return_code == expected {
        Ok(())
    } else {
        Err(format!(
            "return_code {return_code:?} for state {state} and exit_code {exit_code:?}; the protocol says {expected:?}"
        ))
    }
}

/// Decodes a valid example with the Rust type of its schema, round-trips it, and
/// returns the re-encoded value.
fn decode_example(stem: &str, bytes: &[u8]) -> Result<Value, String> {
    match stem {
        "launch_request" => {
            let request = decode_launch(bytes).map_err(|e| format!("is refused: {e}"))?;
            let reencoded = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let again = decode_launch(&reencoded)
                .map_err(|e| format!("its re-encoded form is refused: {e}"))?;
            if again != request {
                return Err(format!(
                    "changes in a round trip:\n    {request:?}\n    {again:?}"
                ));
            }
            Ok(serde_json::from_slice(&reencoded).expect("serde_json output is JSON"))
        }
        "terminate_request" => {
            let request =
                TerminateRequest::decode(bytes).map_err(|e| format!("is refused: {e}"))?;
            let reencoded = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let again = TerminateRequest::decode(&reencoded)
                .map_err(|e| format!("its re-encoded form is refused: {e}"))?;
            if again != request {
                return Err(format!(
                    "changes in a round trip:\n    {request:?}\n    {again:?}"
                ));
            }
            Ok(serde_json::from_slice(&reencoded).expect("serde_json output is JSON"))
        }
        "job_event" => {
            let (event, value) = round_trip::<JobEvent>(bytes)?;
            check_return_code(event.state, event.exit_code, event.return_code)?;
            Ok(value)
        }
        "job_record" => {
            let (record, value) = round_trip::<JobRecord>(bytes)?;
            check_return_code(record.state, record.exit_code, record.return_code)?;
            Ok(value)
        }
        "terminate_reply" => round_trip::<TerminateReply>(bytes).map(|(_, value)| value),
        "invalid_request" => round_trip::<InvalidRequest>(bytes).map(|(_, value)| value),
        "error_reply" => round_trip::<ErrorReply>(bytes).map(|(_, value)| value),
        "resource_status" => round_trip::<ResourceStatus>(bytes).map(|(_, value)| value),
        "worker_lease" => round_trip::<WorkerLease>(bytes).map(|(_, value)| value),
        "output_request" => {
            OutputRequest::decode(bytes).map_err(|e| format!("is refused: {e}"))?;
            round_trip::<OutputRequest>(bytes).map(|(_, value)| value)
        }
        "output_chunk" => round_trip::<OutputChunk>(bytes).map(|(_, value)| value),
        other => Err(format!(
            "no Rust type is known for schema stem {other:?}: add it to this test"
        )),
    }
}

#[test]
fn examples_decode_with_the_rust_types() {
    let validators = validators();
    let mut problems = Vec::new();

    for path in json_files(&examples_dir()) {
        let stem = example_stem(&path);
        let bytes = fs::read(&path).expect("example is readable");
        match decode_example(stem, &bytes) {
            Ok(reencoded) => {
                // What the types write must still satisfy the schema.
                if let Some(validator) = validators.get(stem) {
                    let errors = validation_errors(validator, &reencoded);
                    if !errors.is_empty() {
                        problems.push(format!(
                            "{}: its re-encoded form does not validate against schemas/{stem}.json:\n    {}",
                            shown(&path),
                            errors.join("\n    ")
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{} {e}", shown(&path))),
        }
    }

    for path in json_files(&invalid_examples_dir()) {
        let bytes = fs::read(&path).expect("example is readable");
        let accepted = match example_stem(&path) {
            "launch_request" => decode_launch(&bytes).ok().map(|r| format!("{r:?}")),
            "terminate_request" => TerminateRequest::decode(&bytes)
                .ok()
                .map(|r| format!("{r:?}")),
            "output_request" => OutputRequest::decode(&bytes).ok().map(|r| format!("{r:?}")),
            // The other messages are written by workers; their Rust types read them
            // leniently, so only the schema refuses these examples.
            _ => None,
        };
        if let Some(decoded) = accepted {
            problems.push(format!(
                "{} is accepted by the Rust decoder but must be refused: {decoded}",
                shown(&path)
            ));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_protocols_own_examples_decode() {
    let minimal = fs::read(examples_dir().join("launch_request.minimal.json")).unwrap();
    assert_eq!(
        decode_launch(&minimal).unwrap(),
        LaunchRequest::new("j1", vec!["sleep".into(), "5".into()])
    );
    // `nats req flare.jobs.terminate.j1 ''`: the empty body means all defaults.
    assert_eq!(TerminateRequest::decode(b"").unwrap().grace_s(), 10);
}
