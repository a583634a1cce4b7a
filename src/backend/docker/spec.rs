//! What a job's container is made of: its deterministic name, its labels, and
//! the create body the Engine API takes, built from the launch request and the
//! worker's settings. Pure functions, so every rule is checked without an engine.

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
/// working directory, labels, limits and `mounts` (checked already). Never privileged, and on the network the
/// worker's settings name (the engine's default bridge otherwise).
pub fn container(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    image: &str,
    owner: &Owner<'_>,
    config: &DockerConfig,
    mounts: Vec<Mount>,
) -> ContainerCreateBody {
    let resources = request.resources.clone().unwrap_or_default();
    let host_config = HostConfig {
        nano_cpus: resources
            .cpus
            .filter(|cpus| *cpus > 0.0)
            .map(|cpus| (cpus * 1e9).round() as i64),
        memory: resources
            .memory_mb
            .filter(|mb| *mb > 0)
            .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        pids_limit: Some(config.pids_limit),
        network_mode: config.network.clone(),
        privileged: Some(false),
        init: Some(false),
        mounts: Some(mounts),
        shm_size: config
            .shm_size_mb
            .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
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
        env: Some(
            request
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        ),
        working_dir: request.workdir.clone(),
        user: config.user.map(|user| user.to_string()),
        labels: Some(labels(request, owner)),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DockerArgs;
    use crate::protocol::AssignedGpu;
    use crate::protocol::Resources;

    const OWNER: Owner<'static> = Owner {
        worker: "w1",
        pool: "gpu",
    };

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
    fn gpus_come_from_the_request_else_the_site_default_and_0_means_none() {
        let mut config = DockerArgs::default().config();
        config.gpus = 2;
        config.ulimits = vec!["nofile=100:200".parse().unwrap()];
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        let host = |request: &LaunchRequest| {
            container(
                request,
                &GpuAssignment::Unaccounted,
                "i",
                &OWNER,
                &config,
                Vec::new(),
            )
            .host_config
            .unwrap()
        };
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
}
