//! What a job's container is made of: its deterministic name, its labels, and
//! the create body the Engine API takes, built from the launch request and the
//! worker's settings. Pure functions, so every rule is checked without an engine.

use super::secret_files::{SECRETS_DIR_VAR, SECRETS_TARGET};
use crate::backend::GpuAssignment;
use crate::config::DockerConfig;
use crate::protocol::LaunchRequest;
use crate::protocol::bounded::bounded_to;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, ResourcesUlimits};
use std::collections::HashMap;

pub use crate::backend::container::workload::{
    JOB_ID, MANAGED_BY, MANAGED_BY_VALUE, POOL, SITE, WORKER, workload_name as container_name,
};

/// Longest key or value of a label taken from the request.
const MAX_LABEL_TEXT: usize = 256;
/// Most labels taken from the request.
const MAX_REQUEST_LABELS: usize = 64;

/// Who a container belongs to.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    /// The worker's id.
    pub worker: &'a str,
    /// Its pool.
    pub pool: &'a str,
}

/// The labels of a job's container: the request's own (bounded), then this
/// program's, which the request cannot override.
pub fn labels(request: &LaunchRequest, owner: &Owner<'_>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = request
        .labels
        .iter()
        .take(MAX_REQUEST_LABELS)
        .map(|(key, value)| {
            (
                bounded_to(key, MAX_LABEL_TEXT),
                bounded_to(value, MAX_LABEL_TEXT),
            )
        })
        .collect();
    labels.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    labels.insert(JOB_ID.into(), request.job_id.clone());
    labels.insert(POOL.into(), owner.pool.into());
    labels.insert(WORKER.into(), owner.worker.into());
    if let Some(site) = &request.site {
        labels.insert(SITE.into(), bounded_to(site, MAX_LABEL_TEXT));
    }
    labels
}

/// The GPUs of a job's container: the devices the worker assigned, by index;
/// without accounting, as many as the request asks for (the site's default
/// when it names none). `gpus: 0`, or an empty assignment, means none.
fn device_requests(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    config: &DockerConfig,
) -> Option<Vec<DeviceRequest>> {
    let capabilities = Some(vec![vec!["gpu".to_owned()]]);
    match gpus.devices() {
        Some([]) => None,
        Some(devices) => Some(vec![DeviceRequest {
            device_ids: Some(devices.iter().map(|gpu| gpu.index.to_string()).collect()),
            capabilities,
            ..DeviceRequest::default()
        }]),
        None => {
            let count = gpus.count(request, config.gpus);
            (count > 0).then(|| {
                vec![DeviceRequest {
                    count: Some(i64::from(count)),
                    capabilities,
                    ..DeviceRequest::default()
                }]
            })
        }
    }
}

/// The create body of a job's container: its argv without a shell, environment,
/// working directory, labels, limits (the request's, else the site's) and
/// `mounts` (checked already), on the network the worker's settings name (the
/// engine's default bridge otherwise). Locked down: never privileged, no new
/// privileges (a setuid binary gains nothing), every capability dropped but
/// those the site gives back, run as the site's user, and with a read-only root
/// file system (a tmpfs at /tmp) where the site asks for one.
pub fn container(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    image: &str,
    owner: &Owner<'_>,
    config: &DockerConfig,
    mounts: Vec<Mount>,
) -> ContainerCreateBody {
    let limits = config
        .default_limits
        .for_request(request.resources.as_ref());
    let host_config = HostConfig {
        nano_cpus: limits.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory: limits.memory_mb.map(mebibytes),
        pids_limit: Some(config.pids_limit),
        network_mode: config.network.clone(),
        privileged: Some(false),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        cap_drop: Some(vec![ALL_CAPABILITIES.to_owned()]),
        cap_add: (!config.cap_add.is_empty())
            .then(|| config.cap_add.iter().map(ToString::to_string).collect()),
        readonly_rootfs: Some(config.read_only_root),
        tmpfs: writable_tmp(config, &mounts),
        init: Some(false),
        mounts: Some(mounts),
        shm_size: config.shm_size_mb.map(mebibytes),
        ipc_mode: config.ipc.map(|mode| mode.as_str().to_owned()),
        ulimits: Some(
            config
                .ulimits
                .iter()
                .map(|ulimit| ResourcesUlimits {
                    name: Some(ulimit.name.clone()),
                    soft: Some(ulimit.soft),
                    hard: Some(ulimit.hard),
                })
                .collect(),
        ),
        device_requests: device_requests(request, gpus, config),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(request.command.clone()),
        // The command is the whole argv: no entrypoint of the image wraps it.
        entrypoint: Some(Vec::new()),
        env: Some(env(request)),
        working_dir: request.workdir.clone(),
        user: Some(config.user.to_string()),
        labels: Some(labels(request, owner)),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// The environment of a job's container: the request's `env`, and, when it has
/// secrets, the variable naming the folder of their files (never a value).
fn env(request: &LaunchRequest) -> Vec<String> {
    let secrets_dir = (!request.secret_env.is_empty()).then_some((SECRETS_DIR_VAR, SECRETS_TARGET));
    request
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .filter(|(name, _)| secrets_dir.is_none_or(|(taken, _)| taken != *name))
        .chain(secrets_dir)
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The security option that keeps a container's processes from gaining
/// privileges (setuid and file capabilities do nothing).
const NO_NEW_PRIVILEGES: &str = "no-new-privileges";
/// Every capability, as `cap_drop` names them.
const ALL_CAPABILITIES: &str = "ALL";
/// Where a container with a read-only root file system may write.
const WRITABLE_TMP: &str = "/tmp";
/// How the writable /tmp is mounted: nothing on it is a device or setuid.
const WRITABLE_TMP_OPTIONS: &str = "rw,nosuid,nodev";

/// The tmpfs at /tmp of a container whose root file system is read-only,
/// unless one of its mounts is there already.
fn writable_tmp(config: &DockerConfig, mounts: &[Mount]) -> Option<HashMap<String, String>> {
    let taken = mounts
        .iter()
        .any(|mount| mount.target.as_deref() == Some(WRITABLE_TMP));
    (config.read_only_root && !taken)
        .then(|| HashMap::from([(WRITABLE_TMP.to_owned(), WRITABLE_TMP_OPTIONS.to_owned())]))
}

/// `mb` MiB in bytes, as the engine takes sizes.
fn mebibytes(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DockerArgs;
    use crate::config::values::JobLimits;
    use crate::protocol::AssignedGpu;
    use crate::protocol::Resources;

    const OWNER: Owner<'static> = Owner {
        worker: "w1",
        pool: "gpu",
    };

    /// The host settings of `request`'s container, its GPUs unaccounted.
    fn host_of(request: &LaunchRequest, config: &DockerConfig, mounts: Vec<Mount>) -> HostConfig {
        container(
            request,
            &GpuAssignment::Unaccounted,
            "i",
            &OWNER,
            config,
            mounts,
        )
        .host_config
        .unwrap()
    }

    #[test]
    fn the_programs_labels_win_over_the_requests() {
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        request.site = Some("site-a".into());
        request.labels.insert(JOB_ID.into(), "other".into());
        request.labels.insert("team".into(), "t".repeat(10_000));
        let labels = labels(&request, &OWNER);
        assert_eq!(labels[JOB_ID], "j1");
        assert_eq!(labels[MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(labels[WORKER], "w1");
        assert_eq!(labels[POOL], "gpu");
        assert_eq!(labels[SITE], "site-a");
        assert!(
            labels["team"].len() <= MAX_LABEL_TEXT,
            "{}",
            labels["team"].len()
        );
    }

    #[test]
    fn resources_become_limits_and_the_argv_is_taken_whole() {
        let mut request = LaunchRequest::new("j1", vec!["/bin/prog".into(), "a b".into()]);
        request.env.insert("A".into(), "1=2".into());
        request.workdir = Some("/w".into());
        request.resources = Some(Resources {
            gpus: Some(0),
            cpus: Some(1.5),
            memory_mb: Some(256),
            ..Resources::default()
        });
        let config = DockerArgs::default().config();
        let body = container(
            &request,
            &GpuAssignment::Unaccounted,
            "img:1",
            &OWNER,
            &config,
            Vec::new(),
        );
        assert_eq!(body.cmd.unwrap(), ["/bin/prog", "a b"]);
        assert_eq!(body.entrypoint.unwrap(), Vec::<String>::new());
        assert_eq!(body.env.unwrap(), ["A=1=2"]);
        assert_eq!(body.working_dir.as_deref(), Some("/w"));
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.pids_limit, Some(config.pids_limit));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.network_mode, None);
        assert_eq!(host.device_requests, None);
    }

    #[test]
    fn secrets_are_named_by_their_folder_never_given_as_values() {
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        request.env.insert("A".into(), "1".into());
        request
            .env
            .insert(SECRETS_DIR_VAR.into(), "/elsewhere".into());
        let config = DockerArgs::default().config();
        let env_of = |request: &LaunchRequest| {
            let body = container(
                request,
                &GpuAssignment::Unaccounted,
                "i",
                &OWNER,
                &config,
                Vec::new(),
            );
            (
                body.env.clone().unwrap(),
                serde_json::to_string(&body).unwrap(),
            )
        };
        let (plain, _) = env_of(&request);
        assert!(plain.contains(&format!("{SECRETS_DIR_VAR}=/elsewhere")));
        request.secret_env.insert("TOKEN".into(), "s3cret".into());
        let (env, body) = env_of(&request);
        assert_eq!(
            env,
            [
                "A=1".to_owned(),
                format!("{SECRETS_DIR_VAR}={SECRETS_TARGET}")
            ]
        );
        assert!(!body.contains("s3cret"), "{body}");
    }

    #[test]
    fn gpus_come_from_the_request_else_the_site_default_and_0_means_none() {
        let mut config = DockerArgs::default().config();
        config.gpus = 2;
        config.ulimits = vec!["nofile=100:200".parse().unwrap()];
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        let host = |request: &LaunchRequest| host_of(request, &config, Vec::new());
        let gpus = |request: &LaunchRequest| {
            host(request)
                .device_requests
                .map(|requests| requests[0].count)
        };
        assert_eq!(gpus(&request), Some(Some(2)));
        request.resources = Some(Resources {
            gpus: Some(0),
            ..Resources::default()
        });
        assert_eq!(gpus(&request), None);
        request.resources = Some(Resources {
            gpus: Some(1),
            ..Resources::default()
        });
        assert_eq!(gpus(&request), Some(Some(1)));
        let ulimit = &host(&request).ulimits.unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(100), Some(200))
        );
    }

    #[test]
    fn assigned_gpus_become_a_device_request_by_id_and_none_assigned_means_none() {
        let mut config = DockerArgs::default().config();
        config.gpus = 2;
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        request.resources = Some(Resources {
            gpus: Some(2),
            ..Resources::default()
        });
        let requests = |gpus: &GpuAssignment| {
            container(&request, gpus, "i", &OWNER, &config, Vec::new())
                .host_config
                .unwrap()
                .device_requests
        };
        let assigned = GpuAssignment::Devices(vec![
            AssignedGpu {
                index: 1,
                uuid: Some("GPU-b".into()),
            },
            AssignedGpu {
                index: 3,
                uuid: None,
            },
        ]);
        let by_id = requests(&assigned).unwrap();
        assert_eq!(
            by_id[0].device_ids.as_deref(),
            Some(&["1".to_owned(), "3".to_owned()][..])
        );
        assert_eq!(by_id[0].count, None);
        assert_eq!(requests(&GpuAssignment::Devices(Vec::new())), None);
    }

    #[test]
    fn a_container_is_locked_down_and_runs_as_the_sites_user() {
        let mut config = DockerArgs::default().config();
        config.user = "1000:1001".parse().unwrap();
        let request = LaunchRequest::new("j1", vec!["x".into()]);
        let body = container(
            &request,
            &GpuAssignment::Unaccounted,
            "i",
            &OWNER,
            &config,
            Vec::new(),
        );
        assert_eq!(body.user.as_deref(), Some("1000:1001"));
        let host = body.host_config.unwrap();
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.cap_add, None);
        assert_eq!(host.readonly_rootfs, Some(false));
        assert_eq!(host.tmpfs, None);
        assert_eq!((host.memory, host.nano_cpus), (None, None));
    }

    #[test]
    fn the_site_gives_back_capabilities_a_read_only_root_and_default_limits() {
        let mut config = DockerArgs::default().config();
        config.cap_add = vec!["CHOWN".parse().unwrap(), "cap_kill".parse().unwrap()];
        config.read_only_root = true;
        config.default_limits = JobLimits {
            memory_mb: Some(512),
            cpus: Some(0.5),
        };
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        let host = |request: &LaunchRequest, mounts| host_of(request, &config, mounts);
        let locked = host(&request, Vec::new());
        assert_eq!(locked.cap_add.unwrap(), ["CHOWN", "KILL"]);
        assert_eq!(locked.readonly_rootfs, Some(true));
        assert_eq!(locked.tmpfs.unwrap()["/tmp"], "rw,nosuid,nodev");
        assert_eq!(locked.memory, Some(512 * 1024 * 1024));
        assert_eq!(locked.nano_cpus, Some(500_000_000));
        request.resources = Some(Resources {
            memory_mb: Some(64),
            ..Resources::default()
        });
        let own_tmp = Mount {
            target: Some("/tmp".into()),
            ..Mount::default()
        };
        let asked = host(&request, vec![own_tmp]);
        assert_eq!(asked.memory, Some(64 * 1024 * 1024));
        assert_eq!(asked.nano_cpus, Some(500_000_000));
        assert_eq!(asked.tmpfs, None, "the job's own mount at /tmp stays");
    }
}
