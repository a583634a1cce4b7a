//! The machine-readable causes (`reason`) that events carry.

/// A terminate request stopped the job (or came before its launch).
pub const TERMINATE_REQUESTED: &str = "TerminateRequested";
/// `run_s` ran out.
pub const RUN_TIMEOUT: &str = "RunTimeout";
/// `start_s` ran out before the workload ran.
pub const START_TIMEOUT: &str = "StartTimeout";
/// The worker shut down and its drain timeout ran out.
pub const WORKER_SHUTDOWN: &str = "WorkerShutdown";
/// The request was invalid.
pub const INVALID_REQUEST: &str = "InvalidRequest";
/// The program could not be started.
pub const SPAWN_FAILED: &str = "SpawnFailed";
/// The worker does not have the backend the request asks for.
pub const BACKEND_UNAVAILABLE: &str = "BackendUnavailable";
/// The workload disappeared and nobody can tell how it ended.
pub const WORKLOAD_VANISHED: &str = "WorkloadVanished";
/// The server refused the job's record or event for good (e.g. too large): the
/// job ended with a minimal record instead.
pub const RECORD_REJECTED: &str = "RecordRejected";
/// The worker asked the workload to stop and could not confirm it stopped (its
/// engine, cluster or supervisor refused the stop or did not answer within the
/// backend's stop patience, or its Kubernetes node stopped reporting and the pod
/// was removed without its end): it may still run, or have run on a while.
pub const STOP_UNCONFIRMED: &str = "StopUnconfirmed";
/// The job's owner (its worker, or the supervisor that held it) went away and the
/// job could not be found again.
pub const OWNER_LOST: &str = "OwnerLost";
/// The job's container image is not there, and cannot be pulled from anywhere
/// (unknown repository or tag, or the pull policy forbids pulling).
pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
/// The job's container image could not be pulled (registry unreachable,
/// credentials refused, ...).
pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
/// The workload was killed for using more memory than its limit.
pub const OOM_KILLED: &str = "OOMKilled";
/// A mount the worker's configuration does not allow (a host path outside the
/// allowed roots, a secret that is not there).
pub const MOUNT_NOT_ALLOWED: &str = "MountNotAllowed";
/// A Secret, claim or named volume to mount, or a label key, that the
/// operator's allow-lists do not allow, or the worker's own credentials.
pub const NOT_ALLOWED: &str = "NotAllowed";
/// The worker went away while it launched the job, before the job's workload
/// existed: the job never ran (a worker that restarts says so).
pub const LAUNCH_INTERRUPTED: &str = "LaunchInterrupted";
/// No worker of the pool had room for the job's resources within `start_s`, or
/// the cluster's scheduler cannot place its pod.
pub const UNSCHEDULABLE: &str = "Unschedulable";
/// The Kubernetes node of the job's pod stopped reporting (not ready for
/// longer than the worker waits), or the pod's deletion was never confirmed:
/// the pod was removed without its end, which nobody can tell.
pub const NODE_LOST: &str = "NodeLost";
/// A Kubernetes pod ran longer than its `activeDeadlineSeconds` (the job's
/// `start_s` plus `run_s`) and the cluster stopped it.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
