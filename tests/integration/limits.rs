//! A process job's `cpus` and `memory_mb`, enforced through its cgroup: the job's
//! cgroup holds its quota and limit while it runs (also where job cgroups are
//! off), and a job that allocates past its memory is killed and ends
//! `OOMKilled`, as on the container backends.

use crate::common::processes::{assert_root, older_supervisor, read_pid, supervisor_dir};
use crate::common::system::{System, sh};
use flare_launcher::protocol::{JobEvent, LaunchRequest, Resources};
use flare_launcher::state::JobState;
use std::path::{Path, PathBuf};

/// `request` asking for `cpus` and `memory_mb`.
fn limited(mut request: LaunchRequest, cpus: Option<f64>, memory_mb: u64) -> LaunchRequest {
    request.resources = Some(Resources {
        cpus,
        memory_mb: Some(memory_mb),
        ..Resources::default()
    });
    request
}

/// The folder of `pid`'s cgroup in the hierarchy of `controller` (`""`: the
/// unified one), on a host whose hierarchies are mounted where they usually are.
fn cgroup_folder(pid: i32, controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (mount, matches) = if controller.is_empty() {
            (PathBuf::from("/sys/fs/cgroup"), controllers.is_empty())
        } else {
            let mount = Path::new("/sys/fs/cgroup").join(controller);
            (mount, controllers.split(',').any(|c| c == controller))
        };
        matches.then(|| mount.join(path.trim_start_matches('/')))
    })
}

/// The folder of `pid`'s job cgroup in the hierarchy of `controller`, if it is
/// in one.
fn cgroup_of(pid: i32, controller: &str) -> Option<PathBuf> {
    cgroup_folder(pid, controller)
        .filter(|folder| folder.to_string_lossy().contains("/flare-launcher/job-"))
}

/// A system on its defaults (job cgroups off), whose supervisor may make
/// cgroups.
async fn started_as_root() -> System {
    assert_root("making job cgroups");
    System::start().await
}

/// Asserts that a job ended refused, in `error` with reason `SpawnFailed` and a
/// message that says `why`; returns the message.
fn assert_refused(events: &[JobEvent], why: &str) -> String {
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Error, "{events:?}");
    assert_eq!(last.reason.as_deref(), Some("SpawnFailed"), "{last:?}");
    let message = last.message.clone().unwrap_or_default();
    assert!(message.contains(why), "{last:?}");
    message
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "job cgroups need root")]
async fn a_jobs_cgroup_holds_its_cpu_quota_and_memory_limit_while_it_runs() {
    // Job cgroups are off: a job that names limits gets one all the same.
    let system = started_as_root().await;
    let pidfile = system.path("limited.pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    let request = limited(sh("limited", &script), Some(0.5), 64);
    system.launch_until_running(&request).await;
    let pid = read_pid(&pidfile).await;
    let folders = match cgroup_of(pid, "") {
        Some(unified) => {
            assert_eq!(read(&unified.join("memory.max")), "67108864");
            assert_eq!(read(&unified.join("cpu.max")), "50000 100000");
            vec![unified]
        }
        None => {
            let memory = cgroup_of(pid, "memory").expect("the job is in no memory cgroup");
            let cpu = cgroup_of(pid, "cpu").expect("the job is in no cpu cgroup");
            assert_eq!(read(&memory.join("memory.limit_in_bytes")), "67108864");
            assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
            vec![memory, cpu]
        }
    };
    let reply = system.client.terminate("limited", Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal("limited").await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
    for folder in folders {
        assert!(!folder.exists(), "{} outlived its job", folder.display());
    }
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "job cgroups need root")]
async fn a_job_that_allocates_past_its_memory_is_killed_and_ends_oom_killed() {
    let system = started_as_root().await;
    // `tail` holds its input until it ends: 400 MiB of it, against 64 MiB.
    let request = limited(
        sh("greedy", "head -c 400m /dev/zero | tail > /dev/null"),
        None,
        64,
    );
    let events = system.run(&request).await;
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Failed, "{last:?}");
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"), "{last:?}");
    let message = last.message.as_deref().unwrap_or_default();
    assert!(message.contains("more memory than its limit"), "{last:?}");
}

#[tokio::test]
async fn a_job_with_limits_is_refused_by_a_supervisor_that_would_not_enforce_them() {
    let mut system = System::without_worker(|_| {}).await;
    // Where the worker looks for its supervisor, one that answers as a
    // supervisor from before limits: the jobs, and nothing about limits.
    let dir = supervisor_dir(&system.config.data_dir, &system.config.worker_id);
    let (older, mut launched) = older_supervisor(&dir);
    system.start_worker().await;
    let events = system
        .run(&limited(sh("unbounded", "true"), None, 64))
        .await;
    assert_refused(&events, "cannot enforce cpus and memory_mb");
    assert!(
        launched.try_recv().is_err(),
        "the launch reached the supervisor"
    );
    older.abort();
}

/// The CPU quota of the jobs' folder in the v1 `cpu` hierarchy, taken off
/// again when dropped.
struct JobsQuota(PathBuf);

impl JobsQuota {
    /// Holds the jobs of supervisors in this process's cpu cgroup to one core
    /// together.
    fn one_core() -> JobsQuota {
        let own = cgroup_folder(std::process::id() as i32, "cpu").expect("no v1 cpu hierarchy");
        let jobs = own.join("flare-launcher");
        std::fs::create_dir_all(&jobs).unwrap();
        let quota = JobsQuota(jobs.join("cpu.cfs_quota_us"));
        std::fs::write(jobs.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(&quota.0, "100000").unwrap();
        quota
    }
}

impl Drop for JobsQuota {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "-1");
    }
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "job cgroups need root")]
#[cfg_attr(no_cgroup_v1_cpu, ignore = "needs a v1 cpu hierarchy")]
async fn a_job_whose_limits_its_cgroup_refuses_never_runs() {
    let system = started_as_root().await;
    // A v1 cgroup's quota may not be over its parent's: the job's cgroup
    // cannot take 1.5 cores where all jobs together have one.
    let _quota = JobsQuota::one_core();
    let ran = system.path("ran");
    let script = format!("touch {}", ran.display());
    let events = system
        .run(&limited(sh("overcommitted", &script), Some(1.5), 64))
        .await;
    let message = assert_refused(&events, "cannot enforce the job's cpus and memory_mb");
    assert!(message.contains("cpu.cfs_quota_us"), "{message}");
    assert!(!ran.exists(), "the job ran without its limits");
}
