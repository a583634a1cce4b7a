//! What every backend does the same: each behaviour is written once, in
//! [`behaviours`], as a test over a [`Backend`] fixture, and [`conformance!`]
//! makes one test of each behaviour per backend
//! (`conformance::docker::exit_3_and_101_fail`, ...). A new backend writes its
//! fixture and adds one line at the end of this file.
//!
//! Where a backend genuinely differs, its fixture says so: only Docker stops a
//! job by signalling its main process alone (the others signal the whole process
//! group, so the shell may report its child's end too), and only the backends
//! whose workloads can be made by hand ([`AdoptsWorkloads`]: a container, a pod)
//! show that a launch adopts its job's workload; a process job's workload is the
//! child of a supervisor, which a launch never meets made by anyone else.

mod behaviours;
mod docker_backend;
mod k8s_backend;
mod process_backend;
mod shared_files;

use crate::common::system::System;
use flare_launcher::protocol::{BackendKind, JobRecord, LaunchRequest};

/// A system whose worker runs jobs on one backend, and what a behaviour needs
/// to know of that backend.
pub trait Backend: Sized {
    /// The backend the jobs run on.
    const KIND: BackendKind;
    /// Whether stopping a job signals only its main process (the container's
    /// first process), rather than its whole process group.
    const SIGNALS_ONLY_THE_MAIN_PROCESS: bool;

    /// A system whose worker, running in the test, has only this backend.
    async fn start() -> Self;

    /// A system without a worker, for one run as a process of its own by
    /// [`Backend::spawn_worker`] (to kill it and start it again).
    async fn without_worker() -> Self;

    /// The system: its nats-server, client and (after [`Backend::start`]) worker.
    fn system(&self) -> &System;

    /// The id of this backend's worker, in the test or as a process.
    fn worker_id(&self) -> &str;

    /// Starts a worker with this backend as a process of its own, with
    /// [`Backend::worker_id`] and the same data directory every time; it is
    /// killed when dropped.
    fn spawn_worker(&self) -> tokio::process::Child;

    /// A request running `sh -c SCRIPT` on this backend.
    fn request(&self, job_id: &str, script: &str) -> LaunchRequest;

    /// Launches `job_id` running `before; echo ready; ...; after`, and returns
    /// once it runs and has printed `ready` (so `before` is done, such as a trap
    /// set).
    async fn launch_until_ready(&self, job_id: &str, before: &str, after: &str);

    /// A shell condition true once [`Backend::give_go`] was called for `job_id`.
    fn gone_ahead(&self, job_id: &str) -> String;

    /// Lets `job_id` go ahead (see [`Backend::gone_ahead`]), then waits until
    /// its workload, which exits 3 then, has ended, while no worker watches.
    async fn give_go_and_wait_for_its_end(&self, job_id: &str);

    /// Asserts that the record of the ended job `job_id` names its workload.
    fn assert_names_its_workload(&self, job_id: &str, record: &JobRecord);

    /// Waits until the workload of the ended job `job_id` is let go of.
    async fn wait_until_released(&self, job_id: &str);

    /// Asserts what serving one job cost the backend's API, where it counts
    /// (kube-sim's request counter); the other backends' costs are not counted
    /// here (the Docker engine's have a test of their own).
    fn assert_cost_of_one_job(&self) {}
}

/// A backend whose workloads can be made by hand, as a worker that died between
/// making a job's workload and recording it leaves them.
pub trait AdoptsWorkloads: Backend {
    /// Makes the workload the worker would make for `job_id`, running `script`.
    async fn make_workload_by_hand(&self, job_id: &str, script: &str);
}

/// One test per behaviour for a backend: `conformance!(NAME: FIXTURE, [ATTRIBUTES])`
/// makes the module `NAME` with a test of every behaviour on `FIXTURE`, each
/// carrying `ATTRIBUTES` (such as an `ignore` when the machine lacks the
/// backend); behaviours named after them are added for that backend alone.
macro_rules! conformance {
    ($name:ident: $fixture:ty, $attributes:tt $(, $extra:ident)*) => {
        mod $name {
            conformance!(@tests $fixture, $attributes, [
                exit_0_succeeds_with_its_output,
                exit_3_and_101_fail,
                terminate_ends_the_job_through_its_trap,
                a_worker_killed_and_restarted_finishes_its_jobs_stories,
                $($extra,)*
            ]);
        }
    };
    (@tests $fixture:ty, $attributes:tt, [$($behaviour:ident,)*]) => {
        $(conformance!(@test $fixture, $attributes, $behaviour);)*
    };
    (@test $fixture:ty, [$(#[$attribute:meta])*], $behaviour:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attribute])*
        async fn $behaviour() {
            super::behaviours::$behaviour::<$fixture>().await;
        }
    };
}

conformance!(process: super::process_backend::Processes, []);
conformance!(
    docker: super::docker_backend::Containers,
    [#[cfg_attr(no_docker, ignore = "no Docker engine answers")]],
    a_launch_that_meets_its_jobs_workload_adopts_it
);
conformance!(
    k8s: super::k8s_backend::Pods,
    [],
    a_launch_that_meets_its_jobs_workload_adopts_it
);
