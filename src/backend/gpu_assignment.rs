//! The GPUs the worker's resource policy gave a job, as a backend receives them
//! with the request: either no accounting at all (the `best-effort` policy, and
//! the backend takes the count from the request), or exactly these devices
//! (the `gpu` policy; none at all for a job that asked for none).

use crate::protocol::{AssignedGpu, LaunchRequest};

/// The GPUs a job was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GpuAssignment {
    /// The worker does not account for GPUs: the backend gives the job what its
    /// request asks for (`resources.gpus`), leaving the choice of devices to
    /// whatever runs it.
    #[default]
    Unaccounted,
    /// Exactly these GPUs; empty: none.
    Devices(Vec<AssignedGpu>),
}

impl GpuAssignment {
    /// The assignment a job's record holds (`gpus`; absent: none was made).
    pub fn from_recorded(gpus: Option<&[AssignedGpu]>) -> Self {
        match gpus {
            Some(gpus) => GpuAssignment::Devices(gpus.to_vec()),
            None => GpuAssignment::Unaccounted,
        }
    }

    /// How many GPUs the workload gets: those assigned; without accounting, the
    /// request's `resources.gpus`, else `default`.
    pub fn count(&self, request: &LaunchRequest, default: u32) -> u32 {
        match self {
            GpuAssignment::Devices(gpus) => u32::try_from(gpus.len()).unwrap_or(u32::MAX),
            GpuAssignment::Unaccounted => request
                .resources
                .as_ref()
                .and_then(|resources| resources.gpus)
                .unwrap_or(default),
        }
    }

    /// The assigned devices, when the worker chose them.
    pub fn devices(&self) -> Option<&[AssignedGpu]> {
        match self {
            GpuAssignment::Unaccounted => None,
            GpuAssignment::Devices(gpus) => Some(gpus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;

    fn gpu(index: u32) -> AssignedGpu {
        AssignedGpu { index, uuid: None }
    }

    #[test]
    fn count_is_the_devices_given_else_the_request_else_the_default() {
        let mut request = LaunchRequest::new("j1", vec!["x".into()]);
        assert_eq!(GpuAssignment::Unaccounted.count(&request, 2), 2);
        request.resources = Some(Resources {
            gpus: Some(1),
            ..Resources::default()
        });
        assert_eq!(GpuAssignment::Unaccounted.count(&request, 2), 1);
        let two = GpuAssignment::Devices(vec![gpu(0), gpu(3)]);
        assert_eq!(two.count(&request, 0), 2);
        assert_eq!(GpuAssignment::Devices(Vec::new()).count(&request, 2), 0);
    }

    #[test]
    fn the_record_says_whether_gpus_were_assigned() {
        let two = vec![gpu(1), gpu(2)];
        assert_eq!(
            GpuAssignment::from_recorded(Some(&two)),
            GpuAssignment::Devices(two.clone())
        );
        assert_eq!(
            GpuAssignment::from_recorded(Some(&[])),
            GpuAssignment::Devices(Vec::new())
        );
        assert_eq!(
            GpuAssignment::from_recorded(None),
            GpuAssignment::Unaccounted
        );
    }
}
