//! A pod taken over from another worker (or found again by its job's name): read
//! by the record's `backend_ref` (a pod of that name with another uid is not
//! it) or, without one, by the name its launch gives it, then moved to this
//! worker by one patch of its worker label, so that this worker's watch shows
//! it (and its former worker's watch sees it leave, which that worker takes for
//! a move, not an end). It is followed as a launched pod is, its state now its
//! first observation. An adoption costs two requests (the read and the patch;
//! none for a pod of this worker already), and a third, the read of its
//! output, for a pod that ended already. A job whose record names no pod and
//! whose pod is not there costs one patch that changes nothing, to find the
//! Secret its launch may have made ([`super::secret`]), and its delete.

use super::watch::job_of;
use super::{K8sBackend, api, name};
use crate::backend::{Adopt, AdoptionScope, Launched, LookupError};
use crate::protocol::{BackendRef, JobRecord};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;

impl K8sBackend {
    /// `pod` as this worker's: itself when it carries this worker's label,
    /// else relabelled.
    ///
    /// # Errors
    /// The API's refusal of the patch.
    pub(super) async fn make_ours(&self, pod: Pod) -> Result<Pod, kube::Error> {
        if self.watch.is_ours(&pod) {
            return Ok(pod);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %name, "moving another worker's pod to this worker");
        api::relabel(&self.pods, &name, self.watch.worker_label()).await
    }
}

#[async_trait]
impl Adopt for K8sBackend {
    fn scope(&self) -> AdoptionScope {
        // Any worker's pod in this namespace: relabelled, it enters this
        // worker's watch.
        AdoptionScope::AnyWorker
    }

    async fn adopt(&self, record: &JobRecord) -> Result<Option<Launched>, LookupError> {
        let job_id = record.job_id.as_str();
        let (pod_name, uid) = match &record.backend_ref {
            Some(BackendRef::K8s {
                namespace,
                pod,
                uid,
            }) => {
                if *namespace != self.namespace {
                    return Ok(None);
                }
                (pod.clone(), Some(uid.as_str()))
            }
            _ => (name::pod_name(record.site.as_deref(), job_id), None),
        };
        let found = match api::get(&self.pods, &pod_name).await {
            Ok(found) => found,
            Err(e) if api::status(&e) == Some(404) => {
                if uid.is_none() {
                    // Its launch may have made the job's Secret and no pod.
                    self.remove_secret_left(job_id, pod_name).await;
                }
                return Ok(None);
            }
            Err(e) => return Err(LookupError(api::ApiError(e).into())),
        };
        let another_pod = uid.is_some_and(|uid| found.metadata.uid.as_deref() != Some(uid));
        if job_of(&found) != Some(job_id) || another_pod {
            return Ok(None);
        }
        let following = self.follow_found(job_id, &pod_name, &found);
        let pod = match self.make_ours(found).await {
            Ok(pod) => pod,
            Err(e) => {
                self.watch.forget(job_id);
                return Err(LookupError(api::ApiError(e).into()));
            }
        };
        self.watch.observe(&pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        Ok(Some(self.launched(job_id, &pod_name, uid, None, following)))
    }
}
