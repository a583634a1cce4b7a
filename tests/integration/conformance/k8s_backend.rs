//! The Kubernetes backend as a conformance fixture: jobs are pods on a kube-sim
//! of the test's own, the worker talking to it under the Role the project
//! ships; kube-sim's kubelet runs a pod's command as a local process, which
//! shares the test's file system.

use super::{AdoptsWorkloads, Backend, shared_files};
use crate::common::docker::unique;
use crate::common::k8s::{Cluster, PATIENCE, in_pod, k8s_worker, spawn_k8s_worker};
use crate::common::system::System;
use flare_launcher::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};
use std::time::Duration;

/// A system whose worker runs pods on a kube-sim.
pub struct Pods {
    cluster: Cluster,
    system: System,
    worker_id: String,
}

impl Backend for Pods {
    const KIND: BackendKind = BackendKind::K8s;
    const SIGNALS_ONLY_THE_MAIN_PROCESS: bool = false;

    async fn start() -> Self {
        let cluster = Cluster::start(|_| {}).await;
        let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
        let worker_id = system.config.worker_id.clone();
        Pods {
            cluster,
            system,
            worker_id,
        }
    }

    async fn without_worker() -> Self {
        Pods {
            cluster: Cluster::start(|_| {}).await,
            system: System::without_worker(|_| {}).await,
            worker_id: unique("phoenix"),
        }
    }

    fn system(&self) -> &System {
        &self.system
    }

    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn spawn_worker(&self) -> tokio::process::Child {
        spawn_k8s_worker(&self.system, &self.cluster, &self.worker_id)
    }

    fn request(&self, job_id: &str, script: &str) -> LaunchRequest {
        in_pod(job_id, script)
    }

    async fn launch_until_ready(&self, job_id: &str, before: &str, after: &str) {
        shared_files::launch_until_ready(&self.system, in_pod, job_id, before, after).await;
    }

    fn gone_ahead(&self, job_id: &str) -> String {
        shared_files::gone_ahead(&self.system, job_id)
    }

    async fn give_go_and_wait_for_its_end(&self, job_id: &str) {
        shared_files::give_go(&self.system, job_id);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let pods = self.cluster.pods_of(job_id).await;
            let phase = pods[0].status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Failed") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{phase:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_names_its_workload(&self, job_id: &str, record: &JobRecord) {
        let Some(BackendRef::K8s {
            namespace,
            pod,
            uid,
        }) = &record.backend_ref
        else {
            panic!("a k8s backend_ref: {record:?}");
        };
        assert_eq!(namespace, "default");
        assert_eq!(pod, &format!("flare-{job_id}"));
        assert!(!uid.is_empty());
    }

    async fn wait_until_released(&self, job_id: &str) {
        self.cluster.wait_until_deleted(job_id).await;
    }

    fn assert_cost_of_one_job(&self) {
        // Create, one log read, delete: nothing else per job beside the watch.
        assert_eq!(self.cluster.request_count("create", "pods"), 1);
        assert_eq!(self.cluster.request_count("get", "pods/log"), 1);
        assert_eq!(self.cluster.request_count("delete", "pods"), 1);
        assert_eq!(self.cluster.request_count("get", "pods"), 0);
    }
}

impl AdoptsWorkloads for Pods {
    async fn make_workload_by_hand(&self, job_id: &str, script: &str) {
        let request = in_pod(job_id, script);
        self.cluster
            .create_pod_by_hand(&self.system, &request, &self.worker_id)
            .await;
    }
}
