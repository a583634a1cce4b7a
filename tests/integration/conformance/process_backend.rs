//! The process backend as a conformance fixture: jobs are local processes
//! under the worker's supervisor, sharing the test's file system.

use super::{Backend, shared_files};
use crate::common::docker::unique;
use crate::common::processes::{is_alive, supervisor_dir, wait_for_recorded_end};
use crate::common::system::{System, sh};
use flare_launcher::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};
use flare_launcher::supervisor::job_file::{JobEnd, JobFile};
use std::path::PathBuf;
use std::time::Duration;

/// A system whose worker runs process jobs.
pub struct Processes {
    system: System,
    worker_id: String,
    data_dir: PathBuf,
}

impl Backend for Processes {
    const KIND: BackendKind = BackendKind::Process;
    const SIGNALS_ONLY_THE_MAIN_PROCESS: bool = false;

    async fn start() -> Self {
        let system = System::start().await;
        let worker_id = system.config.worker_id.clone();
        let data_dir = system.config.data_dir.clone();
        Processes {
            system,
            worker_id,
            data_dir,
        }
    }

    async fn without_worker() -> Self {
        let system = System::without_worker(|_| {}).await;
        let data_dir = system.path("data");
        Processes {
            system,
            worker_id: unique("phoenix"),
            data_dir,
        }
    }

    fn system(&self) -> &System {
        &self.system
    }

    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn spawn_worker(&self) -> tokio::process::Child {
        self.system
            .spawn_worker_process(&self.worker_id, &self.data_dir, &[])
    }

    fn request(&self, job_id: &str, script: &str) -> LaunchRequest {
        sh(job_id, script)
    }

    async fn launch_until_ready(&self, job_id: &str, before: &str, after: &str) {
        shared_files::launch_until_ready(&self.system, sh, job_id, before, after).await;
    }

    fn gone_ahead(&self, job_id: &str) -> String {
        shared_files::gone_ahead(&self.system, job_id)
    }

    async fn give_go_and_wait_for_its_end(&self, job_id: &str) {
        shared_files::give_go(&self.system, job_id);
        let dir = supervisor_dir(&self.data_dir, &self.worker_id);
        let end = wait_for_recorded_end(&dir, job_id).await;
        assert!(
            matches!(end, JobEnd::Exited { stopped: false, .. }),
            "{end:?}"
        );
    }

    fn assert_names_its_workload(&self, job_id: &str, record: &JobRecord) {
        let Some(BackendRef::Process { pid }) = record.backend_ref else {
            panic!("{job_id}: a process backend_ref: {record:?}");
        };
        assert!(
            !is_alive(pid as i32),
            "{job_id}'s process {pid} outlived it"
        );
    }

    async fn wait_until_released(&self, job_id: &str) {
        // The supervisor lets go of the job's file once its end is recorded.
        let dir = supervisor_dir(&self.data_dir, &self.worker_id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while JobFile::read(&dir, job_id)
            .expect("the job's file reads")
            .is_some()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{job_id}'s job file was kept"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
