//! Handshakes with a job through the test's file system, for the backends whose
//! jobs share it: processes, and kube-sim's pods (its kubelet runs them as
//! local processes).

use crate::common::k8s::wait_for_file;
use crate::common::system::System;
use flare_launcher::protocol::LaunchRequest;
use std::path::PathBuf;

/// The file whose existence lets `job_id` go ahead.
fn go_file(system: &System, job_id: &str) -> PathBuf {
    system.path(&format!("{job_id}-go"))
}

/// A shell condition true once [`give_go`] was called for `job_id`.
pub fn gone_ahead(system: &System, job_id: &str) -> String {
    format!("[ -e {} ]", go_file(system, job_id).display())
}

/// Lets `job_id` go ahead.
pub fn give_go(system: &System, job_id: &str) {
    std::fs::write(go_file(system, job_id), "").expect("the go file");
}

/// Launches `job_id` with `request(JOB_ID, SCRIPT)` running `before; echo
/// ready; after`, and returns once it runs and has printed `ready`.
pub async fn launch_until_ready(
    system: &System,
    request: impl Fn(&str, &str) -> LaunchRequest,
    job_id: &str,
    before: &str,
    after: &str,
) {
    let ready = system.path(&format!("{job_id}-ready"));
    let script = format!("{before}; echo ready; touch {}; {after}", ready.display());
    system.launch_until_running(&request(job_id, &script)).await;
    wait_for_file(&ready).await;
}
