//! Jobs cannot get at the worker's secrets, end to end over a real nats-server with
//! the worker binary as its own process: a job user's and a same-user job's view of
//! `/proc`, the job user's identity, capabilities and start-up refusals, the job
//! environment policy, and the warning about secrets given as flags.
//!
//! Switching users needs root: a build as another user ignores the tests that do
//! (never in CI).

use crate::common::processes::{assert_root, older_supervisor, supervisor_dir};
use crate::common::system::{JOB_TIMEOUT, System, sh};
use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::{JobEvent, LaunchRequest};
use nix::unistd::User;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

const BUILT_BINARY: &str = env!("CARGO_BIN_EXE_flare-launcher");

/// The binary, in a folder every user may enter: the build's own folder may be
/// closed to `nobody` (a checkout in a private temporary directory), and a worker
/// run as `nobody` runs its supervisor from its own path.
///
/// One folder per build, shared by the test processes (a hard link where the file
/// system allows, else a copy); the folders of earlier builds of the same
/// checkout go when a new one is made, so repeated runs leave one behind at most.
fn binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let meta = std::fs::metadata(BUILT_BINARY).unwrap();
        let key = |parts: &dyn Fn(&mut DefaultHasher)| {
            let mut hasher = DefaultHasher::new();
            parts(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        let checkout = key(&|h| BUILT_BINARY.hash(h));
        let build = key(&|h| (meta.len(), meta.modified().unwrap()).hash(h));
        let prefix = format!("flare-launcher-bin-{checkout}-");
        let dir = Path::new("/tmp").join(format!("{prefix}{build}"));
        let path = dir.join("flare-launcher");
        if !path.exists() {
            let staging = tempfile::Builder::new()
                .prefix("flare-launcher-staging")
                .tempdir_in("/tmp")
                .unwrap();
            std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let staged = staging.path().join("flare-launcher");
            if std::fs::hard_link(BUILT_BINARY, &staged).is_err() {
                std::fs::copy(BUILT_BINARY, &staged).unwrap();
            }
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Another test process may have made it meanwhile: then that one is used.
            if std::fs::rename(staging.path(), &dir).is_ok() {
                let _ = staging.keep();
                for old in std::fs::read_dir("/tmp").unwrap().flatten() {
                    let name = old.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with(&prefix) && old.path() != dir {
                        let _ = std::fs::remove_dir_all(old.path());
                    }
                }
            }
        }
        path.to_str().unwrap().to_owned()
    })
}
/// `nobody`'s ids on Linux distributions.
const NOBODY: u32 = 65534;

/// Whether `setpriv` (util-linux) is installed; says so loudly when it is not.
fn have_setpriv(test: &str) -> bool {
    let found = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        eprintln!("{test}: setpriv (util-linux) is not installed, part of the test is SKIPPED");
    }
    found
}

/// A worker binary running as its own process against a test's nats-server.
struct WorkerProcess {
    child: Child,
    stderr: PathBuf,
}

/// How to start a [`WorkerProcess`].
#[derive(Default)]
struct WorkerSetup<'a> {
    /// Variables added to the worker's environment.
    env: &'a [(&'a str, &'a str)],
    /// Flags after `worker`.
    args: &'a [&'a str],
    /// Run the worker itself as `nobody`.
    as_nobody: bool,
    /// Run the worker through this `setpriv` command line.
    setpriv: &'a [&'a str],
}

impl WorkerProcess {
    /// Starts the worker binary on `system`'s server with `data_dir`.
    fn spawn(system: &System, data_dir: &Path, setup: WorkerSetup) -> WorkerProcess {
        let stderr = system.path("worker.stderr");
        let mut command = match setup.setpriv {
            [] => Command::new(binary()),
            args => {
                let mut command = Command::new("setpriv");
                command.args(args).arg(binary());
                command
            }
        };
        command
            .envs(setup.env.iter().copied())
            .arg("--nats-url")
            .arg(system.nats.url())
            .args(["worker", "--worker-id", "secrets", "--data-dir"])
            .arg(data_dir)
            .args(setup.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true);
        if setup.as_nobody {
            command.uid(NOBODY).gid(NOBODY);
        }
        let child = command.spawn().expect("the worker binary starts");
        WorkerProcess { child, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the worker runs")
    }

    /// Runs `request` to its end; fails at once, with the worker's log, when the
    /// worker exits instead.
    async fn run(&mut self, system: &System, request: &LaunchRequest) -> Vec<JobEvent> {
        tokio::select! {
            events = system.run(request) => events,
            status = self.child.wait() => panic!(
                "the worker exited ({status:?}):\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            ),
        }
    }
}

/// A secret value no other process on the machine holds.
fn unique_token() -> String {
    format!("tok-{}", flare_launcher::protocol::random_suffix(24))
}

/// A job that prints its user and groups, every `/proc/*/environ` it can read
/// holding `token`, and whether its parent's (the worker's) environment is readable.
fn snoop(job_id: &str, token: &str) -> LaunchRequest {
    let script = r#"id -u; id -G
for f in /proc/[0-9]*/environ; do
  grep -q -a -F -e "$1" "$f" 2>/dev/null && echo "token in $f"
done
if cat /proc/$PPID/environ >/dev/null 2>&1; then echo "parent readable"; else echo "parent unreadable"; fi"#;
    LaunchRequest::new(
        job_id,
        ["sh", "-c", script, "sh", token].map(String::from).to_vec(),
    )
}

/// A job's log, in whichever day's directory it is.
fn log_of(data_dir: &Path, job_id: &str) -> String {
    let days = std::fs::read_dir(data_dir.join("logs")).unwrap();
    days.flatten()
        .find_map(|day| std::fs::read_to_string(day.path().join(format!("{job_id}.log"))).ok())
        .unwrap_or_else(|| panic!("no log of {job_id}"))
}

fn environ_holds(pid: u32, value: &str) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&b| b == 0)
        .any(|entry| entry.ends_with(value.as_bytes()))
}

/// A data directory that `uid` owns, for a worker running as `uid`.
fn data_dir_owned_by(system: &System, uid: u32) -> PathBuf {
    std::fs::set_permissions(system.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data_dir = system.path("data");
    std::fs::create_dir(&data_dir).unwrap();
    chown(&data_dir, Some(uid), Some(uid)).unwrap();
    data_dir
}

/// Starts a worker holding a token in its environment, runs [`snoop`] as nobody
/// (the worker's user or the job user) and asserts it found nothing. Returns the
/// worker, still running.
async fn assert_a_nobody_job_finds_no_token(
    system: &System,
    data_dir: &Path,
    setup: WorkerSetup<'_>,
) -> WorkerProcess {
    let token = unique_token();
    let env = [("FLARE_NATS_TOKEN", token.as_str())];
    let mut worker = WorkerProcess::spawn(system, data_dir, WorkerSetup { env: &env, ..setup });
    let events = worker.run(system, &snoop("snoop", &token)).await;
    assert!(
        environ_holds(worker.pid(), &token),
        "the secret is there to be found"
    );
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    assert_eq!(
        log_of(data_dir, "snoop"),
        format!("{NOBODY}\n{NOBODY}\nparent unreadable\n")
    );
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_job_user_finds_the_workers_token_in_no_environment() {
    assert_root("switching users");
    let system = System::without_worker(|_| {}).await;
    // A supplementary group of the worker's, which the job must not keep.
    let with_a_group: &[&str] = &["--groups=4242"];
    let setup = WorkerSetup {
        args: &["--job-user", "nobody"],
        setpriv: if have_setpriv("a_job_user_finds_the_workers_token_in_no_environment") {
            with_a_group
        } else {
            &[]
        },
        ..WorkerSetup::default()
    };
    assert_a_nobody_job_finds_no_token(&system, &system.path("data"), setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_job_of_the_workers_own_user_cannot_read_its_environment() {
    assert_root("switching users");
    let system = System::without_worker(|_| {}).await;
    let data_dir = data_dir_owned_by(&system, NOBODY);
    let setup = WorkerSetup {
        as_nobody: true,
        ..WorkerSetup::default()
    };
    let worker = assert_a_nobody_job_finds_no_token(&system, &data_dir, setup).await;
    // Non-dumpable: the kernel hands the worker's /proc files to root.
    let pid = worker.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&format!("Uid:\t{NOBODY}\t"))),
        "{status}"
    );
    let environ = std::fs::metadata(format!("/proc/{pid}/environ")).unwrap();
    assert_eq!((environ.uid(), environ.gid()), (0, 0));
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_job_runs_as_the_job_user_with_its_identity_and_writes_its_log() {
    assert_root("switching users");
    let system =
        System::start_with(|config| config.job_user = Some("nobody".parse().unwrap())).await;
    let data_dir = &system.config.data_dir;
    let mut request = sh(
        "as-nobody",
        r#"id -u; id -g; id -G; echo "$HOME $USER $LOGNAME""#,
    );
    request.env.insert("LOGNAME".into(), "chosen".into());
    let events = system.run(&request).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    let home = User::from_name("nobody").unwrap().unwrap().dir;
    assert_eq!(
        log_of(data_dir, "as-nobody"),
        format!(
            "{NOBODY}\n{NOBODY}\n{NOBODY}\n{} nobody chosen\n",
            home.display()
        )
    );
    // nobody could not have created the log: only root may write in the data directory.
    for dir in [data_dir.clone(), data_dir.join("logs")] {
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o022), (0, 0), "{dir:?}");
    }
}

/// Runs two jobs at once on a worker with the job user `nobody` that
/// `configure` adjusts: the first waits, the second probes it with `kill -0`;
/// returns both jobs' user ids and whether the probe reached the first.
async fn probe_a_neighbour(configure: impl FnOnce(&mut WorkerConfig)) -> (u32, u32, bool) {
    let system = System::start_with(|config| {
        config.job_user = Some("nobody".parse().unwrap());
        configure(config);
    })
    .await;
    let shared = system.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (pid, go) = (shared.join("pid"), shared.join("go"));
    let waiting = sh(
        "waiting",
        &format!(
            "id -u > {pid}.tmp; echo $$ >> {pid}.tmp; mv {pid}.tmp {pid}; while [ ! -e {go} ]; do sleep 0.05; done",
            pid = pid.display(),
            go = go.display()
        ),
    );
    system.launch_until_running(&waiting).await;
    tokio::time::timeout(JOB_TIMEOUT, async {
        while !pid.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the waiting job names itself");
    let probe = sh(
        "probe",
        &format!(
            "id -u; if kill -0 $(tail -n 1 {pid}); then echo reached; else echo refused; fi; touch {go}",
            pid = pid.display(),
            go = go.display()
        ),
    );
    let events = system.run(&probe).await;
    assert_eq!(
        events.last().unwrap().state.as_str(),
        "succeeded",
        "{events:?}"
    );
    let waited = system.events_until_terminal("waiting").await;
    assert_eq!(
        waited.last().unwrap().state.as_str(),
        "succeeded",
        "{waited:?}"
    );
    let first: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let said = log_of(&system.config.data_dir, "probe");
    let mut lines = said.lines();
    let second: u32 = lines.next().unwrap().parse().unwrap();
    (first, second, lines.next() == Some("reached"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn jobs_under_uids_of_their_own_cannot_signal_each_other() {
    assert_root("switching users");
    // One job user for all: each job can signal the other.
    let (first, second, reached) = probe_a_neighbour(|_| {}).await;
    assert_eq!((first, second, reached), (NOBODY, NOBODY, true));
    // An id of its own for each job: neither can.
    let (first, second, reached) = probe_a_neighbour(|config| {
        config.job_uids = Some("3000000-3000009".parse().unwrap());
        config.max_jobs = 10;
    })
    .await;
    assert!((3_000_000..=3_000_009).contains(&first), "{first}");
    assert!((3_000_000..=3_000_009).contains(&second), "{second}");
    assert_ne!(first, second);
    assert!(!reached, "a job signalled another under another id");
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_supervisor_that_would_not_give_jobs_uids_of_their_own_stops_the_worker() {
    assert_root("switching users");
    let system = System::without_worker(|config| {
        config.job_user = Some("nobody".parse().unwrap());
        config.job_uids = Some("3000000-3000099".parse().unwrap());
    })
    .await;
    // Where the worker looks for its supervisor, one that answers as a
    // supervisor from before --job-uids: the jobs, and nothing about ids.
    let dir = supervisor_dir(&system.config.data_dir, &system.config.worker_id);
    let (older, _) = older_supervisor(&dir);
    let message = system.worker_refusal().await;
    assert!(
        message.contains("would not run jobs under user ids of their own"),
        "{message}"
    );
    older.abort();
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_job_user_cannot_work_in_a_directory_it_could_not_reach() {
    assert_root("switching users");
    let system =
        System::start_with(|config| config.job_user = Some("nobody".parse().unwrap())).await;
    // Open itself, but under a parent only root may pass through.
    let private = system.path("private");
    let open = private.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut request = sh("trespass", "ls -a . > seen");
    request.workdir = Some(open.display().to_string());
    let events = system.run(&request).await;
    let last = events.last().unwrap();
    assert_eq!(last.state.as_str(), "error", "{events:?}");
    assert_eq!(last.reason.as_deref(), Some("SpawnFailed"), "{last:?}");
    let message = last.message.as_deref().unwrap();
    assert!(
        message.contains(&open.display().to_string()) && message.contains("Permission denied"),
        "{message}"
    );
    assert!(!open.join("seen").exists());
    // The same directory made reachable: the job works in it.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    request.job_id = "visit".into();
    let events = system.run(&request).await;
    assert_eq!(
        events.last().unwrap().state.as_str(),
        "succeeded",
        "{events:?}"
    );
    assert!(open.join("seen").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(not_root, no_setpriv),
    ignore = "switches users, which needs root, with setpriv (util-linux)"
)]
async fn jobs_of_a_worker_with_capabilities_instead_of_root_get_none() {
    assert_root("switching users");
    let system = System::without_worker(|_| {}).await;
    let worker_uid = NOBODY - 1;
    let data_dir = data_dir_owned_by(&system, worker_uid);
    let ids = [
        format!("--reuid={worker_uid}"),
        format!("--regid={worker_uid}"),
    ];
    let mut worker = WorkerProcess::spawn(
        &system,
        &data_dir,
        WorkerSetup {
            args: &["--job-user", "nobody"],
            setpriv: &[
                &ids[0],
                &ids[1],
                "--clear-groups",
                "--inh-caps=+setuid,+setgid",
                "--ambient-caps=+setuid,+setgid",
                "--no-new-privs",
            ],
            ..WorkerSetup::default()
        },
    );
    let request = sh(
        "capless",
        "id -u; grep -E '^Cap(Prm|Eff|Amb):' /proc/self/status",
    );
    let events = worker.run(&system, &request).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    assert_eq!(
        log_of(&data_dir, "capless"),
        format!(
            "{NOBODY}\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n"
        )
    );
}

/// Runs the binary with `args` (and `env`) to its end, which must come soon.
async fn run_binary(args: &[&str], env: &[(&str, &str)], as_nobody: bool) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if as_nobody {
        command.uid(NOBODY).gid(NOBODY);
    }
    tokio::time::timeout(JOB_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} still runs after {JOB_TIMEOUT:?}"))
        .expect("the binary runs")
}

/// Asserts the binary failed to start (status 2) saying `expected` on stderr.
fn assert_refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

#[tokio::test]
#[cfg_attr(not_root, ignore = "switches users, which needs root")]
async fn a_worker_that_cannot_switch_users_refuses_a_job_user() {
    assert_root("switching users");
    let data = tempfile::tempdir().unwrap();
    let output = run_binary(
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "worker",
            "--job-user",
            "root",
            "--data-dir",
        ]
        .into_iter()
        .chain(data.path().to_str())
        .collect::<Vec<_>>(),
        &[],
        true,
    )
    .await;
    assert_refused(&output, "needs a worker that may switch users");
    assert_refused(&output, "CAP_SETUID and CAP_SETGID");
}

#[tokio::test]
async fn an_unknown_job_user_is_a_start_up_error() {
    let output = run_binary(
        &["--nats-url", "nats://127.0.0.1:1", "worker"],
        &[("FLARE_JOB_USER", "no-such-user-x7")],
        false,
    )
    .await;
    assert_refused(&output, "job user \"no-such-user-x7\" does not exist");
}

/// The worker binary with the environment `env` and the flags `args` runs one
/// job printing `$AWS_SECRET $KEEP_ME $OTHER` (`-` for unset); returns its output.
async fn job_environment(env: &[(&str, &str)], args: &[&str]) -> String {
    let system = System::without_worker(|_| {}).await;
    let data_dir = system.path("data");
    let worker_env: Vec<(&str, &str)> = [
        ("AWS_SECRET", "aws"),
        ("KEEP_ME", "kept"),
        ("OTHER", "other"),
    ]
    .into_iter()
    .chain(env.iter().copied())
    .collect();
    let mut worker = WorkerProcess::spawn(
        &system,
        &data_dir,
        WorkerSetup {
            env: &worker_env,
            args,
            ..WorkerSetup::default()
        },
    );
    let request = sh(
        "envjob",
        r#"echo "${AWS_SECRET:--} ${KEEP_ME:--} ${OTHER:--}""#,
    );
    let events = worker.run(&system, &request).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    log_of(&data_dir, "envjob")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_list_keeps_matching_variables_from_jobs() {
    let output = job_environment(&[], &["--job-env-deny", "AWS_*,OTHER"]).await;
    assert_eq!(output, "- kept -\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_from_the_environment_passes_only_its_matches() {
    let output = job_environment(&[("FLARE_JOB_ENV_ALLOW", "PATH,KEEP_*")], &[]).await;
    assert_eq!(output, "- kept -\n");
}

#[tokio::test]
async fn secrets_given_as_flags_are_warned_about_and_from_the_environment_not() {
    // --max-jobs 0 stops the worker right after the warnings, before any connection.
    let warning = "on the command line holds a secret, which every local user can read there";
    let output = run_binary(
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "worker",
            "--nats-token",
            "x",
            "--max-jobs",
            "0",
        ],
        &[],
        false,
    )
    .await;
    assert_refused(&output, "max jobs");
    assert_refused(&output, &format!("--nats-token {warning}"));
    assert_refused(&output, "set FLARE_NATS_TOKEN in the environment");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(warning).count(), 1, "once: {stderr}");

    let output = run_binary(
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "worker",
            "--max-jobs",
            "0",
        ],
        &[("FLARE_NATS_TOKEN", "x")],
        false,
    )
    .await;
    assert_refused(&output, "max jobs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(warning), "{stderr}");
}

#[tokio::test]
async fn dev_warns_about_a_password_given_as_a_flag() {
    // dev finds this server and uses it; --max-jobs 0 then stops its worker.
    let nats = crate::common::nats_server::NatsServer::start();
    let url = nats.url();
    let data = tempfile::tempdir().unwrap();
    let output = run_binary(
        &[
            "--nats-url",
            &url,
            "--nats-user",
            "u",
            "--nats-password=p",
            "dev",
            "--max-jobs",
            "0",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
        false,
    )
    .await;
    assert_refused(&output, "max jobs");
    assert_refused(
        &output,
        "--nats-password on the command line holds a secret",
    );
    assert_refused(&output, "set FLARE_NATS_PASSWORD in the environment");
}
