//! Resource policies over a real nats-server, with workers as processes of
//! their own whose `PATH` holds a fake `nvidia-smi` printing a chosen
//! inventory (no GPU is on these machines): GPUs go to one job at a time and
//! come back when its workload ends (also when it is terminated, and across a
//! worker restart), a request that fits nowhere ends `Unschedulable`, the
//! pool's workers share the jobs, and `best-effort` counts nothing.

use crate::common::system::{System, sh, states};
use flare_launcher::client::Client;
use flare_launcher::protocol::{JobEvent, LaunchRequest, ResourceStatus, Resources, Timeouts};
use flare_launcher::state::JobState;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a test watches a job that must not start, before it moves on.
const STAYS_WAITING: Duration = Duration::from_secs(3);
/// How long a test waits for a worker to answer at all (it may be starting).
const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory holding an `nvidia-smi` that prints `lines` for the query the
/// worker makes, and fails for any other.
fn fake_nvidia_smi(system: &System, name: &str, lines: &[&str]) -> PathBuf {
    let dir = system.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("nvidia-smi");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = --query-gpu=index,uuid,memory.total ] && [ \"$2\" = --format=csv,noheader,nounits ] || exit 2\ncat <<'EOF'\n{}\nEOF\n",
        lines.join("\n")
    );
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Two 16 GiB GPUs.
const TWO_GPUS: [&str; 2] = ["0, GPU-test-0, 16384", "1, GPU-test-1, 16384"];

/// Starts a worker process with the `gpu` policy, `nvidia-smi` found in `smi_dir`.
fn gpu_worker(system: &System, worker_id: &str, smi_dir: &Path) -> tokio::process::Child {
    let data_dir = system.path(&format!("data-{worker_id}"));
    let path = path_with(smi_dir);
    system.spawn_worker_process(
        worker_id,
        &data_dir,
        &[("PATH", &path), ("FLARE_RESOURCE_POLICY", "gpu")],
    )
}

/// A job asking for `gpus` GPUs that writes the `CUDA_VISIBLE_DEVICES` it got
/// (`unset` when it has none) and runs until [`release`].
fn gpu_job(system: &System, job_id: &str, gpus: u32) -> LaunchRequest {
    let seen = system.path(&format!("{job_id}.devices"));
    let go = system.path(&format!("{job_id}.go"));
    let mut request = sh(
        job_id,
        &format!(
            "printf '%s' \"${{CUDA_VISIBLE_DEVICES-unset}}\" > {seen}.tmp; mv {seen}.tmp {seen}; while [ ! -e {go} ]; do sleep 0.05; done",
            seen = seen.display(),
            go = go.display()
        ),
    );
    request.resources = Some(Resources {
        gpus: Some(gpus),
        ..Resources::default()
    });
    request
}

/// Lets a [`gpu_job`] end.
fn release(system: &System, job_id: &str) {
    std::fs::write(system.path(&format!("{job_id}.go")), "").unwrap();
}

/// Lets [`gpu_job`]s end, and waits until they have.
async fn end_all(system: &System, jobs: &[&str]) {
    for job in jobs {
        release(system, job);
        system.events_until_terminal(job).await;
    }
}

/// The `CUDA_VISIBLE_DEVICES` a running [`gpu_job`] wrote.
async fn devices_seen(system: &System, job_id: &str) -> String {
    let seen = system.path(&format!("{job_id}.devices"));
    let deadline = tokio::time::Instant::now() + crate::common::system::JOB_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&seen) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{job_id} never wrote its devices"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Launches `request` and returns its `running` event.
async fn launch_running(system: &System, request: &LaunchRequest) -> JobEvent {
    system.client.launch(request).await.unwrap();
    running(system, &request.job_id).await
}

/// Waits for a job's `running` event.
async fn running(system: &System, job_id: &str) -> JobEvent {
    let events = system
        .events_until(job_id, |e| {
            e.state == JobState::Running || e.state.is_terminal()
        })
        .await;
    let last = events.last().unwrap().clone();
    assert_eq!(last.state, JobState::Running, "{events:#?}");
    last
}

/// The indices of the GPUs an event says its job got.
fn indices(event: &JobEvent) -> Vec<u32> {
    let gpus = event
        .gpus
        .as_ref()
        .unwrap_or_else(|| panic!("no gpus in {event:?}"));
    gpus.iter().map(|gpu| gpu.index).collect()
}

/// Asserts that a job publishes no event for a while: nobody took it.
async fn assert_stays_waiting(system: &System, job_id: &str) {
    let any = tokio::time::timeout(STAYS_WAITING, system.events_until(job_id, |_| true)).await;
    assert!(any.is_err(), "{job_id} was taken: {any:?}");
}

/// A worker's resources, once it answers.
async fn resources_of(client: &Client, worker: &str) -> ResourceStatus {
    let deadline = tokio::time::Instant::now() + WORKER_ANSWER_TIMEOUT;
    loop {
        match client.worker_resources(worker).await {
            Ok(status) => return status,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{worker} does not answer: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `flare-launcher status --worker WORKER` prints.
async fn status_from_the_cli(system: &System, worker: &str) -> ResourceStatus {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .arg("--nats-url")
        .arg(system.nats.url())
        .args(["status", "--worker", worker])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn allocations(pairs: &[(&str, u32)]) -> BTreeMap<String, Vec<u32>> {
    pairs
        .iter()
        .map(|(job, gpu)| ((*job).to_owned(), vec![*gpu]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gpu_jobs_get_disjoint_gpus_and_a_third_waits_until_one_ends() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS);
    let _worker = gpu_worker(&system, "g1", &smi);
    let first = launch_running(&system, &gpu_job(&system, "first", 1)).await;
    let second = launch_running(&system, &gpu_job(&system, "second", 1)).await;
    let (a, b) = (indices(&first), indices(&second));
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_ne!(a, b, "two jobs got the same GPU");
    assert_eq!(devices_seen(&system, "first").await, a[0].to_string());
    assert_eq!(devices_seen(&system, "second").await, b[0].to_string());
    let uuid = &first.gpus.as_ref().unwrap()[0].uuid;
    assert_eq!(uuid.as_deref(), Some(format!("GPU-test-{}", a[0]).as_str()));
    // The record says it too.
    let record = system.client.status("first").await.unwrap();
    assert_eq!(record.gpus, first.gpus);

    let status = resources_of(&system.client, "g1").await;
    assert_eq!(status, status_from_the_cli(&system, "g1").await);
    assert_eq!(status.policy, "gpu");
    assert_eq!(status.gpus.len(), 2);
    assert_eq!(status.gpus[0].memory_mb, Some(16384));
    assert_eq!(status.free, Vec::<u32>::new());
    assert_eq!(
        status.allocations,
        allocations(&[("first", a[0]), ("second", b[0])])
    );

    let third = gpu_job(&system, "third", 1);
    system.client.launch(&third).await.unwrap();
    assert_stays_waiting(&system, "third").await;
    release(&system, "first");
    let events = system.events_until_terminal("first").await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    let third = running(&system, "third").await;
    assert_eq!(
        indices(&third),
        a,
        "the third job gets the GPU that came free"
    );
    assert_eq!(devices_seen(&system, "third").await, a[0].to_string());
    end_all(&system, &["second", "third"]).await;
    let status = resources_of(&system.client, "g1").await;
    assert_eq!(status.free, vec![0, 1]);
    assert!(status.allocations.is_empty(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_more_gpus_than_the_pool_has_ends_unschedulable_within_its_start_s() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS);
    let _worker = gpu_worker(&system, "g1", &smi);
    let mut request = gpu_job(&system, "greedy", 3);
    request.timeouts = Some(Timeouts {
        start_s: Some(60),
        run_s: None,
    });
    let published = tokio::time::Instant::now();
    let events = system.run(&request).await;
    assert!(
        published.elapsed() < Duration::from_secs(60),
        "it waited its whole start_s"
    );
    assert_eq!(states(&events), ["error"]);
    let end = &events[0];
    assert_eq!(end.reason.as_deref(), Some("Unschedulable"));
    let message = end.message.as_deref().unwrap();
    assert!(message.contains("asked for 3 GPUs"), "{message}");
    assert!(
        message.contains("this worker has 2 GPUs (0: 16384 MiB, 1: 16384 MiB)"),
        "{message}"
    );
    assert_eq!(end.return_code, Some(104));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_could_fit_but_finds_no_free_gpu_ends_unschedulable_after_its_start_s() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS[..1]);
    let _worker = gpu_worker(&system, "g1", &smi);
    launch_running(&system, &gpu_job(&system, "holder", 1)).await;
    let mut waiting = gpu_job(&system, "waiting", 1);
    waiting.timeouts = Some(Timeouts {
        start_s: Some(2),
        run_s: None,
    });
    let events = system.run(&waiting).await;
    assert_eq!(states(&events), ["error"]);
    assert_eq!(events[0].reason.as_deref(), Some("Unschedulable"));
    let message = events[0].message.as_deref().unwrap();
    assert!(message.contains("within its start_s of 2 s"), "{message}");
    assert!(
        message.contains("asked for 1 GPU; this worker has 1 GPU (0: 16384 MiB), 0 free"),
        "{message}"
    );
    assert!(!system.path("waiting.devices").exists(), "the job ran");
    release(&system, "holder");
    system.events_until_terminal("holder").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_host_hands_out_the_gpus_given_without_any_nvidia_smi() {
    let system = System::without_worker(|_| {}).await;
    let empty = system.path("no-smi");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(
        std::process::Command::new("nvidia-smi").output().is_err(),
        "this test needs a host without nvidia-smi"
    );
    let data_dir = system.path("data-blind");
    let _worker = system.spawn_worker_process(
        "blind",
        &data_dir,
        &[
            ("FLARE_RESOURCE_POLICY", "gpu"),
            ("FLARE_IGNORE_HOST", "true"),
            ("FLARE_GPUS", "2,5"),
            ("FLARE_GPU_MEMORY_GIB", "40"),
        ],
    );
    let first = launch_running(&system, &gpu_job(&system, "one", 1)).await;
    let second = launch_running(&system, &gpu_job(&system, "two", 1)).await;
    assert_eq!((indices(&first), indices(&second)), (vec![2], vec![5]));
    assert_eq!(first.gpus.as_ref().unwrap()[0].uuid, None);
    assert_eq!(devices_seen(&system, "one").await, "2");
    assert_eq!(devices_seen(&system, "two").await, "5");
    let status = resources_of(&system.client, "blind").await;
    assert!(status.ignore_host);
    assert_eq!(status.gpus[0].memory_mb, Some(40 * 1024));
    // A job asking for none gets none, explicitly.
    let none = launch_running(&system, &gpu_job(&system, "none", 0)).await;
    assert_eq!(none.gpus, Some(Vec::new()));
    assert_eq!(devices_seen(&system, "none").await, "");
    end_all(&system, &["one", "two", "none"]).await;
}

/// Runs `flare-launcher worker` with `env` and returns its exit status and
/// standard error, once it has exited.
async fn worker_that_must_refuse(system: &System, env: &[(&str, &str)]) -> (bool, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .envs(env.iter().copied())
        .arg("--nats-url")
        .arg(system.nats.url())
        .args(["worker", "--worker-id", "refused", "--data-dir"])
        .arg(system.path("data-refused"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WORKER_ANSWER_TIMEOUT, run)
        .await
        .expect("the worker exits")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_worker_told_to_use_gpus_the_host_lacks_refuses_to_start_and_says_why() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS);
    let path = path_with(&smi);
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "nvidia-smi, which could not be run"),
        (
            &[("PATH", &path), ("FLARE_GPUS", "0,3")],
            "--gpus names GPU 3 that this host does not have (it has 0,1)",
        ),
        (
            &[("PATH", &path), ("FLARE_GPU_MEMORY_GIB", "32")],
            "more than GPU 0 has (16384 MiB)",
        ),
    ];
    for (env, why) in cases {
        let mut env = env.to_vec();
        env.push(("FLARE_RESOURCE_POLICY", "gpu"));
        let (ok, said) = worker_that_must_refuse(&system, &env).await;
        assert!(!ok, "{env:?}: it started");
        assert!(said.contains(why), "{env:?}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ended_by_terminate_frees_its_gpu() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS[1..]);
    let _worker = gpu_worker(&system, "g1", &smi);
    let holder = launch_running(&system, &gpu_job(&system, "holder", 1)).await;
    assert_eq!(indices(&holder), [1]);
    system
        .client
        .launch(&gpu_job(&system, "next", 1))
        .await
        .unwrap();
    assert_stays_waiting(&system, "next").await;
    let reply = system.client.terminate("holder", Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal("holder").await;
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    let next = running(&system, "next").await;
    assert_eq!(indices(&next), [1]);
    release(&system, "next");
    system.events_until_terminal("next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_while_gpu_jobs_run_does_not_give_their_gpus_again() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS);
    let mut worker = gpu_worker(&system, "phoenix", &smi);
    let first = launch_running(&system, &gpu_job(&system, "first", 1)).await;
    let second = launch_running(&system, &gpu_job(&system, "second", 1)).await;
    worker.kill().await.unwrap();

    let _worker = gpu_worker(&system, "phoenix", &smi);
    let status = resources_of(&system.client, "phoenix").await;
    assert_eq!(
        status.allocations,
        allocations(&[
            ("first", indices(&first)[0]),
            ("second", indices(&second)[0])
        ])
    );
    system
        .client
        .launch(&gpu_job(&system, "third", 1))
        .await
        .unwrap();
    assert_stays_waiting(&system, "third").await;
    release(&system, "second");
    let events = system.events_until_terminal("second").await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    let third = running(&system, "third").await;
    assert_eq!(indices(&third), indices(&second));
    end_all(&system, &["first", "third"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_one_gpu_workers_run_two_one_gpu_jobs_at_once_one_each() {
    let system = System::without_worker(|_| {}).await;
    let smi = fake_nvidia_smi(&system, "smi", &TWO_GPUS[..1]);
    let _left = gpu_worker(&system, "left", &smi);
    let one = launch_running(&system, &gpu_job(&system, "one", 1)).await;
    assert_eq!((one.worker.as_str(), indices(&one)), ("left", vec![0]));
    // The second comes while only the full worker is there: it hands the
    // request back until the other worker comes and takes it.
    system
        .client
        .launch(&gpu_job(&system, "two", 1))
        .await
        .unwrap();
    let _right = gpu_worker(&system, "right", &smi);
    let two = running(&system, "two").await;
    assert_eq!((two.worker.as_str(), indices(&two)), ("right", vec![0]));
    end_all(&system, &["one", "two"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_runs_everything_it_has_slots_for() {
    let system = System::start_with(|config| config.max_jobs = 3).await;
    let jobs = ["big-1", "big-2", "big-3"];
    for job in jobs {
        let event = launch_running(&system, &gpu_job(&system, job, 4)).await;
        assert_eq!(event.gpus, None, "best-effort counts nothing");
        assert_eq!(devices_seen(&system, job).await, "unset");
    }
    let status = resources_of(&system.client, "w1").await;
    assert_eq!(status.policy, "best-effort");
    assert!(status.gpus.is_empty());
    // The slots are full: the next waits for one, whatever it asks.
    system
        .client
        .launch(&gpu_job(&system, "none", 0))
        .await
        .unwrap();
    assert_stays_waiting(&system, "none").await;
    release(&system, "big-1");
    system.events_until_terminal("big-1").await;
    running(&system, "none").await;
    assert_eq!(
        devices_seen(&system, "none").await,
        "",
        "gpus: 0 means none, explicitly"
    );
    end_all(&system, &["big-2", "big-3", "none"]).await;
}
