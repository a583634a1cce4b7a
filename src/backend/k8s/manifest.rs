//! What a job's pod is made of, built from the launch request and the worker's
//! settings as the JSON the API takes: `restartPolicy: Never`, the job's name,
//! labels and annotation, its argv (no shell, `$(...)` escaped so Kubernetes
//! expands nothing), environment (secret variables by reference to the job's
//! Secret, [`super::secret`]), working directory, resources (GPUs only when
//! asked for), one volume per mount, `activeDeadlineSeconds`, and the site's
//! namespace, service account, pull secrets, node selector, tolerations and
//! locked-down security context (non-root, the runtime's seccomp profile, no
//! privilege escalation, every capability dropped but those the site gives
//! back, optionally a read-only root file system with an emptyDir at /tmp), all
//! merged onto the site's pod template. Pure functions, so every rule is
//! checked without a cluster.

use super::name::{self, is_dns_subdomain, is_label_key, is_label_value, label_value};
use super::secret;
use crate::backend::container::allowed::{NameList, never_mountable};
use crate::backend::container::workload::{
    JOB_ID, MANAGED_BY, MANAGED_BY_VALUE, POOL, SITE, WORKER,
};
use crate::backend::{Failure, GpuAssignment, LaunchError};
use crate::config::K8sConfig;
use crate::config::values::JobLimits;
use crate::protocol::bounded::quoted;
use crate::protocol::{DEFAULT_GRACE_S, LaunchRequest, MountSource};
use serde_json::{Map, Value, json};

/// The label naming what the pod is.
pub const NAME: &str = "app.kubernetes.io/name";
/// Its value.
pub const NAME_VALUE: &str = "flare-launcher-job";
/// The annotation holding the exact job id (a label value cannot hold every one).
pub const JOB_ID_ANNOTATION: &str = "flare-launcher/job-id";
/// The name of the job's container.
pub const CONTAINER: &str = "job";
/// The GPU resource.
const GPU: &str = "nvidia.com/gpu";
/// Most labels taken from the request.
const MAX_REQUEST_LABELS: usize = 64;

/// Who a pod belongs to and where it goes.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    /// The worker's id.
    pub worker: &'a str,
    /// Its pool.
    pub pool: &'a str,
    /// The pods' namespace.
    pub namespace: &'a str,
}

/// The label selector of every pod of `worker`.
pub fn selector(worker: &str) -> String {
    format!(
        "{MANAGED_BY}={MANAGED_BY_VALUE},{WORKER}={}",
        label_value(worker)
    )
}

/// The labels of a job's pod: the request's own (checked), then this
/// program's, which the request cannot override.
///
/// # Errors
/// [`LaunchError::Unsupported`] naming a request label Kubernetes would refuse.
pub fn labels(
    request: &LaunchRequest,
    owner: &Owner<'_>,
) -> Result<Map<String, Value>, LaunchError> {
    if request.labels.len() > MAX_REQUEST_LABELS {
        return Err(invalid(format!(
            "at most {MAX_REQUEST_LABELS} labels are taken, the request has {}",
            request.labels.len()
        )));
    }
    let mut labels = Map::new();
    for (key, value) in &request.labels {
        if !is_label_key(key) {
            return Err(invalid(format!(
                "label key {} is not a Kubernetes label key (NAME or PREFIX/NAME: up to 63 letters, digits, '-', '_', '.', the prefix a DNS subdomain)",
                quoted(key)
            )));
        }
        if !is_label_value(value) {
            return Err(invalid(format!(
                "label {} has value {}, which is not a Kubernetes label value (up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)",
                quoted(key),
                quoted(value)
            )));
        }
        labels.insert(key.clone(), json!(value));
    }
    labels.insert(MANAGED_BY.into(), json!(MANAGED_BY_VALUE));
    labels.insert(NAME.into(), json!(NAME_VALUE));
    labels.insert(JOB_ID.into(), json!(label_value(&request.job_id)));
    labels.insert(POOL.into(), json!(label_value(owner.pool)));
    labels.insert(WORKER.into(), json!(label_value(owner.worker)));
    if let Some(site) = &request.site {
        labels.insert(SITE.into(), json!(label_value(site)));
    }
    Ok(labels)
}

/// The pod of a job, merged onto `template` (a pod, or `{}`).
///
/// # Errors
/// [`LaunchError::Unsupported`] for a request the pod cannot carry (a label
/// Kubernetes refuses, a host mount, a claim or secret name that is not a name).
pub fn pod(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    image: &str,
    owner: &Owner<'_>,
    config: &K8sConfig,
    template: &Value,
) -> Result<Value, LaunchError> {
    let pod_name = name::pod_name(request.site.as_deref(), &request.job_id);
    let (mut volumes, mut mounts) = volumes(request, config)?;
    if config.read_only_root
        && !mounts
            .iter()
            .any(|mount| mount["mountPath"] == WRITABLE_TMP)
    {
        volumes.push(json!({"name": WRITABLE_TMP_VOLUME, "emptyDir": empty_dir(config)}));
        mounts.push(json!({"name": WRITABLE_TMP_VOLUME, "mountPath": WRITABLE_TMP}));
    }
    let limits = config
        .default_limits
        .for_request(request.resources.as_ref());
    let mut container = json!({
        "name": CONTAINER,
        "image": image,
        "command": request.command.iter().map(|arg| escape(arg)).collect::<Vec<_>>(),
        "env": env(request, &pod_name),
        "resources": resources(&limits, gpus.count(request, 0)),
        "volumeMounts": mounts,
        "securityContext": container_security(config),
    });
    if let Some(workdir) = &request.workdir {
        container["workingDir"] = json!(workdir);
    }
    let mut security = json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    if let Some(user) = config.user {
        security["runAsUser"] = json!(user.0.uid);
        if let Some(gid) = user.0.gid {
            security["runAsGroup"] = json!(gid);
        }
    }
    let mut spec = json!({
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "securityContext": security,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": DEFAULT_GRACE_S,
    });
    // A backstop for a worker that is gone: the worker itself stops a job when
    // its `run_s` runs out (counted from `running`), the cluster at `start_s`
    // plus `run_s` from the pod's start.
    if let Some(run_s) = request.run_timeout_s() {
        spec["activeDeadlineSeconds"] = json!(request.start_timeout_s().saturating_add(run_s));
    }
    if let Some(account) = &config.service_account {
        spec["serviceAccountName"] = json!(account);
    }
    if !config.image_pull_secrets.is_empty() {
        spec["imagePullSecrets"] = config
            .image_pull_secrets
            .iter()
            .map(|name| json!({"name": name}))
            .collect();
    }
    if !config.node_selector.is_empty() {
        let mut selector = Map::new();
        for label in &config.node_selector {
            selector.insert(label.key.clone(), json!(label.value));
        }
        spec["nodeSelector"] = Value::Object(selector);
    }
    if !config.tolerations.is_empty() {
        let mut tolerations = Vec::new();
        for toleration in &config.tolerations {
            let mut entry = json!({"key": toleration.key});
            match &toleration.value {
                Some(value) => {
                    entry["operator"] = json!("Equal");
                    entry["value"] = json!(value);
                }
                None => entry["operator"] = json!("Exists"),
            }
            if let Some(effect) = &toleration.effect {
                entry["effect"] = json!(effect);
            }
            tolerations.push(entry);
        }
        spec["tolerations"] = Value::Array(tolerations);
    }
    let generated = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": owner.namespace,
            "labels": labels(request, owner)?,
            "annotations": {JOB_ID_ANNOTATION: request.job_id},
        },
        "spec": spec,
    });
    Ok(merged(template, generated))
}

/// The job container's environment: the request's `env`, then each
/// `secret_env` variable taken from the Secret named as the pod (no value).
fn env(request: &LaunchRequest, pod_name: &str) -> Vec<Value> {
    request
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": escape(value)}))
        .chain(secret::env(request, pod_name))
        .collect()
}

/// Where a container with a read-only root file system may write, and the
/// name of the emptyDir volume there (request mounts are named `mount-N`).
const WRITABLE_TMP: &str = "/tmp";
const WRITABLE_TMP_VOLUME: &str = "tmp";

/// The job container's security context: no privilege escalation (a setuid
/// binary gains nothing), every capability dropped but those the site gives
/// back, and the root file system read-only where the site asks for it.
fn container_security(config: &K8sConfig) -> Value {
    let mut capabilities = json!({"drop": ["ALL"]});
    if !config.cap_add.is_empty() {
        capabilities["add"] = config.cap_add.iter().map(ToString::to_string).collect();
    }
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": capabilities,
        "readOnlyRootFilesystem": config.read_only_root,
    })
}

/// An emptyDir, as large as the site lets one be.
fn empty_dir(config: &K8sConfig) -> Value {
    match config.emptydir_size_mb {
        Some(mb) => json!({"sizeLimit": format!("{mb}Mi")}),
        None => json!({}),
    }
}

/// Requests and limits: CPU and memory when the job has a limit (its request's,
/// else the site's), `nvidia.com/gpu` only when the job gets more than 0 GPUs
/// (an explicit 0 means none).
fn resources(limits: &JobLimits, gpus: u32) -> Value {
    let mut amounts = Map::new();
    if let Some(cpus) = limits.cpus {
        amounts.insert(
            "cpu".into(),
            json!(format!("{}m", (cpus * 1000.0).ceil() as u64)),
        );
    }
    if let Some(mb) = limits.memory_mb {
        amounts.insert("memory".into(), json!(format!("{mb}Mi")));
    }
    if gpus > 0 {
        amounts.insert(GPU.into(), json!(gpus.to_string()));
    }
    if amounts.is_empty() {
        return json!({});
    }
    json!({"requests": amounts, "limits": amounts})
}

/// One volume and one mount per requested mount.
fn volumes(
    request: &LaunchRequest,
    config: &K8sConfig,
) -> Result<(Vec<Value>, Vec<Value>), LaunchError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (at, mount) in request.mounts.iter().enumerate() {
        let name = format!("mount-{at}");
        let source = mount
            .parsed_source()
            .map_err(|e| LaunchError::Unsupported(Failure::of(e)))?;
        let volume = match source {
            MountSource::Pvc(claim) => {
                check_name("claim", &claim)?;
                NameList {
                    what: "claims",
                    option: "k8s-allowed-claims",
                    patterns: &config.allowed_claims,
                }
                .check(&claim)?;
                json!({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": mount.read_only}})
            }
            MountSource::Secret(secret) => {
                check_name("secret", &secret)?;
                if secret == config.nats_secret {
                    return Err(never_mountable("secret", &secret, "k8s-nats-secret"));
                }
                NameList {
                    what: "secrets",
                    option: "k8s-allowed-secrets",
                    patterns: &config.allowed_secrets,
                }
                .check(&secret)?;
                json!({"name": name, "secret": {"secretName": secret}})
            }
            MountSource::EmptyDir => json!({"name": name, "emptyDir": empty_dir(config)}),
            MountSource::Host(path) => {
                return Err(invalid(format!(
                    "the k8s backend does not mount host paths ({}); use pvc:, secret: or emptydir:",
                    quoted(&path)
                )));
            }
        };
        volumes.push(volume);
        mounts.push(json!({"name": name, "mountPath": mount.target, "readOnly": mount.read_only}));
    }
    Ok((volumes, mounts))
}

fn check_name(what: &str, name: &str) -> Result<(), LaunchError> {
    if is_dns_subdomain(name) {
        return Ok(());
    }
    Err(invalid(format!(
        "{what} name {} is not a Kubernetes name (lower-case letters, digits, '-' and '.')",
        quoted(name)
    )))
}

fn invalid(message: String) -> LaunchError {
    LaunchError::Unsupported(message.into())
}

/// `text` with every `$` that Kubernetes would read as the start of `$(VAR)` or
/// `$$` doubled, so the job gets it exactly as sent.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('$' | '(')) {
            out.push('$');
        }
    }
    out
}

/// `ours` merged onto `template`: objects key by key, the first container onto
/// the template's first, lists the template has (volumes, tolerations, ...)
/// followed by ours; everything else ours.
fn merged(template: &Value, ours: Value) -> Value {
    match (template, ours) {
        (Value::Object(base), Value::Object(over)) => {
            let mut out = base.clone();
            for (key, value) in over {
                let next = match out.get(&key) {
                    Some(Value::Array(theirs)) if key == "containers" => {
                        let mut list: Vec<Value> = match value {
                            Value::Array(list) => list,
                            other => vec![other],
                        };
                        if let (Some(first), Some(base_first)) = (list.first_mut(), theirs.first())
                        {
                            *first = merged(base_first, first.take());
                        }
                        list.extend(theirs.iter().skip(1).cloned());
                        Value::Array(list)
                    }
                    Some(Value::Array(theirs)) => match value {
                        Value::Array(list) => {
                            Value::Array(theirs.iter().cloned().chain(list).collect())
                        }
                        other => other,
                    },
                    Some(base_value) => merged(base_value, value),
                    None => value,
                };
                out.insert(key, next);
            }
            Value::Object(out)
        }
        (_, ours) => ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::K8sArgs;
    use crate::protocol::{AssignedGpu, Mount, Resources, Timeouts};

    const OWNER: Owner<'static> = Owner {
        worker: "w1",
        pool: "gpu",
        namespace: "flare",
    };

    fn request() -> LaunchRequest {
        let mut request = LaunchRequest::new(
            "j1",
            vec!["sh".into(), "-c".into(), "echo $(date) $$ $HOME".into()],
        );
        request.site = Some("site-1".into());
        request
    }

    fn build(request: &LaunchRequest, config: &K8sConfig) -> Value {
        pod(
            request,
            &GpuAssignment::Unaccounted,
            "img:1",
            &OWNER,
            config,
            &json!({}),
        )
        .unwrap()
    }

    #[test]
    fn the_pod_runs_the_argv_once_with_the_programs_labels() {
        let mut request = request();
        request
            .labels
            .insert("nvflare-site".into(), "site-1".into());
        request.labels.insert(JOB_ID.into(), "other".into());
        request.env.insert("A".into(), "$(B)".into());
        request.workdir = Some("/w".into());
        let pod = build(&request, &K8sArgs::default().config());
        assert_eq!(pod["metadata"]["name"], "flare-site-1-j1");
        assert_eq!(pod["metadata"]["namespace"], "flare");
        assert_eq!(pod["metadata"]["annotations"][JOB_ID_ANNOTATION], "j1");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels[JOB_ID], "j1");
        assert_eq!(labels[MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(labels[NAME], NAME_VALUE);
        assert_eq!(labels[WORKER], "w1");
        assert_eq!(labels[POOL], "gpu");
        assert_eq!(labels[SITE], "site-1");
        assert_eq!(labels["nvflare-site"], "site-1");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert!(spec.get("activeDeadlineSeconds").is_none());
        let container = &spec["containers"][0];
        assert_eq!(
            container["command"],
            json!(["sh", "-c", "echo $$(date) $$$ $HOME"])
        );
        assert!(container.get("args").is_none());
        assert_eq!(container["env"], json!([{"name": "A", "value": "$$(B)"}]));
        request.secret_env.insert("TOKEN".into(), "s3cret".into());
        let with_secret = build(&request, &K8sArgs::default().config());
        assert_eq!(
            with_secret["spec"]["containers"][0]["env"],
            json!([
                {"name": "A", "value": "$$(B)"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "flare-site-1-j1", "key": "TOKEN"}}},
            ])
        );
        assert!(!with_secret.to_string().contains("s3cret"));
        assert_eq!(container["workingDir"], "/w");
        assert_eq!(container["resources"], json!({}));
    }

    #[test]
    fn labels_kubernetes_would_refuse_are_invalid_requests() {
        for (key, value) in [
            ("bad key", "v"),
            ("k", "a b"),
            ("k", &*"v".repeat(64)),
            ("UP.com/k", "v"),
        ] {
            let mut request = request();
            request.labels.insert(key.into(), value.into());
            let refused = pod(
                &request,
                &GpuAssignment::Unaccounted,
                "i",
                &OWNER,
                &K8sArgs::default().config(),
                &json!({}),
            );
            assert!(
                matches!(refused, Err(LaunchError::Unsupported(_))),
                "{key:?}={value:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn gpus_cpus_and_memory_become_requests_and_limits_and_0_gpus_means_none() {
        let mut request = request();
        request.resources = Some(Resources {
            gpus: Some(2),
            cpus: Some(1.5),
            memory_mb: Some(512),
            ..Resources::default()
        });
        let config = K8sArgs::default().config();
        let resources = build(&request, &config)["spec"]["containers"][0]["resources"].clone();
        let amounts = json!({"cpu": "1500m", "memory": "512Mi", GPU: "2"});
        assert_eq!(resources, json!({"requests": amounts, "limits": amounts}));
        request.resources = Some(Resources {
            gpus: Some(0),
            ..Resources::default()
        });
        assert_eq!(
            build(&request, &config)["spec"]["containers"][0]["resources"],
            json!({})
        );
    }

    #[test]
    fn the_gpus_the_policy_assigned_win_over_the_requests_count() {
        let mut request = request();
        request.resources = Some(Resources {
            gpus: Some(2),
            ..Resources::default()
        });
        let gpu_amount = |gpus: &GpuAssignment| {
            let pod = pod(
                &request,
                gpus,
                "i",
                &OWNER,
                &K8sArgs::default().config(),
                &json!({}),
            )
            .unwrap();
            pod["spec"]["containers"][0]["resources"]["limits"][GPU].clone()
        };
        let one = AssignedGpu {
            index: 3,
            uuid: None,
        };
        assert_eq!(gpu_amount(&GpuAssignment::Unaccounted), json!("2"));
        assert_eq!(gpu_amount(&GpuAssignment::Devices(vec![one])), json!("1"));
        assert_eq!(gpu_amount(&GpuAssignment::Devices(vec![])), Value::Null);
    }

    #[test]
    fn every_mount_gets_its_own_volume() {
        let mut request = request();
        let mount = |source: &str, target: &str, read_only| Mount {
            source: source.into(),
            target: target.into(),
            read_only,
        };
        request.mounts = vec![
            mount("pvc:data", "/data", false),
            mount("pvc:models", "/models", true),
            mount("secret:creds", "/run/creds", true),
            mount("emptydir:", "/scratch", false),
        ];
        let mut config = K8sArgs::default().config();
        config.emptydir_size_mb = Some(100);
        config.allowed_claims = vec!["data".into(), "model?".into()];
        config.allowed_secrets = vec!["*".into()];
        let pod = build(&request, &config);
        assert_eq!(
            pod["spec"]["volumes"],
            json!([
                {"name": "mount-0", "persistentVolumeClaim": {"claimName": "data", "readOnly": false}},
                {"name": "mount-1", "persistentVolumeClaim": {"claimName": "models", "readOnly": true}},
                {"name": "mount-2", "secret": {"secretName": "creds"}},
                {"name": "mount-3", "emptyDir": {"sizeLimit": "100Mi"}},
            ])
        );
        let paths: Vec<&str> = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["/data", "/models", "/run/creds", "/scratch"]);
        request.mounts = vec![mount("host:/etc", "/etc", true)];
        assert!(pod_result(&request).is_err());
        request.mounts = vec![mount("pvc:Bad_Name", "/d", true)];
        assert!(pod_result(&request).is_err());
    }

    #[test]
    fn claims_and_secrets_need_the_operators_leave() {
        let mut config = K8sArgs::default().config();
        config.allowed_claims = vec!["data-*".into()];
        config.allowed_secrets = vec!["*".into()];
        let refused = |source: &str, config: &K8sConfig| {
            let mut request = request();
            request.mounts = vec![Mount {
                source: source.into(),
                target: "/m".into(),
                read_only: true,
            }];
            let volume = volumes(&request, config);
            volume.expect_err(source).to_string()
        };
        let none = K8sArgs::default().config();
        assert!(refused("secret:creds", &none).contains("--k8s-allowed-secrets"));
        assert!(refused("pvc:data-1", &none).contains("--k8s-allowed-claims"));
        assert!(refused("pvc:models", &config).contains("--k8s-allowed-claims"));
        let own = refused("secret:flare-launcher-nats", &config);
        assert!(own.contains("--k8s-nats-secret"), "{own}");
        config.nats_secret = "site-nats".into();
        assert!(refused("secret:site-nats", &config).contains("own credentials"));
    }

    fn pod_result(request: &LaunchRequest) -> Result<Value, LaunchError> {
        pod(
            request,
            &GpuAssignment::Unaccounted,
            "i",
            &OWNER,
            &K8sArgs::default().config(),
            &json!({}),
        )
    }

    #[test]
    fn the_sites_settings_and_template_shape_the_pod() {
        let mut request = request();
        request.timeouts = Some(Timeouts {
            start_s: Some(30),
            run_s: Some(600),
        });
        request.mounts = vec![Mount {
            source: "emptydir:".into(),
            target: "/s".into(),
            read_only: false,
        }];
        let mut config = K8sArgs::default().config();
        config.service_account = Some("flare-job".into());
        config.image_pull_secrets = vec!["regcred".into()];
        config.node_selector = vec!["gpu=a100".parse().unwrap()];
        config.tolerations = vec!["nvidia.com/gpu:NoSchedule".parse().unwrap()];
        config.user = Some("1000:1000".parse().unwrap());
        let template = json!({
            "metadata": {"annotations": {"team": "fl"}},
            "spec": {
                "priorityClassName": "batch",
                "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
                "containers": [{"name": "ignored", "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}],
                "restartPolicy": "Always",
            },
        });
        let pod = pod(
            &request,
            &GpuAssignment::Unaccounted,
            "img",
            &OWNER,
            &config,
            &template,
        )
        .unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["activeDeadlineSeconds"], 630);
        assert_eq!(spec["serviceAccountName"], "flare-job");
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(spec["nodeSelector"], json!({"gpu": "a100"}));
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        );
        assert_eq!(spec["securityContext"]["runAsUser"], 1000);
        assert_eq!(spec["restartPolicy"], "Never", "never the template's");
        assert_eq!(spec["priorityClassName"], "batch");
        assert_eq!(pod["metadata"]["annotations"]["team"], "fl");
        assert_eq!(pod["metadata"]["annotations"][JOB_ID_ANNOTATION], "j1");
        let volumes: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(volumes, ["shm", "mount-0"]);
        let container = &spec["containers"][0];
        assert_eq!(container["name"], CONTAINER);
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(mounts, ["/dev/shm", "/s"]);
        // The API types take it.
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod).unwrap();
    }

    #[test]
    fn a_pods_container_is_locked_down_unless_the_site_gives_something_back() {
        let locked = build(&request(), &K8sArgs::default().config());
        assert_eq!(
            locked["spec"]["securityContext"]["seccompProfile"],
            json!({"type": "RuntimeDefault"})
        );
        let container = &locked["spec"]["containers"][0];
        assert_eq!(
            container["securityContext"],
            json!({
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": false,
            })
        );
        assert_eq!(locked["spec"]["volumes"], json!([]));
        let mut config = K8sArgs::default().config();
        config.cap_add = vec!["NET_BIND_SERVICE".parse().unwrap()];
        config.read_only_root = true;
        config.emptydir_size_mb = Some(64);
        config.default_limits = JobLimits {
            memory_mb: Some(512),
            cpus: Some(0.5),
        };
        let opened = build(&request(), &config);
        let container = &opened["spec"]["containers"][0];
        assert_eq!(
            container["securityContext"]["capabilities"],
            json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "tmp", "mountPath": "/tmp"}])
        );
        assert_eq!(
            opened["spec"]["volumes"],
            json!([{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}])
        );
        let amounts = json!({"cpu": "500m", "memory": "512Mi"});
        assert_eq!(
            container["resources"],
            json!({"requests": amounts, "limits": amounts})
        );
        let mut own_tmp = request();
        own_tmp.mounts = vec![Mount {
            source: "emptydir:".into(),
            target: "/tmp".into(),
            read_only: false,
        }];
        own_tmp.resources = Some(Resources {
            memory_mb: Some(64),
            ..Resources::default()
        });
        let own = build(&own_tmp, &config);
        let container = &own["spec"]["containers"][0];
        assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 1);
        assert_eq!(container["volumeMounts"][0]["name"], "mount-0");
        assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    }
}
