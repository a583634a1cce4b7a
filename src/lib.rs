//! flare-launcher runs NVIDIA FLARE jobs (local processes, Docker containers or
//! Kubernetes pods) on behalf of an FL engine that talks to it over NATS.
//!
//! The engine publishes launch requests on `P.launch.POOL` (a JetStream work
//! queue) and terminate and status requests on `P.terminate.JOB_ID` and
//! `P.status.JOB_ID`; workers take the requests, run the workloads, and publish
//! every state change and the final NVFlare return code on `P.events.JOB_ID`.
//!
//! Layout, each layer using only those below it:
//!
//! - [`cli`]: one small function per command of the `flare-launcher` binary.
//! - [`worker`]: intake (pull while capacity lasts, claim, ack), control
//!   (terminate, status), one task per job, recovery, shutdown; its `story`
//!   module is the one author of a job's record and events.
//! - [`client`]: what the CLI, the benchmark and tests use to talk to workers.
//! - [`backend`]: the launch/observe/stop seam, the capabilities a backend
//!   declares (recover, adopt, sweep), the half the container backends share,
//!   and the process, Docker and Kubernetes backends.
//! - [`job_logs`]: where job logs live (a directory per day).
//! - [`resources`]: resource policies (best-effort, or GPUs handed out one job
//!   at a time).
//! - [`store`]: job records in KV (claim by create, compare-and-set).
//! - [`supervisor`]: the process that supervises process jobs and outlives a
//!   worker that dies.
//! - [`telemetry`]: logs, for people or machines.
//! - [`observe`]: the worker's HTTP endpoint for probes (`/healthz`, `/readyz`).
//! - [`config`]: every option declared once (flag, environment, file key,
//!   default, help) and typed when the configuration is loaded.
//! - [`nats`]: connection options, subjects, streams and buckets.
//! - [`schema`], [`protocol`], [`state`]: the JSON Schemas, the wire contract,
//!   and the job state machine with NVFlare's return codes, from the
//!   `flare-launcher-protocol` crate.
//! - [`retry`]: the retry policy.
//! - [`locked`]: a mutex's lock that outlives a panic elsewhere.
//! - [`report`]: errors with their causes, on one line, for people and logs.

pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod job_logs;
pub mod locked;
pub mod nats;
pub mod observe;
pub mod pool;
pub mod report;
pub mod resources;
pub mod retry;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod worker;

// The wire contract lives in its own crate, which an engine written in Rust uses
// without the worker; its modules keep their paths here.
pub use flare_launcher_protocol as protocol;
pub use flare_launcher_protocol::{schema, state};
