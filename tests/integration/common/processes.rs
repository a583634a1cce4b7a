//! Looking at processes from a test: whether one lives, waiting for it to go,
//! signalling it, the supervisor of a worker's process jobs and what it
//! recorded of them, a stand-in for a supervisor of an older release, a
//! worker process's log, and cutting the link of a worker running in the test to its
//! supervisor, neither killed.

use flare_launcher::supervisor::job_file::{JobEnd, JobFile};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// The supervisor directory of a worker.
pub fn supervisor_dir(data_dir: &Path, worker_id: &str) -> PathBuf {
    data_dir.join("supervisor").join(worker_id)
}

/// Listens in `dir` (a [`supervisor_dir`]) as a supervisor from before job
/// uids and limits: it answers a worker's list with the jobs (none) and nothing
/// else, and every launch with its failure, which it also passes on to the
/// receiver returned.
pub fn older_supervisor(
    dir: &Path,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    std::fs::create_dir_all(dir).unwrap();
    let listener = tokio::net::UnixListener::bind(dir.join("supervisor.sock")).unwrap();
    let (launches, launched) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(request) if request["op"] == "list" => {
                    serde_json::json!({"report": "jobs", "running": []})
                }
                Ok(request) if request["op"] == "launch" => {
                    let job_id = request["job_id"].clone();
                    let _ = launches.send(line);
                    serde_json::json!({"report": "spawn_failed", "job_id": job_id, "error": "launched"})
                }
                _ => continue,
            };
            let mut answer = answer.to_string().into_bytes();
            answer.push(b'\n');
            writer.write_all(&answer).await.unwrap();
        }
    });
    (serving, launched)
}

/// The pid of the supervisor serving `dir` (a [`supervisor_dir`]), if one runs.
pub fn supervisor_of(dir: &Path) -> Option<i32> {
    let wanted: Vec<&[u8]> = vec![b"supervise", b"--dir", dir.as_os_str().as_encoded_bytes()];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
            (args.windows(3).any(|window| window == wanted.as_slice()) && is_alive(pid))
                .then_some(pid)
        })
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

/// Waits until the job's file records its end.
pub async fn wait_for_recorded_end(dir: &Path, job_id: &str) -> JobEnd {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(JobFile { end: Some(end), .. })) = JobFile::read(dir, job_id) {
            return end;
        }
        assert!(Instant::now() < deadline, "{job_id}: no end recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects a worker process's log lines as they come.
pub fn collect_lines(stderr: tokio::process::ChildStderr) -> Arc<Mutex<Vec<String>>> {
    use tokio::io::AsyncBufReadExt;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    lines
}

/// Shuts down every connection this process has to the Unix socket `socket`
/// (the link of a worker running in the test to its supervisor, which both ends
/// then see close); returns how many.
pub fn cut_connections_to(socket: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let mut cut = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str().as_bytes().starts_with(b"socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: a zeroed sockaddr_un is a valid value of it.
        let mut peer: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `peer` and `len` are valid for writes of the lengths given; an
        // fd closed meanwhile only makes the call fail.
        let found =
            unsafe { libc::getpeername(fd, (&raw mut peer).cast::<libc::sockaddr>(), &mut len) };
        if found != 0 || i32::from(peer.sun_family) != libc::AF_UNIX {
            continue;
        }
        let path: Vec<u8> = peer
            .sun_path
            .iter()
            .take_while(|byte| **byte != 0)
            .map(|byte| *byte as u8)
            .collect();
        if Path::new(std::ffi::OsStr::from_bytes(&path)) == socket {
            // SAFETY: plain system call on an fd of this process.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            cut += 1;
        }
    }
    cut
}
