//! Supervised process jobs. Every process job runs under a job supervisor that
//! is a child subreaper for the job's whole tree, kills all of it when the job
//! ends or is stopped, and records how it ended where a restarted worker finds it.
//! The job supervisors are forked by one supervisor process per worker, which
//! outlives the worker: a worker that dies (SIGKILL, crash, out of memory) leaves
//! its jobs running, and when it comes back with the same id it re-attaches to
//! those that still run and learns how the others ended.
//!
//! - [`server`]: the supervisor process (`flare-launcher supervise`).
//! - `job_supervisor`: one job's supervisor, forked by it.
//! - the worker's side lives with the process backend.
//! - [`wire`]: what the two say to each other.
//! - [`job_file`]: the file per job that survives them both.
//! - `tree`: finding and killing a job's processes.
//! - `cgroup`: a cgroup per job, where the host lets the supervisor make one, and
//!   the job's `cpus` and `memory_mb` enforced in it.
//! - [`job_uids`]: a user id of its own for every job, from the operator's range.

mod cgroup;
pub mod job_file;
mod job_supervisor;
pub mod job_uids;
pub mod server;
mod tree;
pub mod wire;
