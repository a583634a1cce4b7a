//! A user id of its own for every process job (`--job-uids FIRST-LAST`): the
//! kernel lets a process signal, trace or read the memory of another only when
//! both run as the same user, so jobs under ids of their own cannot reach each
//! other. The supervisor hands the ids out, since it alone knows every job that
//! still runs, across worker restarts; it takes them in turn through the range,
//! so that an id freed by a job that ended is the last to be handed out again.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// Most ids a range may hold (every one is checked against the user database
/// at start-up).
pub const MAX_RANGE: u32 = 65_536;

/// The ids jobs may run as: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUidRange {
    /// The first id.
    pub first: u32,
    /// The last id (included).
    pub last: u32,
}

/// Why a range is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job uids {shown}: expected FIRST-LAST, ids above 0 and below 4294967295, \
     at most {MAX_RANGE} of them"
)]
pub struct BadRange {
    /// The setting, quoted and bounded.
    shown: String,
}

/// Every user id of the range is held by a job that still runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no job uid is free: all {size} of {0} belong to jobs that still run", size = .0.size())]
pub struct NoFreeJobUid(pub JobUidRange);

impl JobUidRange {
    /// How many ids it holds (never none).
    pub fn size(&self) -> u32 {
        self.last - self.first + 1
    }

    /// Whether `uid` is one of its ids.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = u32> {
        self.first..=self.last
    }
}

impl FromStr for JobUidRange {
    type Err = BadRange;

    fn from_str(text: &str) -> Result<Self, BadRange> {
        let bad = || BadRange {
            shown: crate::protocol::bounded::quoted(text),
        };
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let (first, last): (u32, u32) = (
            first.trim().parse().map_err(|_| bad())?,
            last.trim().parse().map_err(|_| bad())?,
        );
        // 0 is root, and 4294967295 is the "no id" of setuid and chown.
        if first == 0 || last == u32::MAX || last < first || last - first >= MAX_RANGE {
            return Err(bad());
        }
        Ok(JobUidRange { first, last })
    }
}

impl fmt::Display for JobUidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The ids of a range, handed out in turn.
#[derive(Debug)]
pub struct JobUids {
    range: JobUidRange,
    /// Where the search for a free id starts.
    next: u32,
}

impl JobUids {
    /// Hands out `range` from its first id on.
    pub fn new(range: JobUidRange) -> Self {
        JobUids {
            range,
            next: range.first,
        }
    }

    /// The range it hands out.
    pub fn range(&self) -> JobUidRange {
        self.range
    }

    /// The first id from where the last search stopped that no job in `in_use`
    /// holds; `None` when every id is held.
    pub fn take(&mut self, in_use: &HashSet<u32>) -> Option<u32> {
        let range = self.range;
        let from = self.next - range.first;
        let free = (0..range.size())
            .map(|step| range.first + (from + step) % range.size())
            .find(|uid| !in_use.contains(uid))?;
        self.next = if free == range.last {
            range.first
        } else {
            free + 1
        };
        Some(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_first_dash_last_without_root_or_the_no_id() {
        let range: JobUidRange = "200000-200999".parse().unwrap();
        assert_eq!(
            (range.first, range.last, range.size()),
            (200000, 200999, 1000)
        );
        assert_eq!(range.to_string(), "200000-200999");
        assert_eq!(" 5 - 5 ".parse::<JobUidRange>().unwrap().size(), 1);
        for bad in [
            "",
            "5",
            "0-10",
            "10-5",
            "1-4294967295",
            "a-b",
            "-5",
            "1-65537",
        ] {
            assert!(bad.parse::<JobUidRange>().is_err(), "{bad:?}");
        }
        assert!("1-65536".parse::<JobUidRange>().is_ok());
    }

    #[test]
    fn no_free_uid_names_the_range_and_its_size() {
        let full = NoFreeJobUid("10-13".parse().unwrap());
        assert_eq!(
            full.to_string(),
            "no job uid is free: all 4 of 10-13 belong to jobs that still run"
        );
    }

    #[test]
    fn ids_are_handed_out_in_turn_skipping_those_in_use() {
        let mut uids = JobUids::new("10-13".parse().unwrap());
        let mut in_use = HashSet::new();
        for expected in [10, 11, 12] {
            let uid = uids.take(&in_use).unwrap();
            assert_eq!(uid, expected);
            in_use.insert(uid);
        }
        // 11 ends: 13 comes first, then 11, the longest free.
        in_use.remove(&11);
        assert_eq!(uids.take(&in_use), Some(13));
        in_use.insert(13);
        assert_eq!(uids.take(&in_use), Some(11));
        in_use.insert(11);
        assert_eq!(uids.take(&in_use), None);
        in_use.remove(&10);
        assert_eq!(uids.take(&in_use), Some(10));
    }
}
