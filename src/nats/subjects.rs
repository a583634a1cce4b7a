//! Every NATS subject, stream, consumer and bucket name the project uses, derived
//! from the configured subject prefix and pool in one place.
//!
//! Under the default prefix the streams and the bucket have the protocol's names
//! (`FLARE_JOBS`, `FLARE_JOB_EVENTS`, `flare_jobs`); under any other prefix the
//! names carry the prefix too, so that several prefixes can share one account.

/// The protocol's subject prefix, under which the protocol's names apply.
pub const DEFAULT_PREFIX: &str = "flare.jobs";
/// JetStream stream that captures launch requests (work-queue retention).
const JOBS_STREAM: &str = "FLARE_JOBS";
/// JetStream stream that captures job events (limits retention).
const EVENTS_STREAM: &str = "FLARE_JOB_EVENTS";
/// KV bucket holding one record per job.
const JOBS_BUCKET: &str = "flare_jobs";
const WORKERS_BUCKET: &str = "flare_workers";
const OWNERS_BUCKET: &str = "flare_job_owners";
/// Queue group every worker joins for terminate and status requests, so exactly
/// one worker answers each.
pub const CONTROL_QUEUE_GROUP: &str = "flare-launcher";

/// Subject names under one prefix (`flare.jobs` unless configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A JetStream name: `base` under the default prefix, else `base` plus the
    /// prefix with every character other than `A-Z a-z 0-9 _ -` written as `_`.
    fn jetstream_name(&self, base: &str) -> String {
        if self.prefix == DEFAULT_PREFIX {
            return base.to_owned();
        }
        let token: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if base.starts_with(|c: char| c.is_ascii_uppercase()) {
            format!("{base}_{}", token.to_ascii_uppercase())
        } else {
            format!("{base}_{token}")
        }
    }

    /// The stream that captures launch requests.
    pub fn jobs_stream(&self) -> String {
        self.jetstream_name(JOBS_STREAM)
    }

    /// The stream that captures job events.
    pub fn events_stream(&self) -> String {
        self.jetstream_name(EVENTS_STREAM)
    }

    /// The KV bucket of job records.
    pub fn jobs_bucket(&self) -> String {
        self.jetstream_name(JOBS_BUCKET)
    }

    /// The KV bucket of the workers' leases, one key per live worker.
    pub fn workers_bucket(&self) -> String {
        self.jetstream_name(WORKERS_BUCKET)
    }

    /// The KV bucket indexing the unfinished jobs by pool and owner.
    pub fn owners_bucket(&self) -> String {
        self.jetstream_name(OWNERS_BUCKET)
    }

    /// `P.launch.POOL`: where the engine publishes launch requests for a pool.
    pub fn launch(&self, pool: &str) -> String {
        format!("{}.launch.{pool}", self.prefix)
    }

    /// `P.terminate.JOB_ID`.
    pub fn terminate(&self, job_id: &str) -> String {
        format!("{}.terminate.{job_id}", self.prefix)
    }

    /// `P.status.JOB_ID`.
    pub fn status(&self, job_id: &str) -> String {
        format!("{}.status.{job_id}", self.prefix)
    }

    /// `P.events.JOB_ID`.
    pub fn events(&self, job_id: &str) -> String {
        format!("{}.events.{job_id}", self.prefix)
    }

    /// `P.invalid`: reports of launch payloads without a usable `job_id`.
    pub fn invalid(&self) -> String {
        format!("{}.invalid", self.prefix)
    }

    /// `P.worker.WORKER.terminate.JOB_ID`: a terminate forwarded to the job's
    /// owner by whichever worker received it (an addition to the protocol).
    pub fn worker_terminate(&self, worker: &str, job_id: &str) -> String {
        format!("{}.worker.{worker}.terminate.{job_id}", self.prefix)
    }

    /// `P.worker.WORKER.resources`: the worker's resources, on request (an
    /// addition to the protocol).
    pub fn worker_resources(&self, worker: &str) -> String {
        format!("{}.worker.{worker}.resources", self.prefix)
    }

    /// `P.worker.WORKER.logs`: the output of the jobs `worker` owns, a chunk per
    /// request (an addition to the protocol).
    pub fn worker_logs(&self, worker: &str) -> String {
        format!("{}.worker.{worker}.logs", self.prefix)
    }

    /// `P.resources.POOL`: the resources of every worker of `pool`, each answering
    /// for itself (an addition to the protocol).
    pub fn pool_resources(&self, pool: &str) -> String {
        format!("{}.resources.{pool}", self.prefix)
    }

    /// Wildcard matching every subject of `kind` (`launch`, `terminate`, `status`,
    /// `events`), whatever the job id or pool.
    pub fn all(&self, kind: &str) -> String {
        format!("{}.{kind}.>", self.prefix)
    }

    /// Wildcard for the terminates forwarded to `worker`.
    pub fn worker_terminate_all(&self, worker: &str) -> String {
        format!("{}.worker.{worker}.terminate.>", self.prefix)
    }

    /// The job id at the end of a subject built by [`Subjects::terminate`],
    /// [`Subjects::status`], [`Subjects::events`] or [`Subjects::worker_terminate`]:
    /// everything after `head` (job ids may contain dots).
    pub fn job_id_after<'a>(subject: &'a str, head: &str) -> Option<&'a str> {
        subject
            .strip_prefix(head)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|id| !id.is_empty())
    }

    /// The durable consumer a pool's workers share.
    pub fn consumer(pool: &str) -> String {
        format!("launch-{pool}")
    }
}

/// A pool or worker name that cannot be a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadToken {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What the name names (`pool`).
        what: &'static str,
    },
    /// The name holds a character a token cannot.
    #[error("{what} {value:?} may contain only A-Z a-z 0-9 _ -, found {found:?}")]
    Character {
        /// What the name names (`pool`).
        what: &'static str,
        /// The name.
        value: String,
        /// The first character not allowed.
        found: char,
    },
}

/// Checks a pool or worker name: it becomes one subject token and part of a
/// consumer name, so only `A-Z a-z 0-9 _ -` are allowed.
///
/// # Errors
/// A [`BadToken`] naming the offending character.
pub fn check_token(what: &'static str, value: &str) -> Result<(), BadToken> {
    if value.is_empty() {
        return Err(BadToken::Empty { what });
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        Some(found) => Err(BadToken::Character {
            what,
            value: value.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_protocol() {
        let s = Subjects::new("flare.jobs");
        assert_eq!(s.launch("default"), "flare.jobs.launch.default");
        assert_eq!(s.terminate("j1"), "flare.jobs.terminate.j1");
        assert_eq!(s.status("j1"), "flare.jobs.status.j1");
        assert_eq!(s.events("j1"), "flare.jobs.events.j1");
        assert_eq!(s.invalid(), "flare.jobs.invalid");
        assert_eq!(s.worker_logs("w1"), "flare.jobs.worker.w1.logs");
        assert_eq!(s.all("events"), "flare.jobs.events.>");
    }

    #[test]
    fn jetstream_names_are_the_protocols_under_the_default_prefix_only() {
        let default = Subjects::new(DEFAULT_PREFIX);
        assert_eq!(default.jobs_stream(), "FLARE_JOBS");
        assert_eq!(default.events_stream(), "FLARE_JOB_EVENTS");
        assert_eq!(default.jobs_bucket(), "flare_jobs");
        let other = Subjects::new("staging.fl-jobs");
        assert_eq!(other.jobs_stream(), "FLARE_JOBS_STAGING_FL-JOBS");
        assert_eq!(other.events_stream(), "FLARE_JOB_EVENTS_STAGING_FL-JOBS");
        assert_eq!(other.jobs_bucket(), "flare_jobs_staging_fl-jobs");
    }

    #[test]
    fn job_ids_with_dots_survive_the_subject() {
        let s = Subjects::new("p.q");
        let subject = s.status("a.b.c");
        assert_eq!(
            Subjects::job_id_after(&subject, "p.q.status"),
            Some("a.b.c")
        );
        assert_eq!(Subjects::job_id_after("p.q.status", "p.q.status"), None);
        assert_eq!(Subjects::job_id_after("p.q.statusx.a", "p.q.status"), None);
    }

    #[test]
    fn tokens() {
        assert!(check_token("pool", "gpu-pool_1").is_ok());
        assert!(check_token("pool", "a.b").is_err());
        assert!(check_token("pool", "").is_err());
    }
}
