//! The `flare-launcher` command line against a real system: `launch` exits with
//! the job's return code, `status`, `terminate` and `events` print what the
//! protocol says; a worker raises its open-files limit for `--max-jobs`.

use crate::common::system::System;
use std::process::Output;
use tokio::process::Command;

async fn cli(system: &System, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .arg("--nats-url")
        .arg(system.nats.url())
        .args(args)
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_exits_with_the_jobs_return_code() {
    let system = System::start().await;
    for (job_id, script, code, state) in [
        ("cli-ok", "exit 0", 0, "succeeded"),
        ("cli-three", "exit 3", 1, "failed"),
        ("cli-config", "exit 103", 103, "failed"),
    ] {
        let output = cli(
            &system,
            &["launch", "--job-id", job_id, "--", "sh", "-c", script],
        )
        .await;
        assert_eq!(output.status.code(), Some(code), "{job_id}: {output:?}");
        let text = stdout(&output);
        assert!(text.contains(&format!("{job_id} #1 starting")), "{text}");
        assert!(
            text.contains(&format!("#3 {state} return_code={code}")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_takes_a_secret_from_its_environment_and_never_from_its_arguments() {
    let system = System::start().await;
    // The job checks the value against its two halves, so that the whole
    // value is on no command line.
    let (first, second) = ("half-one-", "half-two");
    let launch = |job_id: &'static str, secret: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flare-launcher"));
        command.args([
            "--nats-url",
            &system.nats.url(),
            "launch",
            "--job-id",
            job_id,
        ]);
        command.args(["--secret-env", "CLI_TOKEN", "--env", &format!("A={first}")]);
        command.args(["--env", &format!("B={second}"), "--"]);
        command.args(["sh", "-c", r#"test "$CLI_TOKEN" = "$A$B""#]);
        command.env_remove("CLI_TOKEN");
        if let Some(secret) = secret {
            command.env("CLI_TOKEN", secret);
        }
        command
    };
    let ran = launch("cli-secret", Some(format!("{first}{second}")))
        .output()
        .await
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{ran:?}");
    let record = system.client.status("cli-secret").await.unwrap();
    assert!(!format!("{record:?}").contains(&format!("{first}{second}")));

    let missing = launch("cli-no-secret", None).output().await.unwrap();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("--secret-env CLI_TOKEN"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_terminate_and_events_speak_json() {
    let system = System::start().await;
    let output = cli(
        &system,
        &[
            "launch",
            "--no-follow",
            "--job-id",
            "cli-long",
            "--",
            "sleep",
            "60",
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    system
        .events_until("cli-long", |e| {
            e.state == flare_launcher::state::JobState::Running
        })
        .await;

    let status = cli(&system, &["status", "cli-long"]).await;
    assert!(status.status.success(), "{status:?}");
    let record: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(record["state"], "running");
    assert!(record["backend_ref"]["pid"].as_u64().is_some());

    let terminate = cli(&system, &["terminate", "cli-long", "--grace", "1"]).await;
    assert!(terminate.status.success(), "{terminate:?}");
    let reply: serde_json::Value = serde_json::from_slice(&terminate.stdout).unwrap();
    assert_eq!(reply["accepted"], true);
    system.events_until_terminal("cli-long").await;

    let again = cli(&system, &["terminate", "cli-long"]).await;
    assert_eq!(again.status.code(), Some(1), "not accepted: the job ended");

    let unknown = cli(&system, &["status", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not_found"));

    // `events --all --json` replays; it follows forever, so read what it printed.
    let mut events = Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .args([
            "--nats-url",
            &system.nats.url(),
            "events",
            "cli-long",
            "--all",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(events.stdout.take().unwrap()));
    let mut states = Vec::new();
    while states.len() < 3 {
        let line = tokio::time::timeout(crate::common::system::JOB_TIMEOUT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("an event line");
        let event: flare_launcher::protocol::JobEvent = serde_json::from_str(&line).unwrap();
        states.push(event.state.as_str());
    }
    assert_eq!(states, ["starting", "running", "terminated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_raises_its_open_files_limit_to_what_max_jobs_needs() {
    let system = System::without_worker(|_| {}).await;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("the test's own limit");
    let max_jobs = 2000;
    let script = format!(
        "ulimit -Sn 300 && exec {} --nats-url {} worker --worker-id fd --max-jobs {max_jobs} --data-dir {}",
        env!("CARGO_BIN_EXE_flare-launcher"),
        system.nats.url(),
        system.path("data").display()
    );
    let _worker = Command::new("sh")
        .args(["-c", &script])
        .kill_on_drop(true)
        .spawn()
        .expect("the worker starts");
    // Jobs inherit the worker's limit, so a job can report it.
    let file = system.path("limit");
    let events = system
        .run(&crate::common::system::sh(
            "fd-limit",
            &format!("ulimit -n > {}", file.display()),
        ))
        .await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    let limit: u64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let needed = flare_launcher::worker::fd_limit::needed(max_jobs);
    assert_eq!(limit, needed.min(hard));
}
