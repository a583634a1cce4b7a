//! The variables that make a process job's GPU assignment real:
//! `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` name the GPUs it was
//! given (by index or by UUID, as the worker is configured), and a job given
//! none, or asking for none, gets `CUDA_VISIBLE_DEVICES=""` so that it cannot
//! take one by accident. They override whatever the request's `env` (or
//! `secret_env`) says.

use crate::backend::GpuAssignment;
use crate::config::resources::GpuNaming;
use crate::protocol::{AssignedGpu, LaunchRequest};

/// The variable CUDA reads.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
/// The variable the NVIDIA container runtime reads.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// The name of one GPU under `naming`.
fn name_of(gpu: &AssignedGpu, naming: GpuNaming) -> String {
    match (naming, &gpu.uuid) {
        (GpuNaming::Uuid, Some(uuid)) => uuid.clone(),
        _ => gpu.index.to_string(),
    }
}

/// The GPU variables of a job: none when the worker does not account for GPUs
/// and the request does not ask for none.
pub fn gpu_env(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    naming: GpuNaming,
) -> Vec<(String, String)> {
    match gpus.devices() {
        Some([]) => vec![(CUDA_VISIBLE_DEVICES.to_owned(), String::new())],
        Some(devices) => {
            let names: Vec<String> = devices.iter().map(|gpu| name_of(gpu, naming)).collect();
            let list = names.join(",");
            vec![
                (CUDA_VISIBLE_DEVICES.to_owned(), list.clone()),
                (NVIDIA_VISIBLE_DEVICES.to_owned(), list),
            ]
        }
        None if request.resources.as_ref().and_then(|r| r.gpus) == Some(0) => {
            vec![(CUDA_VISIBLE_DEVICES.to_owned(), String::new())]
        }
        None => Vec::new(),
    }
}

/// The request's environment, its `env` and its `secret_env` (which share no
/// name), with the GPU variables set over it.
pub fn job_env(
    request: &LaunchRequest,
    gpus: &GpuAssignment,
    naming: GpuNaming,
) -> Vec<(String, String)> {
    let set = gpu_env(request, gpus, naming);
    request
        .env
        .iter()
        .chain(request.secret_env.iter())
        .filter(|(name, _)| !set.iter().any(|(taken, _)| taken == *name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(set.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;

    fn asking(gpus: Option<u32>) -> LaunchRequest {
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        request.resources = Some(Resources {
            gpus,
            ..Resources::default()
        });
        request
            .env
            .insert(CUDA_VISIBLE_DEVICES.into(), "0,1,2,3".into());
        request.env.insert("OTHER".into(), "kept".into());
        request
    }

    fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn assigned_gpus_are_named_by_index_or_uuid_over_the_request_env() {
        let gpus = GpuAssignment::Devices(vec![
            AssignedGpu {
                index: 2,
                uuid: Some("GPU-c".into()),
            },
            AssignedGpu {
                index: 0,
                uuid: None,
            },
        ]);
        let request = asking(Some(2));
        let by_index = job_env(&request, &gpus, GpuNaming::Index);
        assert_eq!(var(&by_index, CUDA_VISIBLE_DEVICES), Some("2,0"));
        assert_eq!(var(&by_index, NVIDIA_VISIBLE_DEVICES), Some("2,0"));
        assert_eq!(var(&by_index, "OTHER"), Some("kept"));
        let cuda_count = by_index
            .iter()
            .filter(|(n, _)| n == CUDA_VISIBLE_DEVICES)
            .count();
        assert_eq!(cuda_count, 1);
        let mut request = request;
        request.secret_env.insert("TOKEN".into(), "s3cret".into());
        let with_secret = job_env(&request, &gpus, GpuNaming::Index);
        assert_eq!(var(&with_secret, "TOKEN"), Some("s3cret"));
        let by_uuid = job_env(&request, &gpus, GpuNaming::Uuid);
        assert_eq!(var(&by_uuid, CUDA_VISIBLE_DEVICES), Some("GPU-c,0"));
    }

    #[test]
    fn no_gpu_means_an_empty_cuda_visible_devices() {
        let none_assigned = job_env(
            &asking(Some(0)),
            &GpuAssignment::Devices(Vec::new()),
            GpuNaming::Index,
        );
        assert_eq!(var(&none_assigned, CUDA_VISIBLE_DEVICES), Some(""));
        assert_eq!(var(&none_assigned, NVIDIA_VISIBLE_DEVICES), None);
        let asked_none = job_env(
            &asking(Some(0)),
            &GpuAssignment::Unaccounted,
            GpuNaming::Index,
        );
        assert_eq!(var(&asked_none, CUDA_VISIBLE_DEVICES), Some(""));
        // Without accounting and without `gpus: 0`, the request's env stands.
        let unsaid = job_env(&asking(None), &GpuAssignment::Unaccounted, GpuNaming::Index);
        assert_eq!(var(&unsaid, CUDA_VISIBLE_DEVICES), Some("0,1,2,3"));
    }
}
