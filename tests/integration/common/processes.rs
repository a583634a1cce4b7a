//! Looking at processes from a test: whether one lives, waiting for it to go.

use std::path::Path;
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root, which `what` needs (a build as
/// another user ignores such tests; see `build.rs`).
pub fn assert_root(what: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{what} needs root, and this test does not run as root"
    );
}

/// Whether `pid` names a live process (not gone, not a zombie).
pub fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let after_comm = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            !after_comm.trim_start().starts_with('Z')
        })
        .unwrap_or(false)
}

/// The parent of `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until `pid` is gone; panics after `within`.
pub async fn wait_until_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid a job wrote to `file`, waiting for it to be written.
pub async fn read_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
