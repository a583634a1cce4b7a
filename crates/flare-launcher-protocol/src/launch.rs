//! The launch request (`P.launch.POOL`) and its decoding, with every rule of the
//! contract enforced: a usable job id (see [`super::JobId`]), a non-empty command, no
//! unknown fields outside `x`, the version, and bounded durations. A request over
//! the worker's size limit is not decoded: only its job id is read. Error messages
//! quote what the request holds only in part (see [`super::bounded`]).

use super::bounded::{bounded, quoted};
use super::{
    BackendKind, DEFAULT_START_TIMEOUT_S, DurationOutOfRange, JobId, JobIdError, PROTOCOL_VERSION,
    check_duration, default_version, is_default_version,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a job needs. `gpus: 0` means none, explicitly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Number of GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Memory needed on each of its GPUs, in MiB (NVFlare's `mem_per_gpu_in_GiB`
    /// times 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_mb: Option<u64>,
    /// CPU cores, fractions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

/// A volume mounted into the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// `pvc:NAME`, `host:/ABS/PATH`, `secret:NAME` or `emptydir:`.
    #[schemars(regex(pattern = r"^(pvc:.+|host:/.*|secret:.+|emptydir:)$"))]
    pub source: String,
    /// Absolute path inside the job.
    #[schemars(regex(pattern = r"^/"))]
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A [`Mount`] whose `source` is none of the forms a mount takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "mount source {} must be pvc:NAME, host:/ABS/PATH, secret:NAME or emptydir:",
    quoted(.given)
)]
pub struct BadMountSource {
    /// The source given.
    pub given: String,
}

/// The parsed `source` of a [`Mount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A Kubernetes PersistentVolumeClaim.
    Pvc(String),
    /// A path on the host.
    Host(String),
    /// A Kubernetes Secret.
    Secret(String),
    /// A fresh empty directory.
    EmptyDir,
}

impl Mount {
    /// Parses `source`.
    ///
    /// # Errors
    /// [`BadMountSource`] when it is none of the forms a mount takes.
    pub fn parsed_source(&self) -> Result<MountSource, BadMountSource> {
        let bad = || BadMountSource {
            given: self.source.clone(),
        };
        let (kind, rest) = self.source.split_once(':').ok_or_else(bad)?;
        match (kind, rest) {
            ("pvc", name) if !name.is_empty() => Ok(MountSource::Pvc(name.to_owned())),
            ("secret", name) if !name.is_empty() => Ok(MountSource::Secret(name.to_owned())),
            ("host", path) if path.starts_with('/') => Ok(MountSource::Host(path.to_owned())),
            ("emptydir", "") => Ok(MountSource::EmptyDir),
            _ => Err(bad()),
        }
    }
}

/// Time limits of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Longest time from acceptance to `running`, in seconds (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_s: Option<u64>,
    /// Longest run time in seconds (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_s: Option<u64>,
}

/// The first rule of the contract a [`LaunchRequest`] breaks that serde cannot
/// express.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidLaunch {
    /// The job id is unusable.
    #[error(transparent)]
    JobId(#[from] JobIdError),
    /// A protocol version other than this one.
    #[error(
        "unsupported protocol version {0}; this worker speaks version {current}",
        current = PROTOCOL_VERSION
    )]
    Version(u32),
    /// No command.
    #[error("command must be a non-empty array of strings")]
    NoCommand,
    /// An empty program.
    #[error("command[0] (the program) must not be empty")]
    NoProgram,
    /// An argument with a NUL byte, at this index.
    #[error("command[{0}] contains a NUL byte")]
    NulInCommand(usize),
    /// A time limit out of range.
    #[error(transparent)]
    Duration(#[from] DurationOutOfRange),
    /// A container backend without an image.
    #[error("image is required for the {0} backend")]
    NoImage(BackendKind),
    /// An unusable environment variable, by name.
    #[error(
        "env variable {} is invalid: names must be non-empty without '=' or NUL, values without NUL",
        quoted(.0)
    )]
    Env(String),
    /// An unusable secret environment variable, by name.
    #[error(
        "secret_env variable {} is invalid: names must be letters, digits and '_' (not first), at most {MAX_SECRET_NAME} characters; values without NUL",
        quoted(.0)
    )]
    SecretEnv(String),
    /// A variable both in `env` and in `secret_env`.
    #[error("variable {} is in both env and secret_env", quoted(.0))]
    SecretEnvTwice(String),
    /// A CPU count that is not a non-negative number.
    #[error("resources.cpus must be a non-negative number, got {0}")]
    Cpus(f64),
    /// A mount's source is none of its forms.
    #[error(transparent)]
    MountSource(#[from] BadMountSource),
    /// A mount's target is not absolute.
    #[error("mount target {} must be an absolute path", quoted(.0))]
    MountTarget(String),
}

/// A request to run one job, published on `P.launch.POOL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"backend": {"enum": ["docker", "k8s"]}}, "required": ["backend"]},
    "then" = {"properties": {"image": {"type": "string", "minLength": 1}}, "required": ["image"]}
))]
pub struct LaunchRequest {
    /// Protocol version; only 1 is known.
    #[serde(
        default = "default_version",
        skip_serializing_if = "is_default_version"
    )]
    #[schemars(extend("const" = PROTOCOL_VERSION, "default" = PROTOCOL_VERSION))]
    pub v: u32,
    /// The job's identity, unique forever.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub job_id: String,
    /// The FL site the job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Where to run it; default: the worker's configured backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// argv, executed without a shell.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Container image, required for docker and k8s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secret (credentials): the job
    /// gets them, but no pod spec, container configuration, record, event or
    /// log line holds them. Names are `[A-Za-z_][A-Za-z0-9_]*`, none also in
    /// `env`.
    #[serde(default, skip_serializing_if = "SecretEnv::is_empty")]
    pub secret_env: SecretEnv,
    /// Working directory inside the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// What the job needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Volumes to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Time limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Copied onto the pod or container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<Map<String, Value>>,
}

impl LaunchRequest {
    /// A request with only the required fields set.
    pub fn new(job_id: impl Into<String>, command: Vec<String>) -> Self {
        LaunchRequest {
            v: PROTOCOL_VERSION,
            job_id: job_id.into(),
            site: None,
            backend: None,
            command,
            image: None,
            env: BTreeMap::new(),
            secret_env: SecretEnv::default(),
            workdir: None,
            resources: None,
            mounts: Vec::new(),
            timeouts: None,
            labels: BTreeMap::new(),
            x: None,
        }
    }

    /// `start_s`, defaulted.
    pub fn start_timeout_s(&self) -> u64 {
        self.timeouts
            .as_ref()
            .and_then(|t| t.start_s)
            .unwrap_or(DEFAULT_START_TIMEOUT_S)
    }

    /// `run_s`, if any.
    pub fn run_timeout_s(&self) -> Option<u64> {
        self.timeouts.as_ref().and_then(|t| t.run_s)
    }

    /// Checks the rules serde cannot express.
    ///
    /// # Errors
    /// An [`InvalidLaunch`] naming the first rule broken.
    pub fn validate(&self) -> Result<(), InvalidLaunch> {
        JobId::new(self.job_id.as_str())?;
        if self.v != PROTOCOL_VERSION {
            return Err(InvalidLaunch::Version(self.v));
        }
        if self.command.is_empty() {
            return Err(InvalidLaunch::NoCommand);
        }
        if self.command[0].is_empty() {
            return Err(InvalidLaunch::NoProgram);
        }
        if let Some(at) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(InvalidLaunch::NulInCommand(at));
        }
        let timeouts = self.timeouts.clone().unwrap_or_default();
        check_duration("timeouts.start_s", timeouts.start_s, 1)?;
        check_duration("timeouts.run_s", timeouts.run_s, 1)?;
        if matches!(self.backend, Some(BackendKind::Docker | BackendKind::K8s))
            && self.image.as_deref().is_none_or(str::is_empty)
        {
            return Err(InvalidLaunch::NoImage(
                self.backend.unwrap_or(BackendKind::Process),
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(InvalidLaunch::Env(key.clone()));
            }
        }
        for (name, value) in self.secret_env.iter() {
            if !is_secret_name(name) || value.contains('\0') {
                return Err(InvalidLaunch::SecretEnv(name.clone()));
            }
            if self.env.contains_key(name) {
                return Err(InvalidLaunch::SecretEnvTwice(name.clone()));
            }
        }
        if let Some(cpus) = self.resources.as_ref().and_then(|r| r.cpus)
            && !(cpus.is_finite() && cpus >= 0.0)
        {
            return Err(InvalidLaunch::Cpus(cpus));
        }
        for mount in &self.mounts {
            mount.parsed_source()?;
            if !mount.target.starts_with('/') {
                return Err(InvalidLaunch::MountTarget(mount.target.clone()));
            }
        }
        Ok(())
    }
}

/// The secret environment variables of a request, by name. Its `Debug` shows
/// the names only, so that no log line of a request holds a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretEnv(BTreeMap<String, String>);

impl SecretEnv {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for SecretEnv {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SecretEnv {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "<secret>")))
            .finish()
    }
}

/// Why a `secret_env` that is not an object of strings was refused; it quotes
/// nothing of what the field holds.
const SECRET_ENV_SHAPE: &str = "secret_env must be an object whose values are strings";

/// Longest name of a secret environment variable.
pub const MAX_SECRET_NAME: usize = 128;

/// Whether `name` can name a secret environment variable: a portable
/// variable name, usable as a file name and as the key of a Kubernetes Secret.
fn is_secret_name(name: &str) -> bool {
    name.len() <= MAX_SECRET_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a launch payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchDecodeError {
    /// No valid `job_id` could be read: reported on `P.invalid`.
    #[error("{error}")]
    Unidentifiable {
        /// What is wrong.
        error: String,
    },
    /// The job is known by its id but the request is invalid: the job ends in
    /// `error` with reason `InvalidRequest`.
    #[error("job {job_id}: {error}")]
    Invalid {
        /// The job's id.
        job_id: JobId,
        /// What is wrong.
        error: String,
    },
}

/// Only the job id of a launch payload; every other field is skipped unread
/// (serde ignores unknown fields of this struct).
#[derive(Deserialize)]
struct JobIdOnly {
    job_id: Option<String>,
}

/// Decodes and validates a launch payload of at most `max_bytes`; of a larger
/// one, only the job id is read, to end that job with an error naming the size
/// and the limit.
///
/// Returns the request with its job id, checked.
///
/// # Errors
/// As [`decode_launch`]; for a payload over `max_bytes`, always.
pub fn decode_launch_within(
    payload: &[u8],
    max_bytes: usize,
) -> Result<(JobId, LaunchRequest), LaunchDecodeError> {
    if payload.len() <= max_bytes {
        return decode_identified(payload);
    }
    let too_big = format!(
        "the request is {} bytes, over this worker's limit of {max_bytes} bytes",
        payload.len()
    );
    let job_id = serde_json::from_slice::<JobIdOnly>(payload)
        .map_err(|e| e.to_string())
        .and_then(|read| read.job_id.ok_or_else(|| "job_id is missing".to_owned()))
        .and_then(|job_id| JobId::new(job_id).map_err(|e| e.to_string()));
    Err(match job_id {
        Ok(job_id) => LaunchDecodeError::Invalid {
            job_id,
            error: too_big,
        },
        Err(no_id) => LaunchDecodeError::Unidentifiable {
            error: bounded(&format!("{too_big}, and has no usable job_id: {no_id}")),
        },
    })
}

/// Decodes and validates a launch payload. Error messages are bounded (serde's
/// echo what the payload holds, such as the name of an unknown field).
///
/// # Errors
/// [`LaunchDecodeError::Unidentifiable`] when no valid `job_id` can be read,
/// [`LaunchDecodeError::Invalid`] for any other broken rule.
pub fn decode_launch(payload: &[u8]) -> Result<LaunchRequest, LaunchDecodeError> {
    decode_identified(payload).map(|(_, request)| request)
}

/// [`decode_launch`], also returning the request's job id, checked.
fn decode_identified(payload: &[u8]) -> Result<(JobId, LaunchRequest), LaunchDecodeError> {
    let unidentifiable = |error: String| LaunchDecodeError::Unidentifiable {
        error: bounded(&error),
    };
    let mut value: Value = serde_json::from_slice(payload)
        .map_err(|e| unidentifiable(format!("payload is not valid JSON: {e}")))?;
    let Value::Object(object) = &mut value else {
        return Err(unidentifiable("payload is not a JSON object".into()));
    };
    let job_id = match object.get("job_id") {
        None => return Err(unidentifiable("job_id is missing".into())),
        Some(Value::String(id)) => {
            JobId::new(id.as_str()).map_err(|e| unidentifiable(e.to_string()))?
        }
        Some(_) => return Err(unidentifiable("job_id is not a string".into())),
    };
    let invalid = |error: String| LaunchDecodeError::Invalid {
        job_id: job_id.clone(),
        error: bounded(&error),
    };
    // Decoded apart: serde's errors quote the values they could not take.
    let secret_env = object
        .remove("secret_env")
        .map(serde_json::from_value::<SecretEnv>)
        .transpose()
        .map_err(|_| invalid(SECRET_ENV_SHAPE.into()))?
        .unwrap_or_default();
    let mut request: LaunchRequest =
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    request.secret_env = secret_env;
    request.validate().map_err(|e| invalid(e.to_string()))?;
    Ok((job_id, request))
}

#[cfg(test)]
mod tests {
    use super::super::bounded::MAX_TEXT;
    use super::*;

    fn unidentifiable(payload: &str) -> String {
        match decode_launch(payload.as_bytes()) {
            Err(LaunchDecodeError::Unidentifiable { error }) => error,
            other => panic!("{payload}: expected Unidentifiable, got {other:?}"),
        }
    }

    fn invalid(payload: &str) -> String {
        match decode_launch(payload.as_bytes()) {
            Err(LaunchDecodeError::Invalid { job_id, error }) => {
                assert_eq!(job_id, "j1");
                error
            }
            other => panic!("{payload}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_request_decodes_with_defaults() {
        let req = decode_launch(br#"{"job_id":"j1","command":["sleep","5"]}"#).unwrap();
        assert_eq!(
            req,
            LaunchRequest::new("j1", vec!["sleep".into(), "5".into()])
        );
        assert_eq!(req.start_timeout_s(), 120);
        assert_eq!(req.run_timeout_s(), None);
    }

    #[test]
    fn full_request_round_trips() {
        let text = r#"{"v":1,"job_id":"a.B_c-9","site":"site-1","backend":"k8s",
            "command":["python","-m","x"],"image":"img:1","env":{"A":"b"},"workdir":"/w",
            "resources":{"gpus":0,"gpu_memory_mb":1536,"cpus":1.5,"memory_mb":512},
            "mounts":[{"source":"pvc:data","target":"/data","read_only":true},{"source":"emptydir:","target":"/tmp/x"}],
            "timeouts":{"start_s":5,"run_s":60},"labels":{"team":"a"},"x":{"anything":[1,{"goes":true}]}}"#;
        let req = decode_launch(text.as_bytes()).unwrap();
        assert_eq!(req.backend, Some(BackendKind::K8s));
        assert_eq!(req.run_timeout_s(), Some(60));
        let again = decode_launch(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(again, req);
    }

    #[test]
    fn secret_env_is_checked_and_its_values_never_shown() {
        let text =
            r#"{"job_id":"j1","command":["x"],"env":{"A":"b"},"secret_env":{"TOKEN":"s3cret"}}"#;
        let req = decode_launch(text.as_bytes()).unwrap();
        assert_eq!(req.secret_env["TOKEN"], "s3cret");
        let shown = format!("{req:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        let again = decode_launch(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(again, req);
        for bad in ["1A", "A-B", "A=B", "", "A B", &"A".repeat(129)] {
            let payload =
                serde_json::json!({"job_id": "j1", "command": ["x"], "secret_env": {bad: "v"}});
            let error = invalid(&payload.to_string());
            assert!(error.contains("secret_env variable"), "{bad}: {error}");
        }
        for shape in [
            r#"{"T":["s3cret"]}"#,
            r#""s3cret""#,
            r#"{"T":{"s3cret":1}}"#,
        ] {
            let payload = format!(r#"{{"job_id":"j1","command":["x"],"secret_env":{shape}}}"#);
            let error = invalid(&payload);
            assert!(
                error.contains("secret_env must be") && !error.contains("s3cret"),
                "{shape}: {error}"
            );
        }
        let nul = r#"{"job_id":"j1","command":["x"],"secret_env":{"T":"a\u0000b"}}"#;
        assert!(invalid(nul).contains("secret_env variable"));
        let twice =
            r#"{"job_id":"j1","command":["x"],"env":{"T":"a"},"secret_env":{"T":"s3cret"}}"#;
        let error = invalid(twice);
        assert!(
            error.contains("both env and secret_env") && !error.contains("s3cret"),
            "{error}"
        );
    }

    #[test]
    fn payloads_without_a_usable_job_id_are_unidentifiable() {
        assert!(unidentifiable("{not json").contains("not valid JSON"));
        assert!(unidentifiable("[1,2]").contains("not a JSON object"));
        assert!(unidentifiable(r#"{"command":["x"]}"#).contains("missing"));
        assert!(unidentifiable(r#"{"job_id":7,"command":["x"]}"#).contains("not a string"));
        assert!(unidentifiable(r#"{"job_id":"","command":["x"]}"#).contains("1 to 128"));
        assert!(unidentifiable(r#"{"job_id":"a b","command":["x"]}"#).contains("' '"));
        assert!(unidentifiable(r#"{"job_id":"a..b","command":["x"]}"#).contains("'..'"));
        assert!(unidentifiable(r#"{"job_id":"a/b","command":["x"]}"#).contains("'/'"));
        let long = format!(r#"{{"job_id":"{}","command":["x"]}}"#, "a".repeat(129));
        assert!(unidentifiable(&long).contains("got 129"));
        let longest = format!(r#"{{"job_id":"{}","command":["x"]}}"#, "a".repeat(128));
        assert!(decode_launch(longest.as_bytes()).is_ok());
    }

    #[test]
    fn errors_quote_what_the_request_holds_only_in_part() {
        // 300,000 double quotes, escaped in JSON.
        let quotes = r#"\""#.repeat(300_000);
        let field = format!(r#"{{"job_id":"j1","command":["x"],"{quotes}":1}}"#);
        assert!(invalid(&field).len() <= MAX_TEXT);
        let nul = format!(r#"{{"job_id":"j1","command":["{quotes}\u0000"]}}"#);
        assert_eq!(invalid(&nul), "command[0] contains a NUL byte");
        let env = format!(
            r#"{{"job_id":"j1","command":["x"],"env":{{"{}=":"v"}}}}"#,
            "k".repeat(100_000)
        );
        let error = invalid(&env);
        assert!(error.len() < 1024 && error.contains("bytes cut"), "{error}");
    }

    #[test]
    fn requests_over_the_limit_are_refused_by_their_job_id_alone() {
        let payload = format!(
            r#"{{"job_id":"j1","command":["{}"],"x":{{"y":[1]}}}}"#,
            "a".repeat(2000)
        );
        assert!(decode_launch_within(payload.as_bytes(), payload.len()).is_ok());
        let error = match decode_launch_within(payload.as_bytes(), 1000) {
            Err(LaunchDecodeError::Invalid { job_id, error }) if job_id == "j1" => error,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let size = payload.len();
        assert_eq!(
            error,
            format!("the request is {size} bytes, over this worker's limit of 1000 bytes")
        );
        // Whatever else is wrong with it is not looked at.
        let unknown = format!(r#"{{"comand":"{}","job_id":"j1"}}"#, "a".repeat(2000));
        assert!(matches!(
            decode_launch_within(unknown.as_bytes(), 1000),
            Err(LaunchDecodeError::Invalid { .. })
        ));
        for no_id in [
            format!(r#"{{"command":["{}"]}}"#, "a".repeat(2000)),
            format!(r#"{{"job_id":"a b","command":["{}"]}}"#, "a".repeat(2000)),
            format!("[{}]", "1,".repeat(1000) + "1"),
        ] {
            match decode_launch_within(no_id.as_bytes(), 1000) {
                Err(LaunchDecodeError::Unidentifiable { error }) => {
                    assert!(
                        error.contains("over this worker's limit of 1000 bytes"),
                        "{error}"
                    )
                }
                other => panic!("expected Unidentifiable, got {other:?}"),
            }
        }
    }

    #[test]
    fn identifiable_but_invalid_requests_name_the_rule() {
        let cases = [
            (r#"{"job_id":"j1"}"#, "missing field `command`"),
            (r#"{"job_id":"j1","command":[]}"#, "non-empty"),
            (r#"{"job_id":"j1","command":"ls"}"#, "invalid type"),
            (
                r#"{"job_id":"j1","command":["x"],"comand":1}"#,
                "unknown field `comand`",
            ),
            (r#"{"job_id":"j1","command":["x"],"v":2}"#, "version 2"),
            (
                r#"{"job_id":"j1","command":["x"],"backend":"vm"}"#,
                "unknown variant",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"backend":"docker"}"#,
                "image is required",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"resources":{"gpu":1}}"#,
                "unknown field `gpu`",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"resources":{"gpus":-1}}"#,
                "invalid value",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"mounts":[{"source":"nfs:x","target":"/d"}]}"#,
                "pvc:NAME",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"mounts":[{"source":"pvc:d","target":"d"}]}"#,
                "absolute",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"env":{"A=B":"c"}}"#,
                "env variable",
            ),
            (
                r#"{"job_id":"j1","command":["x"],"timeouts":{"start":1}}"#,
                "unknown field `start`",
            ),
        ];
        for (payload, needle) in cases {
            let error = invalid(payload);
            assert!(error.contains(needle), "{payload}: {error}");
        }
    }
}
