//! The Docker backend as a conformance fixture: jobs are containers of the test
//! image on the machine's engine, which tests share (so worker and job ids are
//! unique); a container has a file system of its own.

use super::{AdoptsWorkloads, Backend};
use crate::common::docker::{
    RestartableWorker, containers_of, create_labelled_container, docker_cli, docker_system_with,
    in_container, wait_for_output, wait_until_removed,
};
use crate::common::system::System;
use flare_launcher::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};

/// A system whose worker runs Docker jobs.
pub enum Containers {
    /// The worker runs in the test.
    WorkerInTest(System),
    /// The worker is started as a process of its own, and again.
    WorkerAsProcess(RestartableWorker),
}

/// The container of `job_id`.
fn container(job_id: &str) -> String {
    format!("flare-{job_id}")
}

impl Backend for Containers {
    const KIND: BackendKind = BackendKind::Docker;
    const SIGNALS_ONLY_THE_MAIN_PROCESS: bool = true;

    async fn start() -> Self {
        Containers::WorkerInTest(docker_system_with(|_| {}).await)
    }

    async fn without_worker() -> Self {
        Containers::WorkerAsProcess(RestartableWorker::new().await)
    }

    fn system(&self) -> &System {
        match self {
            Containers::WorkerInTest(system) => system,
            Containers::WorkerAsProcess(restartable) => &restartable.system,
        }
    }

    fn worker_id(&self) -> &str {
        match self {
            Containers::WorkerInTest(system) => &system.config.worker_id,
            Containers::WorkerAsProcess(restartable) => &restartable.worker_id,
        }
    }

    fn spawn_worker(&self) -> tokio::process::Child {
        match self {
            Containers::WorkerInTest(_) => panic!("the worker runs in the test"),
            Containers::WorkerAsProcess(restartable) => restartable.spawn(),
        }
    }

    fn request(&self, job_id: &str, script: &str) -> LaunchRequest {
        in_container(job_id, script)
    }

    async fn launch_until_ready(&self, job_id: &str, before: &str, after: &str) {
        let script = format!("{before}; echo ready; {after}");
        self.system()
            .launch_until_running(&in_container(job_id, &script))
            .await;
        wait_for_output(job_id, "ready").await;
    }

    fn gone_ahead(&self, _job_id: &str) -> String {
        "[ -e /go ]".into()
    }

    async fn give_go_and_wait_for_its_end(&self, job_id: &str) {
        docker_cli(&["exec", &container(job_id), "touch", "/go"]);
        assert_eq!(docker_cli(&["wait", &container(job_id)]).trim(), "3");
    }

    fn assert_names_its_workload(&self, job_id: &str, record: &JobRecord) {
        let Some(BackendRef::Docker { name, .. }) = &record.backend_ref else {
            panic!("a docker backend_ref: {record:?}");
        };
        assert!(name.ends_with(job_id), "{name}");
    }

    async fn wait_until_released(&self, job_id: &str) {
        wait_until_removed(&[job_id]).await;
    }
}

impl AdoptsWorkloads for Containers {
    async fn make_workload_by_hand(&self, job_id: &str, script: &str) {
        create_labelled_container(
            &container(job_id),
            job_id,
            Some(self.worker_id()),
            script,
            false,
        );
        assert_eq!(containers_of(job_id).len(), 1);
    }
}
