//! `flare-launcher dev` end to end: it starts its own nats-server and a worker,
//! jobs launched with the CLI run on them, and SIGTERM stops both.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flare-launcher");

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Kills the dev process if the test ends before it was stopped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(url: &str, argv: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--nats-url", url, "launch", "--"])
        .args(argv)
        .output()
        .expect("run flare-launcher launch")
}

#[test]
fn dev_runs_jobs_and_stops_its_nats_server() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut dev = Dev(Command::new(BIN)
        .args(["--nats-url", &url, "dev", "--data-dir"])
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flare-launcher dev"));
    let stderr = dev.0.stderr.take().expect("piped stderr");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) if line.contains("worker ready") => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "dev did not log \"worker ready\" within 10 s:\n{}",
                seen.join("\n")
            ),
        }
    }

    let failed = launch(&url, &["sh", "-c", "exit 3"]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "exit 3 is EXECUTION_ERROR: {stdout}"
    );
    assert!(stdout.lines().any(|l| l.contains("failed")), "{stdout}");
    let succeeded = launch(&url, &["true"]);
    assert_eq!(
        succeeded.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&succeeded.stdout)
    );

    kill(Pid::from_raw(dev.0.id() as i32), Signal::SIGTERM).expect("SIGTERM dev");
    let status = dev.0.wait().expect("wait for dev");
    assert_eq!(status.code(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepts(port) {
        assert!(
            Instant::now() < deadline,
            "nats-server still listens after dev exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
