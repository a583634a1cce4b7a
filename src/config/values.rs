//! Values of options that are text with a shape of their own, shared by more
//! than one table: a numeric user `UID[:GID]`, a Linux capability's name, the
//! default limits of a job, and [`BadValue`], the error of any option value that
//! does not parse.

use super::options::value_by_text;
use crate::protocol::Resources;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value of an option that does not have the shape it must have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} {problem}")]
pub struct BadValue {
    /// The value, quoted and bounded.
    shown: String,
    /// What it must be, or what is wrong with it.
    problem: &'static str,
}

impl BadValue {
    /// `text` is not a value: `problem` says what it must be.
    pub fn new(text: &str, problem: &'static str) -> BadValue {
        BadValue {
            shown: crate::protocol::bounded::quoted(text),
            problem,
        }
    }
}

/// A user and maybe a group, by number: `UID` or `UID:GID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericUser {
    /// The user id.
    pub uid: u32,
    /// The group id, if given.
    pub gid: Option<u32>,
}

impl FromStr for NumericUser {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let bad = || BadValue::new(text, "must be UID or UID:GID (numbers)");
        let number = |id: &str| {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            id.parse().map_err(|_| bad())
        };
        match text.split_once(':') {
            Some((uid, gid)) => Ok(NumericUser {
                uid: number(uid)?,
                gid: Some(number(gid)?),
            }),
            None => Ok(NumericUser {
                uid: number(text)?,
                gid: None,
            }),
        }
    }
}

impl NumericUser {
    /// The user and group this process runs as.
    pub fn of_this_process() -> NumericUser {
        NumericUser {
            uid: nix::unistd::getuid().as_raw(),
            gid: Some(nix::unistd::getgid().as_raw()),
        }
    }
}

impl fmt::Display for NumericUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gid {
            Some(gid) => write!(f, "{}:{gid}", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

/// A Linux capability by its name without the `CAP_` prefix (`NET_BIND_SERVICE`),
/// as Docker and Kubernetes take it; `CAP_NET_BIND_SERVICE` and lower case are
/// taken too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability(String);

/// Longest name of a capability taken (the longest today has 18 letters).
const MAX_CAPABILITY_NAME: usize = 32;

impl FromStr for Capability {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let name = text.to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name);
        let well_formed = !name.is_empty()
            && name.len() <= MAX_CAPABILITY_NAME
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(BadValue::new(
                text,
                "must be the name of a Linux capability (NET_BIND_SERVICE)",
            ));
        }
        Ok(Capability(name.to_owned()))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's CPU and memory limits: those a launch request names, the site's
/// defaults, or those a job gets (and a process job's supervisor is handed).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JobLimits {
    /// Memory in MiB; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU cores, fractions allowed; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

impl JobLimits {
    /// The limits a request's resources name: each where above 0 (0 means no
    /// limit, as on the container backends).
    pub fn of(wanted: Option<&Resources>) -> JobLimits {
        let wanted = wanted.cloned().unwrap_or_default();
        JobLimits {
            memory_mb: wanted.memory_mb.filter(|mb| *mb > 0),
            cpus: wanted.cpus.filter(|cpus| *cpus > 0.0),
        }
    }

    /// The limits of a job whose request asks for `wanted`: each one the request
    /// names (above 0), else the default these hold.
    pub fn for_request(&self, wanted: Option<&Resources>) -> JobLimits {
        let asked = JobLimits::of(wanted);
        JobLimits {
            memory_mb: asked.memory_mb.or(self.memory_mb),
            cpus: asked.cpus.or(self.cpus),
        }
    }

    /// Whether there are none.
    pub fn is_none(&self) -> bool {
        self.cpus.is_none() && self.memory_mb.is_none()
    }

    /// Whether these are limits a job can be held to (memory above 0, CPUs a
    /// finite number above 0).
    pub fn is_valid(&self) -> bool {
        self.memory_mb.is_none_or(|mb| mb > 0)
            && self.cpus.is_none_or(|cpus| cpus.is_finite() && cpus > 0.0)
    }
}

value_by_text!(NumericUser, Capability);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_users_are_a_uid_and_maybe_a_gid() {
        assert_eq!(
            "1000:2000".parse(),
            Ok(NumericUser {
                uid: 1000,
                gid: Some(2000)
            })
        );
        assert_eq!("0".parse::<NumericUser>().unwrap().to_string(), "0");
        for bad in ["root", "1:", ":1", "1:2:3", "-1", "+1", "99999999999"] {
            assert!(bad.parse::<NumericUser>().is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_are_named_without_their_prefix() {
        for (text, name) in [
            ("NET_BIND_SERVICE", "NET_BIND_SERVICE"),
            ("cap_chown", "CHOWN"),
            ("CAP_SYS_PTRACE", "SYS_PTRACE"),
        ] {
            assert_eq!(text.parse::<Capability>().unwrap().to_string(), name);
        }
        for bad in [
            "",
            "CAP_",
            "NET BIND",
            "1CHOWN",
            "CHOWN;rm",
            &"A".repeat(33),
        ] {
            assert!(bad.parse::<Capability>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_job_gets_the_limits_its_request_names_else_the_defaults() {
        let defaults = JobLimits {
            memory_mb: Some(512),
            cpus: Some(2.0),
        };
        assert_eq!(defaults.for_request(None), defaults);
        let wanted = Resources {
            memory_mb: Some(64),
            cpus: Some(0.0),
            ..Resources::default()
        };
        assert_eq!(
            defaults.for_request(Some(&wanted)),
            JobLimits {
                memory_mb: Some(64),
                cpus: Some(2.0)
            }
        );
        assert_eq!(
            JobLimits::default().for_request(Some(&wanted)),
            JobLimits {
                memory_mb: Some(64),
                cpus: None
            }
        );
        assert!(defaults.is_valid());
        for bad in [
            JobLimits {
                memory_mb: Some(0),
                cpus: None,
            },
            JobLimits {
                memory_mb: None,
                cpus: Some(f64::NAN),
            },
            JobLimits {
                memory_mb: None,
                cpus: Some(-1.0),
            },
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
    }
}
