//! A job's secret environment (`secret_env`) as a Secret of its own, so that
//! no value is in the pod: type `Opaque`, named and labelled as the job's pod,
//! one key per variable, which the job container takes through
//! `env[].valueFrom.secretKeyRef`. It is made before the pod (a pod whose
//! Secret is missing fails to start with `CreateContainerConfigError`), then
//! owned by the pod (one patch of its `ownerReferences`) so that the
//! cluster's garbage collector deletes it with the pod. A Secret of that name
//! met on create may be the job's own, left by a launch that did not finish:
//! its data are replaced (one JSON patch). Every patch first tests the
//! Secret's labels (this program's, this job's), so a Secret of that name
//! someone else made (the worker's own credentials, say, which a request
//! could name through its site and job id) is never changed or owned: the
//! launch fails. It is also deleted by name once the job's end is recorded,
//! when its launch fails after it was made or is given up, and when the
//! orphan sweep removes its pod; when an adoption finds no pod, it is
//! deleted if a patch that changes nothing finds it the job's: a Secret
//! whose owner was never set is not left behind. No request reads a Secret;
//! the worker needs `create`, `patch` and `delete` on secrets, nothing more.

use super::manifest::CONTAINER;
use super::{K8sBackend, api};
use crate::backend::container::workload::{JOB_ID, MANAGED_BY, MANAGED_BY_VALUE};
use crate::backend::{Failure, LaunchError};
use crate::protocol::LaunchRequest;
use crate::report::error_chain;
use crate::retry::retry_transient;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// The jobs whose pods take variables from a Secret of their own: job id to
/// the Secret's name.
#[derive(Debug, Default)]
pub struct JobSecrets(Mutex<HashMap<String, String>>);

impl JobSecrets {
    /// Notes that `job_id`'s pod takes variables from Secret `name`.
    pub fn note(&self, job_id: &str, name: &str) {
        super::lock(&self.0).insert(job_id.to_owned(), name.to_owned());
    }

    /// The Secret of `job_id`, no longer noted.
    pub fn take(&self, job_id: &str) -> Option<String> {
        super::lock(&self.0).remove(job_id)
    }
}

/// The job container's variables taken from Secret `name` (the pod's).
pub fn env(request: &LaunchRequest, name: &str) -> impl Iterator<Item = Value> {
    request.secret_env.keys().map(move |variable| {
        json!({"name": variable, "valueFrom": {"secretKeyRef": {"name": name, "key": variable}}})
    })
}

/// The Secret of `request` for `pod` (named, labelled and placed as it), if
/// the request has secret variables.
pub fn manifest(request: &LaunchRequest, pod: &Pod) -> Option<Secret> {
    if request.secret_env.is_empty() {
        return None;
    }
    let data = request
        .secret_env
        .iter()
        .map(|(name, value)| (name.clone(), ByteString(value.as_bytes().to_vec())))
        .collect();
    Some(Secret {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The name of the Secret of `pod`'s own that its job container takes
/// variables from, if it takes any.
pub fn of_pod(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref()?;
    let spec = pod.spec.as_ref()?;
    let container = spec.containers.iter().find(|c| c.name == CONTAINER)?;
    container
        .env
        .iter()
        .flatten()
        .filter_map(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
        .any(|reference| reference.name == name)
        .then(|| name.to_owned())
}

/// Creates `secret`; one of its name that exists already gets its data if it
/// is this job's (a launch of the job that did not finish made it), else the
/// API refuses the patch (422) and nothing of it changes. Transient failures
/// are retried (the caller bounds the time).
///
/// # Errors
/// The API's refusal.
async fn put(api: &Api<Secret>, secret: &Secret) -> Result<(), kube::Error> {
    let params = PostParams::default();
    let created = retry_transient(
        "creating a secret",
        || api.create(&params, secret),
        api::is_transient,
    )
    .await;
    match created {
        Err(e) if api::status(&e) == Some(409) => {
            let data = json!({"op": "add", "path": "/data", "value": secret.data});
            patch_if_ours(api, &Mine::of(secret), Some(data))
                .await
                .map(drop)
        }
        other => other.map(drop),
    }
}

/// Makes `pod` the owner of `secret` (this job's), in place of any other.
///
/// # Errors
/// The API's refusal.
async fn own(api: &Api<Secret>, secret: &Secret, pod: &Pod) -> Result<(), kube::Error> {
    let owner = json!({"op": "add", "path": "/metadata/ownerReferences", "value": [{
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
    }]});
    patch_if_ours(api, &Mine::of(secret), Some(owner))
        .await
        .map(drop)
}

/// A Secret of a job, by its name and the job's label value.
struct Mine {
    name: String,
    job: String,
}

impl Mine {
    fn of(secret: &Secret) -> Mine {
        let labels = secret.metadata.labels.as_ref();
        Mine {
            name: secret.metadata.name.clone().unwrap_or_default(),
            job: labels
                .and_then(|labels| labels.get(JOB_ID))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Applies `change` (one JSON patch operation, or none) to Secret `mine`
/// only if it is that job's: the patch first tests the labels that say so
/// (this program's, the job's), so that a Secret of the same name someone
/// else made (the worker's own credentials, say) is never changed. Returns
/// the Secret as patched.
///
/// # Errors
/// The API's refusal (422 when the Secret is not the job's).
async fn patch_if_ours(
    api: &Api<Secret>,
    mine: &Mine,
    change: Option<Value>,
) -> Result<Secret, kube::Error> {
    let test = |key: &str, value: &str| {
        let path = format!(
            "/metadata/labels/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        json!({"op": "test", "path": path, "value": value})
    };
    let operations: Vec<Value> = [test(MANAGED_BY, MANAGED_BY_VALUE), test(JOB_ID, &mine.job)]
        .into_iter()
        .chain(change)
        .collect();
    let patch: Patch<Value> = Patch::Json(
        serde_json::from_value(Value::Array(operations)).map_err(kube::Error::SerdeError)?,
    );
    let params = PatchParams::default();
    retry_transient(
        "patching a secret",
        || api.patch(&mine.name, &params, &patch),
        api::is_transient,
    )
    .await
}

/// Deletes Secret `mine` if it is that job's (one patch that changes
/// nothing tells, and gives its uid for the delete's precondition).
async fn delete_if_ours(api: Api<Secret>, mine: Mine) {
    match patch_if_ours(&api, &mine, None).await {
        Ok(found) => delete(api, mine.name, found.metadata.uid).await,
        Err(e) if matches!(api::status(&e), Some(404 | 422)) => {}
        Err(e) => {
            tracing::warn!(secret = %mine.name, error = %error_chain(&e), "cannot tell whether a secret is a job's; it is left");
        }
    }
}

/// Deletes Secret `name` (if it still has `uid`, when given); one already
/// gone or replaced counts as deleted, a failure is logged.
async fn delete(api: Api<Secret>, name: String, uid: Option<String>) {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let deleted = tokio::time::timeout(
        api::CLEANUP_PATIENCE,
        retry_transient(
            "deleting a secret",
            || api.delete(&name, &params),
            api::is_transient,
        ),
    )
    .await;
    match deleted {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if matches!(api::status(&e), Some(404 | 409)) => {}
        Ok(Err(e)) => {
            tracing::warn!(secret = %name, error = %error_chain(&e), "cannot delete a job's secret");
        }
        Err(_) => tracing::warn!(
            secret = %name,
            "gave up deleting a job's secret after {:?}",
            api::CLEANUP_PATIENCE
        ),
    }
}

impl K8sBackend {
    /// Makes the Secret of `job_id`, before its pod.
    ///
    /// # Errors
    /// [`LaunchError::Spawn`] when the cluster refuses it.
    pub(super) async fn put_secret(
        &self,
        job_id: &str,
        secret: &Secret,
    ) -> Result<(), LaunchError> {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        put(&self.secrets, secret).await.map_err(|e| {
            let what = if api::status(&e) == Some(422) {
                format!("secret {name} exists and is not this job's")
            } else {
                format!("the cluster refused to create secret {name}")
            };
            LaunchError::Spawn(Failure::because(what, api::ApiError(e)))
        })?;
        self.job_secrets.note(job_id, name);
        Ok(())
    }

    /// Makes `pod` the owner of its job's Secret, if it has one. A refusal is
    /// logged: the Secret is deleted by name when the job ends.
    pub(super) async fn own_secret(&self, secret: &Secret, pod: &Pod) {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = own(&self.secrets, secret, pod).await {
            tracing::warn!(secret = %name, error = %error_chain(&e), "cannot make the pod the owner of its secret; it is deleted when the job ends");
        }
    }

    /// Notes the Secret `pod` (of `job_id`, found rather than launched) takes
    /// variables from, if any.
    pub(super) fn note_secret_of(&self, job_id: &str, pod: &Pod) {
        if let Some(name) = of_pod(pod) {
            self.job_secrets.note(job_id, &name);
        }
    }

    /// The deletion of `job_id`'s Secret, if it has one.
    pub(super) fn secret_removal(&self, job_id: &str) -> Option<BoxFuture<'static, ()>> {
        let name = self.job_secrets.take(job_id)?;
        Some(self.removal_of_secret(name))
    }

    /// The deletion of Secret `name`.
    pub(super) fn removal_of_secret(&self, name: String) -> BoxFuture<'static, ()> {
        delete(self.secrets.clone(), name, None).boxed()
    }

    /// Deletes the Secret a launch of `job_id` may have made as `name`
    /// before it made no pod, if there is one and it is that job's.
    pub(super) async fn remove_secret_left(&self, job_id: &str, name: String) {
        let job = super::name::label_value(job_id);
        delete_if_ours(self.secrets.clone(), Mine { name, job }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, PodSpec, SecretKeySelector};

    fn request() -> LaunchRequest {
        let mut request = LaunchRequest::new("j1", vec!["true".into()]);
        request.secret_env.insert("TOKEN".into(), "s3cret".into());
        request.secret_env.insert("KEY".into(), "k3y".into());
        request
    }

    fn pod_taking(secret: &str) -> Pod {
        let var = EnvVar {
            name: "TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: "TOKEN".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("flare-j1".into()),
                namespace: Some("flare".into()),
                labels: Some([("a".to_owned(), "b".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: CONTAINER.into(),
                    env: Some(vec![var]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn the_secret_is_named_labelled_and_placed_as_the_pod_and_holds_each_value() {
        let pod = pod_taking("flare-j1");
        let secret = manifest(&request(), &pod).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("flare-j1"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("flare"));
        assert_eq!(secret.metadata.labels, pod.metadata.labels);
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.unwrap();
        assert_eq!(data["TOKEN"].0, b"s3cret");
        assert_eq!(data["KEY"].0, b"k3y");
        assert!(manifest(&LaunchRequest::new("j2", vec!["true".into()]), &pod).is_none());
    }

    #[test]
    fn the_env_names_the_key_of_each_variable_and_no_value() {
        let env: Vec<Value> = env(&request(), "flare-j1").collect();
        assert_eq!(
            env,
            [
                json!({"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "flare-j1", "key": "KEY"}}}),
                json!({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "flare-j1", "key": "TOKEN"}}}),
            ]
        );
    }

    #[test]
    fn a_pod_has_a_secret_of_its_own_only_when_its_container_takes_from_it() {
        assert_eq!(of_pod(&pod_taking("flare-j1")).as_deref(), Some("flare-j1"));
        assert_eq!(of_pod(&pod_taking("creds")), None);
        assert_eq!(of_pod(&Pod::default()), None);
    }
}
