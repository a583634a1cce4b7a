//! The Docker engine for tests: whether one answers (outside CI a missing engine
//! skips the test loudly; in CI it fails it), and the test image
//! `flare-launcher-test-busybox:1` (`FROM scratch` plus a static busybox),
//! built once per machine, under a lock file so that parallel tests build it once.

use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::{BackendKind, LaunchRequest};
use std::path::Path;
use std::process::Command;

/// The image every Docker test runs.
pub const TEST_IMAGE: &str = "flare-launcher-test-busybox:1";
/// Where the static busybox comes from (Debian's `busybox-static`; see
/// `scripts/ensure-docker-test-tools.sh`).
const BUSYBOX: &str = "/bin/busybox";

/// Whether a Docker engine answers. Outside CI, a missing engine prints why the
/// test is skipped; in CI (`CI=true`) it fails the test.
pub fn engine_available() -> bool {
    let answered = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success());
    if answered {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no Docker engine answers, and CI runs every Docker test"
    );
    eprintln!(
        "!!! SKIPPED: no Docker engine answers (`docker version` fails); this Docker test did not run"
    );
    false
}

/// Builds the test image unless the engine has it; returns its name.
pub fn test_image() -> &'static str {
    let lock_path = std::env::temp_dir().join("flare-launcher-test-busybox.lock");
    let lock_file = std::fs::File::create(&lock_path).expect("the image lock file");
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the image lock");
    if image_present() {
        return TEST_IMAGE;
    }
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: run scripts/ensure-docker-test-tools.sh"
    );
    let context = tempfile::tempdir().expect("a build context");
    std::fs::copy(BUSYBOX, context.path().join("busybox")).expect("busybox copied");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .expect("Dockerfile written");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", TEST_IMAGE])
        .arg(context.path())
        .output()
        .expect("docker build runs");
    assert!(
        built.status.success(),
        "building {TEST_IMAGE}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    TEST_IMAGE
}

fn image_present() -> bool {
    Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A worker configuration with only the Docker backend, and a worker id of its
/// own: tests share the engine, and a worker takes every container of its id as
/// its own.
pub fn docker_worker(config: &mut WorkerConfig) {
    config.worker_id = unique("w");
    config.backend = BackendKind::Docker;
    config.backends = vec![BackendKind::Docker];
}

/// `prefix` with a random suffix: job ids and worker ids unique on the shared engine.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", flare_launcher::protocol::random_suffix(8))
}

/// A request running `script` with the test image's shell.
pub fn in_container(job_id: &str, script: &str) -> LaunchRequest {
    let mut request =
        LaunchRequest::new(job_id, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    request.image = Some(TEST_IMAGE.into());
    request.backend = Some(BackendKind::Docker);
    request
}

/// The names of the containers whose job-id label is `job_id`, whatever their state.
pub fn containers_of(job_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label=flare-launcher/job-id={job_id}"))
        .output()
        .expect("docker ps runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the output of `job_id`'s running container holds `text` (the
/// job's log file has it only once the container ended).
pub async fn wait_for_output(job_id: &str, text: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(name) = containers_of(job_id).first() {
            let out = Command::new("docker")
                .args(["logs", name])
                .output()
                .expect("docker logs runs");
            if String::from_utf8_lossy(&out.stdout).contains(text) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{job_id}'s container never printed {text:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the containers of `job_ids` are removed.
pub async fn wait_until_removed(job_ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while job_ids
        .iter()
        .any(|job_id| !containers_of(job_id).is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers of {job_ids:?} were kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A TCP proxy in front of the engine's socket, whose connections a test can
/// cut (the engine itself cannot be restarted under a test): a worker given
/// [`EngineProxy::host`] reaches its engine only through it.
pub struct EngineProxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl EngineProxy {
    /// Listens on a free loopback port, forwarding to the engine's socket.
    pub async fn start() -> EngineProxy {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: the engine is "away"
                    }
                    let socket = socket.clone();
                    let forward = tokio::spawn(async move {
                        if let Ok(mut engine) = tokio::net::UnixStream::connect(&socket).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    });
                    connections.lock().unwrap().push(forward);
                }
            }
        });
        EngineProxy {
            port,
            open,
            connections,
            accept,
        }
    }

    /// The engine's address through the proxy.
    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones until [`EngineProxy::resume`].
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Takes connections again.
    pub fn resume(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A distribution registry (Debian's `docker-registry`) on a loopback port, with
/// its storage in a temporary directory; stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one and waits until it takes connections.
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry starts (scripts/ensure-docker-test-tools.sh)");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the registry never listened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    /// `repository:tag` in this registry.
    pub fn image(&self, repository: &str) -> String {
        format!("127.0.0.1:{}/{repository}", self.port)
    }

    /// Pushes the test image as `repository:tag` here, and leaves the engine
    /// without that name (so a job wanting it must pull it).
    pub fn push_test_image(&self, repository: &str) -> String {
        let image = self.image(repository);
        for args in [
            vec!["tag", TEST_IMAGE, image.as_str()],
            vec!["push", "-q", image.as_str()],
            vec!["rmi", image.as_str()],
        ] {
            let out = Command::new("docker")
                .args(&args)
                .output()
                .expect("docker runs");
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        }
        image
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
