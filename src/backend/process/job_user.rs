//! The user process jobs run as (`--job-user USER[:GROUP]`): resolved once at
//! start-up to ids, supplementary groups and a home, checked against what the
//! worker may do, and put on each job's child process just before it executes the
//! job's program.
//!
//! A job running as another user than the worker cannot read what is the
//! worker's: its environment and memory (`/proc/PID/environ`, `/proc/PID/mem`),
//! its configuration and credential files, its data directory. With
//! `--job-uids FIRST-LAST` every job gets a user id of its own from that range
//! (the user's group, groups and home stay), so jobs cannot reach each other
//! either; the ids must belong to no user of the system, and there must be one
//! for every job the worker may run at once.

use crate::config::UserSpec;
use crate::supervisor::job_uids::JobUidRange;
use crate::supervisor::wire::JobUserIds;
use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use std::ffi::{CString, OsStr};
use std::path::PathBuf;

/// Longest user or group name accepted (Linux's `LOGIN_NAME_MAX` less its NUL).
const MAX_NAME_LEN: usize = 255;
/// Capability numbers from `linux/capability.h`.
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// The user, group and supplementary groups jobs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    /// The user's id.
    pub uid: Uid,
    /// The job's primary group: the one given, else the user's own.
    pub gid: Gid,
    /// Supplementary groups: the user's memberships plus `gid`.
    pub groups: Vec<Gid>,
    /// The user's name, for `USER` and `LOGNAME`.
    pub name: String,
    /// The user's home directory, for `HOME`.
    pub home: PathBuf,
    /// A user id of its own for each job, from this range, instead of `uid`.
    pub uids: Option<JobUidRange>,
}

/// Why jobs cannot run as the configured user.
#[derive(Debug, thiserror::Error)]
pub enum JobUserError {
    /// The setting is not `USER` or `USER:GROUP`.
    #[error(
        "job user {shown:?}: expected USER or USER:GROUP, names of at most {MAX_NAME_LEN} bytes"
    )]
    Malformed {
        /// The setting, cut to a readable length.
        shown: String,
    },
    /// No such user (by name, or by number).
    #[error("job user {0:?} does not exist")]
    UnknownUser(String),
    /// No such group (by name, or by number).
    #[error("job group {0:?} does not exist")]
    UnknownGroup(String),
    /// The user or group database could not be read.
    #[error("cannot look up {what} {name:?}")]
    Lookup {
        /// `user`, `group` or `groups of user`.
        what: &'static str,
        /// The name looked up.
        name: String,
        /// The system's error.
        #[source]
        source: nix::Error,
    },
    /// The worker may not change a process's user and groups.
    #[error(
        "--job-user (FLARE_JOB_USER) needs a worker that may switch users: root, or the \
         capabilities CAP_SETUID and CAP_SETGID; this worker runs as uid {uid} without them"
    )]
    CannotSwitch {
        /// The worker's effective user id.
        uid: u32,
    },
    /// The worker's capabilities could not be read.
    #[error("cannot read this worker's capabilities from /proc/self/status")]
    Capabilities(#[source] std::io::Error),
    /// `--job-uids` without `--job-user`, whose group and home the jobs take.
    #[error("--job-uids (FLARE_JOB_UIDS) needs --job-user, whose group and home the jobs take")]
    UidsWithoutUser,
    /// Fewer ids than jobs the worker may run at once.
    #[error("--job-uids {range} holds {} ids, fewer than --max-jobs {max_jobs}", range.size())]
    TooFewUids {
        /// The range.
        range: JobUidRange,
        /// The jobs the worker may run at once.
        max_jobs: usize,
    },
    /// An id of the range belongs to a user of the system, to this worker, or
    /// to the subordinate ids of a user (`/etc/subuid`, user namespaces).
    #[error("--job-uids {range} includes uid {uid} of {name}; choose ids no user has")]
    UidTaken {
        /// The range.
        range: JobUidRange,
        /// The id.
        uid: u32,
        /// Whose it is.
        name: String,
    },
}

impl JobUser {
    /// The user process jobs run as: `spec` (`USER` or `USER:GROUP`, names or
    /// numeric ids), each job under an id of its own from `uids` (`FIRST-LAST`)
    /// when given, checked against the user database, `max_jobs` and what this
    /// process may do; `None` when no job user is set.
    ///
    /// # Errors
    /// A [`JobUserError`] saying what is wrong.
    pub fn for_jobs(
        spec: Option<&UserSpec>,
        uids: Option<JobUidRange>,
        max_jobs: usize,
    ) -> Result<Option<JobUser>, JobUserError> {
        let Some(spec) = spec else {
            return match uids {
                Some(_) => Err(JobUserError::UidsWithoutUser),
                None => Ok(None),
            };
        };
        let mut user = JobUser::resolve(spec)?;
        if let Some(range) = uids {
            check_uids(range, max_jobs)?;
            user.uids = Some(range);
        }
        check_can_switch()?;
        Ok(Some(user))
    }

    /// Resolves `spec` (`USER` or `USER:GROUP`, names or numeric ids) in the user
    /// and group databases.
    ///
    /// # Errors
    /// [`JobUserError::Malformed`], [`JobUserError::UnknownUser`],
    /// [`JobUserError::UnknownGroup`] or [`JobUserError::Lookup`].
    pub fn resolve(spec: &UserSpec) -> Result<JobUser, JobUserError> {
        let user = find_user(&spec.user)?;
        let gid = match &spec.group {
            Some(name) => find_group(name)?.gid,
            None => user.gid,
        };
        let c_name = CString::new(user.name.as_str()).map_err(|_| JobUserError::Malformed {
            shown: shown(&spec.to_string()),
        })?;
        let groups = getgrouplist(&c_name, gid).map_err(|source| JobUserError::Lookup {
            what: "groups of user",
            name: user.name.clone(),
            source,
        })?;
        Ok(JobUser {
            uid: user.uid,
            gid,
            groups,
            name: user.name,
            home: user.dir,
            uids: None,
        })
    }

    /// `HOME`, `USER` and `LOGNAME` of this user, for a job's environment (a
    /// launch request's own `env` goes over them).
    pub fn identity_env(&self) -> [(&'static str, &OsStr); 3] {
        [
            ("HOME", self.home.as_os_str()),
            ("USER", OsStr::new(&self.name)),
            ("LOGNAME", OsStr::new(&self.name)),
        ]
    }

    /// The ids the job supervisor switches to (see
    /// [`crate::supervisor`]: groups, group, user, then no ambient capabilities).
    pub fn ids(&self) -> JobUserIds {
        JobUserIds {
            uid: self.uid.as_raw(),
            gid: self.gid.as_raw(),
            groups: self.groups.iter().map(|g| g.as_raw()).collect(),
            uids: self.uids,
        }
    }
}

/// The user named `name`, else the one whose id `name` is.
fn find_user(name: &str) -> Result<User, JobUserError> {
    find(name, "user", User::from_name, |id| {
        User::from_uid(Uid::from_raw(id))
    })?
    .ok_or_else(|| JobUserError::UnknownUser(name.to_owned()))
}

/// The group named `name`, else the one whose id `name` is.
fn find_group(name: &str) -> Result<Group, JobUserError> {
    find(name, "group", Group::from_name, |id| {
        Group::from_gid(Gid::from_raw(id))
    })?
    .ok_or_else(|| JobUserError::UnknownGroup(name.to_owned()))
}

/// Looks `name` up as a name, then (when it is a number) as an id.
fn find<T>(
    name: &str,
    what: &'static str,
    by_name: impl Fn(&str) -> nix::Result<Option<T>>,
    by_id: impl Fn(u32) -> nix::Result<Option<T>>,
) -> Result<Option<T>, JobUserError> {
    let lookup = |source| JobUserError::Lookup {
        what,
        name: name.to_owned(),
        source,
    };
    match by_name(name).map_err(lookup)? {
        Some(found) => Ok(Some(found)),
        None => match name.parse::<u32>() {
            Ok(id) => by_id(id).map_err(lookup),
            Err(_) => Ok(None),
        },
    }
}

/// A setting as shown in an error: at most a name's length.
fn shown(spec: &str) -> String {
    spec.chars().take(MAX_NAME_LEN).collect()
}

/// Checks that `range` holds an id for each of `max_jobs` jobs and none of a
/// user of the system (a job under it could reach that user's processes).
fn check_uids(range: JobUidRange, max_jobs: usize) -> Result<(), JobUserError> {
    if (range.size() as usize) < max_jobs {
        return Err(JobUserError::TooFewUids { range, max_jobs });
    }
    let taken = |uid, name: String| JobUserError::UidTaken { range, uid, name };
    for uid in [Uid::current(), Uid::effective()] {
        if range.contains(uid.as_raw()) {
            return Err(taken(uid.as_raw(), "this worker".into()));
        }
    }
    let subordinate = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if let Some((owner, uid)) = subordinate_overlap(&subordinate, range) {
        return Err(taken(
            uid,
            format!("the subordinate ids of {owner:?} (/etc/subuid)"),
        ));
    }
    for uid in range.ids() {
        let user = User::from_uid(Uid::from_raw(uid)).map_err(|source| JobUserError::Lookup {
            what: "user",
            name: uid.to_string(),
            source,
        })?;
        if let Some(user) = user {
            return Err(taken(uid, format!("the existing user {:?}", user.name)));
        }
    }
    Ok(())
}

/// The first owner in `subuid` (lines `OWNER:FIRST:COUNT`) whose ids meet
/// `range`, with the first id they share.
fn subordinate_overlap(subuid: &str, range: JobUidRange) -> Option<(String, u32)> {
    subuid.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
        let first: u64 = first.parse().ok()?;
        let last = first + count.parse::<u64>().ok()?.checked_sub(1)?;
        let shared = first.max(u64::from(range.first));
        if shared > last.min(u64::from(range.last)) {
            return None;
        }
        Some((owner.to_owned(), u32::try_from(shared).ok()?))
    })
}

/// Checks that this process holds CAP_SETUID and CAP_SETGID (root normally does).
fn check_can_switch() -> Result<(), JobUserError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(JobUserError::Capabilities)?;
    let effective = effective_capabilities(&status).ok_or_else(|| {
        JobUserError::Capabilities(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no readable CapEff line",
        ))
    })?;
    let needed = (1u64 << CAP_SETUID) | (1u64 << CAP_SETGID);
    if effective & needed == needed {
        Ok(())
    } else {
        Err(JobUserError::CannotSwitch {
            uid: Uid::effective().as_raw(),
        })
    }
}

/// The effective capability set, from the text of `/proc/PID/status`.
fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_uids_need_a_job_user_an_id_per_job_and_no_existing_user() {
        let refused = |user: Option<&str>, uids: &str, max_jobs| {
            let user = user.map(|user| user.parse::<UserSpec>().unwrap());
            let uids = uids.parse().unwrap();
            JobUser::for_jobs(user.as_ref(), Some(uids), max_jobs).unwrap_err()
        };
        assert!(matches!(
            refused(None, "3000000-3000099", 10),
            JobUserError::UidsWithoutUser
        ));
        assert!(matches!(
            refused(Some("nobody"), "3000000-3000009", 11),
            JobUserError::TooFewUids { max_jobs: 11, .. }
        ));
        let taken = refused(Some("nobody"), "65530-65540", 1);
        assert!(
            matches!(&taken, JobUserError::UidTaken { uid: 65534, name, .. } if name.contains("\"nobody\"")),
            "{taken}"
        );
        assert_eq!(
            JobUser::resolve(&"nobody".parse().unwrap())
                .unwrap()
                .ids()
                .uids,
            None,
            "without --job-uids jobs keep the user's own id"
        );
    }

    #[test]
    fn subordinate_ids_of_a_user_are_not_job_uids() {
        let subuid = "# comment\nalice:100000:65536\nbob:300000:10\nbad line\n";
        let range = |text: &str| text.parse::<JobUidRange>().unwrap();
        assert_eq!(
            subordinate_overlap(subuid, range("165530-170000")),
            Some(("alice".into(), 165530))
        );
        assert_eq!(
            subordinate_overlap(subuid, range("299990-300000")),
            Some(("bob".into(), 300000))
        );
        assert_eq!(subordinate_overlap(subuid, range("165536-200000")), None);
        assert_eq!(subordinate_overlap(subuid, range("300010-300020")), None);
    }

    #[test]
    fn a_user_alone_gets_its_own_group_home_and_memberships() {
        let user = JobUser::resolve(&"root".parse().unwrap()).unwrap();
        assert_eq!((user.uid.as_raw(), user.gid.as_raw()), (0, 0));
        assert_eq!(user.name, "root");
        assert_eq!(user.home, PathBuf::from("/root"));
        assert!(user.groups.contains(&Gid::from_raw(0)), "{user:?}");
    }

    #[test]
    fn a_group_given_replaces_the_users_primary_group() {
        let nobody = User::from_name("nobody").unwrap().expect("a nobody user");
        let user = JobUser::resolve(&"nobody:root".parse().unwrap()).unwrap();
        assert_eq!(user.uid, nobody.uid);
        assert_eq!(user.gid.as_raw(), 0);
        assert!(user.groups.contains(&Gid::from_raw(0)), "{user:?}");
        assert!(!user.groups.contains(&nobody.gid), "{user:?}");
    }

    #[test]
    fn numeric_ids_name_users_and_groups() {
        let user = JobUser::resolve(&"0:0".parse().unwrap()).unwrap();
        assert_eq!(user.name, "root");
        assert_eq!(user.gid.as_raw(), 0);
    }

    #[test]
    fn the_identity_is_the_users() {
        let user = JobUser::resolve(&"root".parse().unwrap()).unwrap();
        let env: Vec<(&str, &str)> = user
            .identity_env()
            .iter()
            .map(|(name, value)| (*name, value.to_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [("HOME", "/root"), ("USER", "root"), ("LOGNAME", "root")]
        );
    }

    #[test]
    fn unknown_users_and_groups_are_named() {
        let error = JobUser::resolve(&"no-such-user-x7".parse().unwrap()).unwrap_err();
        assert!(
            matches!(&error, JobUserError::UnknownUser(name) if name == "no-such-user-x7"),
            "{error}"
        );
        assert!(matches!(
            JobUser::resolve(&"4000000000".parse().unwrap()).unwrap_err(),
            JobUserError::UnknownUser(_)
        ));
        let error = JobUser::resolve(&"root:no-such-group-x7".parse().unwrap()).unwrap_err();
        assert!(
            matches!(&error, JobUserError::UnknownGroup(name) if name == "no-such-group-x7"),
            "{error}"
        );
    }

    #[test]
    fn capabilities_are_read_from_the_status_text() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c0\n";
        assert_eq!(effective_capabilities(status), Some(0xc0));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }
}
