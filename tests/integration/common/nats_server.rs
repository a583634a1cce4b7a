//! A real `nats-server` child process for integration tests.
//!
//! Each [`NatsServer`] runs its own server with JetStream on 127.0.0.1, with its own
//! store directory inside a temporary directory that is removed when it is dropped.
//! The binary is `$NATS_SERVER_BIN`, or `nats-server` on `PATH`
//! (`scripts/ensure-nats-server.sh` installs it).
//!
//! Ports: the first start lets the server pick free ports itself (`-1`) and reads
//! them back from the ports file the server writes once its listeners are bound, so
//! tests running in parallel never race for a port. `restart()` then reuses the
//! same ports (retrying for a while if the old socket is not yet released).
//!
//! A [`NatsCluster`] is three such servers joined by cluster routes, JetStream on
//! each: their client and monitoring ports are picked by the servers as above;
//! their route ports are chosen free before they start, since each names the
//! others'.
//!
//! Everything here is blocking and std-only, so it can be used from plain tests and
//! from inside `#[tokio::test]` alike.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a start or restart may take before the harness gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop()` waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// A running (or stopped) `nats-server` owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    /// Extra configuration; `Some` means the server is started with `-c <file>`.
    extra_conf: Option<String>,
    store: PathBuf,
    conf_file: PathBuf,
    log_file: PathBuf,
    ports_dir: PathBuf,
    /// Holds `store/`, `ports/`, `nats.conf` and `server.log`; dropped last.
    _dir: tempfile::TempDir,
}

/// Why one attempt to bring the server up failed.
enum SpawnError {
    /// The listen address was taken by someone else (worth retrying).
    AddrInUse(String),
    Other(String),
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and waits until it is ready.
    pub fn start() -> NatsServer {
        Self::new(None)
    }

    /// Like [`NatsServer::start`], but with a config file holding `extra_conf` (e.g.
    /// an `authorization { ... }` or `tls { ... }` block) next to the listen, monitor
    /// and JetStream settings the harness writes itself. If `extra_conf` has its own
    /// top-level `jetstream` block, the harness does not write one (then the store
    /// directory is whatever that block says).
    pub fn start_with_config(extra_conf: &str) -> NatsServer {
        Self::new(Some(extra_conf.to_owned()))
    }

    fn new(extra_conf: Option<String>) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("nats-test-")
            .tempdir()
            .expect("create temporary directory for nats-server");
        let store = dir.path().join("store");
        let ports_dir = dir.path().join("ports");
        fs::create_dir_all(&store).expect("create store dir");
        fs::create_dir_all(&ports_dir).expect("create ports dir");
        let mut server = NatsServer {
            child: None,
            port: 0,
            monitor_port: 0,
            extra_conf,
            store,
            conf_file: dir.path().join("nats.conf"),
            log_file: dir.path().join("server.log"),
            ports_dir,
            _dir: dir,
        };
        server.launch(false);
        server
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across `restart()`).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Whether the server says it is healthy, JetStream included (in a cluster:
    /// it knows the JetStream leader and is current with it).
    pub fn healthy(&self) -> bool {
        self.child.is_some() && http_status(self.monitor_port, "/healthz") == Some(200)
    }

    /// The server's log (stderr) of the current or last run.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Graceful stop: SIGTERM, wait up to 5 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Hard stop: SIGKILL and wait. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (if it is running) and starts it again on the same ports,
    /// with the same store directory and configuration; waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(true);
    }

    /// Spawns the server and waits until it is ready; panics with the server's log
    /// if it never comes up.
    fn launch(&mut self, same_ports: bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_launch(same_ports, deadline) {
                Ok(()) => return,
                Err(SpawnError::AddrInUse(_))
                    if Instant::now() + Duration::from_millis(200) < deadline =>
                {
                    // Only expected with fixed ports (a restart): the old socket is
                    // not released yet, or someone else grabbed the port meanwhile.
                    sleep(Duration::from_millis(100 * attempt.min(5)));
                }
                Err(SpawnError::AddrInUse(log)) | Err(SpawnError::Other(log)) => {
                    self.kill();
                    panic!(
                        "nats-server did not come up (attempt {attempt}, client port {}, \
                         monitor port {}, binary {:?}):\n{log}",
                        self.port,
                        self.monitor_port,
                        server_bin()
                    );
                }
            }
        }
    }

    fn try_launch(&mut self, same_ports: bool, deadline: Instant) -> Result<(), SpawnError> {
        // Leftover ports files of an earlier run would confuse the lookup below.
        if let Ok(entries) = fs::read_dir(&self.ports_dir) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let (port, monitor) = if same_ports {
            (self.port.to_string(), self.monitor_port.to_string())
        } else {
            ("-1".to_owned(), "-1".to_owned())
        };

        let mut cmd = Command::new(server_bin());
        match &self.extra_conf {
            Some(extra) => {
                let mut conf = format!(
                    "# written by the test harness\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n"
                );
                if !has_top_level_jetstream(extra) {
                    conf.push_str(&format!(
                        "jetstream {{\n  store_dir: {:?}\n}}\n",
                        self.store
                    ));
                }
                conf.push_str(extra);
                conf.push('\n');
                fs::write(&self.conf_file, conf).expect("write nats-server config");
                cmd.arg("-c").arg(&self.conf_file);
            }
            None => {
                cmd.args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor, "-js", "-sd"])
                    .arg(&self.store);
            }
        }
        cmd.arg("--ports_file_dir").arg(&self.ports_dir);

        let log = File::create(&self.log_file).expect("create nats-server log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run nats-server ({:?}): {e}; install it with \
                 `scripts/ensure-nats-server.sh` or set NATS_SERVER_BIN",
                server_bin()
            )
        });
        let pid = child.id();
        self.child = Some(child);

        // 1. The ports file appears once the monitor and client listeners are bound.
        let (client_port, monitor_port) = loop {
            self.check_alive()?;
            if let Some(ports) = self.read_ports_file(pid) {
                break ports;
            }
            if Instant::now() >= deadline {
                return Err(SpawnError::Other(self.log_with("no ports file")));
            }
            sleep(POLL);
        };
        self.port = client_port;
        self.monitor_port = monitor_port;

        // 2. JetStream answers on the monitoring endpoint, and the client port accepts.
        loop {
            self.check_alive()?;
            if http_status(monitor_port, "/healthz?js-enabled-only=true") == Some(200)
                && TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], client_port)),
                    Duration::from_millis(500),
                )
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SpawnError::Other(self.log_with("not healthy")));
            }
            sleep(POLL);
        }
    }

    /// Fails if the child has exited, classifying "address already in use".
    fn check_alive(&mut self) -> Result<(), SpawnError> {
        let child = self.child.as_mut().expect("child present while launching");
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                let log = self.log_with(&format!("exited: {status}"));
                if log.contains("address already in use") {
                    Err(SpawnError::AddrInUse(log))
                } else {
                    Err(SpawnError::Other(log))
                }
            }
            Err(e) => Err(SpawnError::Other(
                self.log_with(&format!("wait failed: {e}")),
            )),
        }
    }

    fn log_with(&self, what: &str) -> String {
        format!("{what}\n--- nats-server log ---\n{}", self.log())
    }

    /// Reads `<exe>_<pid>.ports` (JSON with the client and monitoring URLs).
    fn read_ports_file(&self, pid: u32) -> Option<(u16, u16)> {
        let suffix = format!("_{pid}.ports");
        let entry = fs::read_dir(&self.ports_dir)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
        let text = fs::read_to_string(entry.path()).ok()?;
        Some((
            first_url_port(&text, "\"nats\"")?,
            first_url_port(&text, "\"monitoring\"")?,
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a cluster may take to elect its JetStream leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Servers joined by cluster routes, JetStream on each, each with a store of its own.
pub struct NatsCluster {
    /// The servers, named `n0`, `n1`, ... (their `server_name`).
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other and waits until every one is
    /// healthy (the JetStream leader elected).
    pub fn start(size: usize) -> NatsCluster {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
            .collect();
        let servers = route_ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                NatsServer::start_with_config(&format!(
                    "server_name: n{n}\ncluster {{\n  name: flare-test\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}",
                    routes.join(", ")
                ))
            })
            .collect();
        let cluster = NatsCluster { servers };
        cluster.wait_until_healthy();
        cluster
    }

    /// The client URLs of the servers, comma-separated (as `--nats-url` takes them).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// The server named `name` (`n0`, ...).
    pub fn server_named(&mut self, name: &str) -> &mut NatsServer {
        let n: usize = name
            .strip_prefix('n')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no server named {name}"));
        &mut self.servers[n]
    }

    /// Waits until every running server is healthy; panics with their logs if not.
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let running = || self.servers.iter().filter(|s| s.child.is_some());
        while !running().all(NatsServer::healthy) {
            if Instant::now() >= deadline {
                let logs: Vec<String> = self.servers.iter().map(NatsServer::log).collect();
                panic!(
                    "the cluster is not healthy within {CLUSTER_TIMEOUT:?}:\n{}",
                    logs.join("\n---\n")
                );
            }
            sleep(Duration::from_millis(100));
        }
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The nats-server program: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// Whether the config text has a `jetstream` key at the start of a line.
fn has_top_level_jetstream(conf: &str) -> bool {
    conf.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("jetstream") && !l.starts_with("jetstream_")
    })
}

/// From `{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}`,
/// the port of the first URL after `key`.
fn first_url_port(text: &str, key: &str) -> Option<u16> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = &rest[rest.find('[')? + 1..];
    let rest = &rest[rest.find('"')? + 1..];
    let url = &rest[..rest.find('"')?];
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// A minimal HTTP/1.0 GET against 127.0.0.1; returns the status code.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}
