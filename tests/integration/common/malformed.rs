//! Launch payloads broken in each of the ways the protocol names, and what a
//! worker says about each: one without a usable job id is reported on
//! `P.invalid`, any other ends its job in `error` with reason `InvalidRequest`.

/// One way of breaking a launch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON at all (an object never closed).
    BrokenJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No `job_id`.
    NoJobId,
    /// A `job_id` that is not a string.
    JobIdNotAString,
    /// A `job_id` with a character outside its alphabet.
    JobIdBadCharacter,
    /// A `job_id` NATS cannot put in a subject.
    JobIdWithDots,
    /// A `job_id` over 128 characters.
    JobIdTooLong,
    /// No `command`.
    NoCommand,
    /// An empty `command`.
    EmptyCommand,
    /// A field the protocol does not know.
    UnknownField,
    /// A protocol version other than 1.
    UnknownVersion,
    /// A start timeout of 0 s.
    ZeroStartTimeout,
}

impl Malformed {
    /// Every way, each once.
    pub const ALL: [Malformed; 12] = [
        Malformed::BrokenJson,
        Malformed::NotAnObject,
        Malformed::NoJobId,
        Malformed::JobIdNotAString,
        Malformed::JobIdBadCharacter,
        Malformed::JobIdWithDots,
        Malformed::JobIdTooLong,
        Malformed::NoCommand,
        Malformed::EmptyCommand,
        Malformed::UnknownField,
        Malformed::UnknownVersion,
        Malformed::ZeroStartTimeout,
    ];

    /// A request for `job_id` broken this way. The payload holds `job_id`
    /// somewhere, so that two requests for different jobs differ.
    pub fn payload(self, job_id: &str) -> String {
        let command = r#""command":["true"]"#;
        match self {
            Malformed::BrokenJson => format!(r#"{{"job_id":"{job_id}",{command}"#),
            Malformed::NotAnObject => format!(r#"["{job_id}","true"]"#),
            Malformed::NoJobId => format!(r#"{{{command},"x":{{"meant":"{job_id}"}}}}"#),
            Malformed::JobIdNotAString => format!(r#"{{"job_id":["{job_id}"],{command}}}"#),
            Malformed::JobIdBadCharacter => format!(r#"{{"job_id":"{job_id}/x",{command}}}"#),
            Malformed::JobIdWithDots => format!(r#"{{"job_id":"{job_id}..x",{command}}}"#),
            Malformed::JobIdTooLong => {
                let long = format!("{job_id}-{}", "x".repeat(128));
                format!(r#"{{"job_id":"{long}",{command}}}"#)
            }
            Malformed::NoCommand => format!(r#"{{"job_id":"{job_id}"}}"#),
            Malformed::EmptyCommand => format!(r#"{{"job_id":"{job_id}","command":[]}}"#),
            Malformed::UnknownField => {
                format!(r#"{{"job_id":"{job_id}",{command},"comand":["true"]}}"#)
            }
            Malformed::UnknownVersion => format!(r#"{{"v":2,"job_id":"{job_id}",{command}}}"#),
            Malformed::ZeroStartTimeout => {
                format!(r#"{{"job_id":"{job_id}",{command},"timeouts":{{"start_s":0}}}}"#)
            }
        }
    }

    /// Whether a worker can read the request's job id: then its job ends in
    /// `error`; else the request is reported on `P.invalid`.
    pub fn identifiable(self) -> bool {
        matches!(
            self,
            Malformed::NoCommand
                | Malformed::EmptyCommand
                | Malformed::UnknownField
                | Malformed::UnknownVersion
                | Malformed::ZeroStartTimeout
        )
    }

    /// What the report, or the job's end, says is wrong.
    pub fn why(self) -> &'static str {
        match self {
            Malformed::BrokenJson => "payload is not valid JSON",
            Malformed::NotAnObject => "payload is not a JSON object",
            Malformed::NoJobId => "job_id is missing",
            Malformed::JobIdNotAString => "job_id is not a string",
            Malformed::JobIdBadCharacter => "found '/'",
            Malformed::JobIdWithDots => "cannot be used in a NATS subject",
            Malformed::JobIdTooLong => "job_id must be 1 to 128 characters",
            Malformed::NoCommand => "missing field `command`",
            Malformed::EmptyCommand => "command must be a non-empty array",
            Malformed::UnknownField => "unknown field `comand`",
            Malformed::UnknownVersion => "unsupported protocol version 2",
            Malformed::ZeroStartTimeout => "timeouts.start_s must be between 1",
        }
    }
}
