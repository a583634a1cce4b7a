//! The pods a worker with the same id left when it died, found again at start:
//! each is followed anew, its current state its first observation, so the job
//! task carries its story on (or finishes it, for a pod that ended meanwhile).

use super::K8sBackend;
use super::watch::job_of;
use crate::backend::Recovered;
use crate::backend::container::followers::Following;
use k8s_openapi::api::core::v1::Pod;

impl K8sBackend {
    /// Follows `pod` (named `name`) of `job_id`, found rather than launched:
    /// its output goes to the log of the day it was created; its Secret, if
    /// it takes variables from one of its own, is deleted when the job ends.
    pub(super) fn follow_found(&self, job_id: &str, name: &str, pod: &Pod) -> Following {
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|at| at.0.as_second());
        let log = crate::job_logs::of_job_created(&self.settings.log_dir, created, job_id);
        self.note_secret_of(job_id, pod);
        self.watch.follow(job_id, name, log)
    }
}

/// Follows every pod of `found` that names its job.
pub fn recover(backend: &K8sBackend, found: Vec<Pod>) -> Vec<Recovered> {
    let mut recovered = Vec::new();
    for pod in found {
        let (Some(job_id), Some(name), Some(uid)) = (
            job_of(&pod).map(str::to_owned),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            continue;
        };
        let following = backend.follow_found(&job_id, &name, &pod);
        backend.watch.observe(&pod);
        recovered.push(Recovered {
            launched: backend.launched(&job_id, &name, uid, None, following),
            job_id,
        });
    }
    recovered
}
