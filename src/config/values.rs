//! Values of options that are text with a shape of their own, shared by more
//! than one table: a numeric user `UID[:GID]`, and [`BadValue`], the error of
//! any option value that does not parse.

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

impl fmt::Display for NumericUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gid {
            Some(gid) => write!(f, "{}:{gid}", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

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
}
