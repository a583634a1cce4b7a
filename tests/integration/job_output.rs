//! A job's output read from any host with `flare-launcher logs`: followed while
//! its process runs and to its end, read again after the end, its last lines;
//! a Docker job's; followed across a hand-over to another worker; a large output
//! read without the worker's memory growing; readers that stop cost the worker
//! nothing; malformed requests get error replies and the worker carries on.

use crate::common::docker::{docker_worker, in_container, test_image, unique};
use crate::common::pool::{pool_until, record_until, signal};
use crate::common::system::{System, sh};
use flare_launcher::client::ClientError;
use flare_launcher::client::output::OutputReader;
use flare_launcher::protocol::{ErrorReply, MAX_OUTPUT_CHUNK, OutputChunk};
use nix::sys::signal::Signal;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn logs_command(system: &System, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flare-launcher"));
    command
        .arg("--nats-url")
        .arg(system.nats.url())
        .arg("logs")
        .args(args)
        .kill_on_drop(true);
    command
}

async fn logs(system: &System, args: &[&str]) -> String {
    let output: Output = logs_command(system, args).output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn numbered(from: u32, to: u32) -> String {
    (from..=to).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_jobs_output_is_followed_to_its_end_then_read_again_and_tailed() {
    let system = System::start().await;
    let go = system.path("go");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.05; done; for i in $(seq 1 200); do echo line $i; done",
        go.display()
    );
    system.launch_until_running(&sh("followed", &script)).await;
    let mut follower = Follower::start(&system, "followed");
    // The first line comes while the job still runs (it waits for `go`).
    follower.until("first").await;
    // A quiet spell longer than a follower's request is held.
    tokio::time::sleep(Duration::from_secs(6)).await;
    std::fs::write(&go, "").unwrap();
    let whole = format!("first\n{}", numbered(1, 200));
    assert_eq!(follower.rest().await, whole);

    assert_eq!(logs(&system, &["followed"]).await, whole);
    assert_eq!(logs(&system, &["followed", "-f"]).await, whole);
    assert_eq!(
        logs(&system, &["followed", "--tail", "3"]).await,
        numbered(198, 200)
    );
    assert_eq!(logs(&system, &["followed", "--tail", "0"]).await, "");
    assert_eq!(logs(&system, &["followed", "--tail", "1000"]).await, whole);

    // A last line without its newline counts as a line.
    system.run(&sh("unended", "printf 'a\\nb\\nc'")).await;
    assert_eq!(logs(&system, &["unended", "--tail", "2"]).await, "b\nc");
}

/// Sends `payload` to the worker's output subject and returns its error reply.
async fn refused(system: &System, payload: &str) -> ErrorReply {
    let subject = system.client.subjects().worker_logs("w1");
    let answer = system
        .client
        .nats()
        .request(subject, payload.to_owned().into())
        .await
        .unwrap();
    let code = answer
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"));
    assert!(code.is_some(), "{payload}: {answer:?}");
    serde_json::from_slice(&answer.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_output_requests_get_error_replies_and_the_worker_carries_on() {
    let system = System::start().await;
    system.run(&sh("said", "echo hello")).await;
    let long = format!(r#"{{"job_id":"said","pad":"{}"}}"#, "x".repeat(10_000));
    for (payload, kind) in [
        ("", "bad_request"),
        ("not json", "bad_request"),
        (r#"{"job_id":"../../etc/passwd"}"#, "bad_request"),
        (r#"{"job_id":"said","offset":-1}"#, "bad_request"),
        (r#"{"job_id":"said","wait_ms":3600000}"#, "bad_request"),
        (r#"{"job_id":"said","follow":true}"#, "bad_request"),
        (long.as_str(), "bad_request"),
        (r#"{"job_id":"said","offset":7}"#, "bad_request"),
        (r#"{"job_id":"nobody"}"#, "not_found"),
    ] {
        let reply = refused(&system, payload).await;
        println!(
            "{}: {} {}",
            &payload[..payload.len().min(40)],
            reply.error,
            reply.message
        );
        assert_eq!(reply.error, kind, "{payload}: {}", reply.message);
        assert!(reply.message.len() <= 4096 + 64);
    }
    // The worker answers as before; the offset of the output's end is fine.
    let mut reader = OutputReader::new(&system.client, "said");
    let piece = reader.read(0, 1024, Duration::ZERO).await.unwrap();
    assert_eq!((&piece.data[..], piece.complete), (&b"hello\n"[..], true));
    let end = reader.read(6, 1024, Duration::ZERO).await.unwrap();
    assert!(end.data.is_empty() && end.complete);
    assert!(matches!(
        reader.read(7, 1024, Duration::ZERO).await,
        Err(ClientError::Refused(reply)) if reply.error == "bad_request"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_who_stop_cost_the_worker_nothing() {
    let system = System::start().await;
    let script = "head -c 3000000 /dev/zero | tr '\\0' x; echo; sleep 600";
    system.launch_until_running(&sh("chatty", script)).await;
    let mut reader = OutputReader::new(&system.client, "chatty");
    let size = loop {
        let piece = reader.read(0, 0, Duration::ZERO).await.unwrap();
        if piece.size >= 3_000_001 {
            break piece.size;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Readers that ask to be held for output that is not there, more than the
    // worker answers at once, and go away.
    let subject = system.client.subjects().worker_logs("w1");
    let held = serde_json::json!({"job_id": "chatty", "offset": size, "wait_ms": 10_000});
    for _ in 0..30 {
        let nats = async_nats::connect(system.nats.url()).await.unwrap();
        let inbox = nats.new_inbox();
        nats.publish_with_reply(subject.clone(), inbox, held.to_string().into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        drop(nats);
    }
    // A reader that reads one chunk and stops gets nothing it did not ask for.
    let listener = async_nats::connect(system.nats.url()).await.unwrap();
    let request = serde_json::json!({"job_id": "chatty", "offset": 0});
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        listener.request(subject.clone(), request.to_string().into()),
    )
    .await
    .expect("answered at once while others are held")
    .unwrap();
    let chunk: OutputChunk = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(chunk.next_offset, 65536);
    let received = listener
        .statistics()
        .in_messages
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        listener
            .statistics()
            .in_messages
            .load(std::sync::atomic::Ordering::Relaxed),
        received,
        "nothing comes unasked"
    );
    system.client.terminate("chatty", Some(0)).await.unwrap();
    system.events_until_terminal("chatty").await;
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_streams_without_the_workers_memory_growing() {
    const SIZE: u64 = 300 * 1024 * 1024;
    let system = System::without_worker(|_| {}).await;
    let worker = system.spawn_worker_process("big", &system.path("big"), &[]);
    let pid = worker.id().unwrap();
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&"big".to_owned())
    })
    .await;
    const LINE: &str = "a line of output, the same every time";
    let script = format!("yes '{LINE}' | head -c {SIZE}");
    system.run(&sh("large", &script)).await;
    let before = rss(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let started = Instant::now();
    let mut reader = OutputReader::new(&system.client, "large");
    let (mut offset, mut lines) = (0, 0usize);
    loop {
        let piece = reader
            .read(offset, MAX_OUTPUT_CHUNK, Duration::ZERO)
            .await
            .unwrap();
        lines += piece.data.iter().filter(|&&b| b == b'\n').count();
        offset = piece.next_offset;
        if piece.complete {
            break;
        }
    }
    let took = started.elapsed();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "read {offset} bytes in {took:?} ({:.0} MiB/s); worker RSS {} MiB before, peak {} MiB",
        offset as f64 / 1048576.0 / took.as_secs_f64(),
        before / 1048576,
        peak / 1048576
    );
    assert_eq!(offset, SIZE);
    assert_eq!(lines as u64, SIZE / (LINE.len() as u64 + 1));
    assert!(
        peak < before + 32 * 1048576,
        "RSS grew from {before} to {peak}"
    );
    drop(worker);
}

/// A follower's output, line by line, as `logs -f` prints it.
struct Follower {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    read: String,
}

impl Follower {
    fn start(system: &System, job_id: &str) -> Follower {
        let mut child = logs_command(system, &[job_id, "-f"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Follower {
            child,
            lines,
            read: String::new(),
        }
    }

    /// Reads lines until `line` comes (within a minute, however slow the
    /// machine: it comes at once when the output is served live).
    async fn until(&mut self, line: &str) {
        tokio::time::timeout(Duration::from_secs(60), self.lines_until(line))
            .await
            .unwrap_or_else(|_| panic!("no {line:?} within a minute after {:?}", self.read));
    }

    async fn lines_until(&mut self, line: &str) {
        loop {
            let next = self.lines.next_line().await.unwrap();
            let next = next.unwrap_or_else(|| panic!("no {line:?} in {:?}", self.read));
            self.read.push_str(&next);
            self.read.push('\n');
            if next == line {
                return;
            }
        }
    }

    /// Reads to the end; returns all that was printed.
    async fn rest(mut self) -> String {
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.read.push_str(&line);
            self.read.push('\n');
        }
        assert!(self.child.wait().await.unwrap().success());
        self.read
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_docker_jobs_output_is_followed_while_it_runs_and_read_after() {
    test_image();
    let system = System::start_with(docker_worker).await;
    let job_id = unique("said");
    // Docker keeps the order within a stream, not across its two.
    let script = "for i in $(seq 1 50); do echo line $i; done; sleep 1; echo oops >&2; sleep 600";
    system
        .launch_until_running(&in_container(&job_id, script))
        .await;
    let mut follower = Follower::start(&system, &job_id);
    // Printed while the container runs.
    follower.until("oops").await;
    system.client.terminate(&job_id, Some(0)).await.unwrap();
    let whole = format!("{}oops\n", numbered(1, 50));
    assert_eq!(follower.rest().await, whole);
    assert_eq!(logs(&system, &[&job_id]).await, whole);
    assert_eq!(
        logs(&system, &[&job_id, "--tail", "2"]).await,
        "line 50\noops\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_followed_docker_job_is_followed_on_across_its_hand_over() {
    test_image();
    let mut system = System::without_worker(|config| {
        docker_worker(config);
        config.lease = Duration::from_secs(3);
    })
    .await;
    let leaving = unique("leaving");
    let leaving_worker = system.spawn_worker_process(
        &leaving,
        &system.path("leaving"),
        &[("FLARE_BACKEND", "docker"), ("FLARE_LEASE_S", "600")],
    );
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&leaving)
    })
    .await;
    let job_id = unique("handed");
    let script = "for i in $(seq 1 80); do echo line $i; sleep 0.2; done";
    system
        .launch_until_running(&in_container(&job_id, script))
        .await;
    let mut follower = Follower::start(&system, &job_id);
    // Read live from the worker that leaves.
    follower.until("line 3").await;
    system.start_worker().await;
    let survivor = system.config.worker_id.clone();
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&survivor)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&leaving_worker, Signal::SIGTERM);
    record_until(&system, &job_id, Duration::from_secs(30), |r| {
        r.worker == survivor
    })
    .await;
    // Every line once, in order, across the two workers.
    assert_eq!(follower.rest().await, numbered(1, 80));
    let events = system.events_until_terminal(&job_id).await;
    assert_eq!(events.last().unwrap().worker, survivor);
    println!(
        "the survivor's log: {:?} bytes",
        logs(&system, &[&job_id]).await.len()
    );
}
