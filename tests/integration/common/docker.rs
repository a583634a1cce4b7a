//! The Docker engine for tests: the test image `flare-launcher-test-busybox:1`
//! (`FROM scratch` plus a static busybox), built once per machine, under a lock
//! file so that parallel tests build it once, and what the tests do with
//! containers, registries and the engine's socket. A build that finds no engine
//! ignores the Docker tests (see `build.rs`); one that runs fails on its first
//! use of the engine.

use super::system::System;
use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::{BackendKind, LaunchRequest};
use std::path::Path;
use std::process::Command;

/// The image every Docker test runs.
pub const TEST_IMAGE: &str = "flare-launcher-test-busybox:1";
/// Where the static busybox comes from (Debian's `busybox-static`; see
/// `scripts/ensure-docker-test-tools.sh`).
const BUSYBOX: &str = "/bin/busybox";

/// Fails the test unless a Docker engine answers.
fn assert_engine_answers() {
    let answered = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        answered,
        "no Docker engine answers (`docker version` fails), and this test needs one"
    );
}

/// Builds the test image unless the engine has it; returns its name.
pub fn test_image() -> &'static str {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: run scripts/ensure-docker-test-tools.sh"
    );
    built_once(
        TEST_IMAGE,
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        Some(Path::new(BUSYBOX)),
    )
}

/// The test image with a setuid-root copy of busybox, `/suid/busybox`
/// (multi-call: `/suid/busybox ping ...`), built unless the engine has it; its
/// name.
pub fn setuid_image() -> &'static str {
    let dockerfile = format!(
        "FROM {}\nRUN [\"mkdir\", \"/suid\"]\nRUN [\"cp\", \"/bin/busybox\", \"/suid/busybox\"]\nRUN [\"chmod\", \"4755\", \"/suid/busybox\"]\n",
        test_image()
    );
    built_once(SETUID_IMAGE, &dockerfile, None)
}

/// The image of [`setuid_image`].
const SETUID_IMAGE: &str = "flare-launcher-test-setuid:1";

/// Builds `image` from `dockerfile` (with `busybox` in its context, if given)
/// unless the engine has it, under a lock file so that parallel tests build it
/// once; returns its name.
fn built_once(image: &'static str, dockerfile: &str, busybox: Option<&Path>) -> &'static str {
    assert_engine_answers();
    let lock_path = std::env::temp_dir().join(format!("{}.lock", image.replace([':', '/'], "-")));
    let lock_file = std::fs::File::create(&lock_path).expect("the image lock file");
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the image lock");
    if image_present(image) {
        return image;
    }
    let context = tempfile::tempdir().expect("a build context");
    if let Some(busybox) = busybox {
        std::fs::copy(busybox, context.path().join("busybox")).expect("busybox copied");
    }
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile written");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", image])
        .arg(context.path())
        .output()
        .expect("docker build runs");
    assert!(
        built.status.success(),
        "building {image}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    image
}

/// Gives the test image the name `image` too, so that a job naming it finds
/// it on the engine.
pub fn tag_test_image(image: &str) {
    let tagged = Command::new("docker")
        .args(["tag", test_image(), image])
        .output()
        .expect("docker tag runs");
    assert!(tagged.status.success(), "tagging {image}");
}

/// Removes the name [`tag_test_image`] gave.
pub fn untag_test_image(image: &str) {
    // Best effort: a name left behind costs nothing but a line in `docker images`.
    let _ = Command::new("docker").args(["rmi", image]).output();
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A system whose worker runs only Docker jobs, its configuration adjusted by
/// `configure`, with the test image built.
pub async fn docker_system_with(configure: impl FnOnce(&mut WorkerConfig)) -> System {
    test_image();
    System::start_with(|config| {
        docker_worker(config);
        configure(config);
    })
    .await
}

/// A system whose Docker worker, its configuration adjusted by `configure`,
/// reaches its engine only through the proxy returned with it, with the test
/// image built.
pub async fn system_through_proxy(
    configure: impl FnOnce(&mut WorkerConfig),
) -> (EngineProxy, System) {
    test_image();
    let proxy = EngineProxy::start().await;
    let mut system = System::without_worker(|config| {
        docker_worker(config);
        configure(config);
    })
    .await;
    system.config.docker.host = Some(proxy.host());
    system.start_worker().await;
    (proxy, system)
}

/// Launches `script` as `job_id`'s container and waits until it printed `ready`.
pub async fn launch_until_ready(system: &System, job_id: &str, script: &str) {
    system
        .launch_until_running(&in_container(job_id, script))
        .await;
    wait_for_output(job_id, "ready").await;
}

/// A system without a worker of its own, for tests that run a Docker worker as
/// a process of its own, to kill it and start it again with the same id.
pub struct RestartableWorker {
    /// NATS and a client.
    pub system: System,
    /// The id every start of the worker has.
    pub worker_id: String,
    data_dir: std::path::PathBuf,
}

impl RestartableWorker {
    /// A system with the test image built.
    pub async fn new() -> RestartableWorker {
        test_image();
        let system = System::without_worker(|_| {}).await;
        let data_dir = system.path("data");
        RestartableWorker {
            system,
            worker_id: unique("phoenix"),
            data_dir,
        }
    }

    /// Starts the worker process (killed when dropped).
    pub fn spawn(&self) -> tokio::process::Child {
        self.spawn_with(&[])
    }

    /// Starts the worker process with `env` added (killed when dropped).
    pub fn spawn_with(&self, env: &[(&str, &str)]) -> tokio::process::Child {
        let mut env = env.to_vec();
        env.push(("FLARE_BACKEND", "docker"));
        self.system
            .spawn_worker_process(&self.worker_id, &self.data_dir, &env)
    }
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

/// Runs `docker ARGS` and returns its stdout; fails the test when it fails.
pub fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker create`s (or, with `start`, `docker run -d`s) a managed container
/// named `name` labelled with `job_id` and, if given, `worker`, running
/// `script`: what a launch leaves when its worker dies at the wrong moment.
pub fn create_labelled_container(
    name: &str,
    job_id: &str,
    worker: Option<&str>,
    script: &str,
    start: bool,
) {
    let mut command = Command::new("docker");
    if start {
        command.args(["run", "-d"]);
    } else {
        command.arg("create");
    }
    command
        .args(["--name", name])
        .args(["--label", "app.kubernetes.io/managed-by=flare-launcher"])
        .args(["--label", &format!("flare-launcher/job-id={job_id}")]);
    if let Some(worker) = worker {
        command.args(["--label", &format!("flare-launcher/worker={worker}")]);
    }
    let created = command
        .args([TEST_IMAGE, "/bin/sh", "-c", script])
        .output()
        .expect("docker runs");
    assert!(created.status.success(), "{created:?}");
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

/// The engine's clock now, as `docker events --since` takes it.
pub fn engine_time() -> String {
    docker_cli(&["info", "--format", "{{.SystemTime}}"])
        .trim()
        .to_owned()
}

/// What the engine did (`create`, `start`, `die`, ...) to the containers of
/// `job_id` since `since` (an [`engine_time`]), in order.
pub fn engine_actions(job_id: &str, since: &str) -> Vec<String> {
    let until = engine_time();
    let label = format!("label=flare-launcher/job-id={job_id}");
    docker_cli(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        &label,
        "--format",
        "{{.Action}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
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
/// cut (the engine itself cannot be restarted under a test), which notes every
/// request it forwards, and which can hold requests, or their answers, back: a
/// worker given [`EngineProxy::host`] reaches its engine only through it.
pub struct EngineProxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hold: Hold,
    accept: tokio::task::JoinHandle<()>,
}

/// What the proxy holds back: the requests whose line (`METHOD PATH`) holds a
/// text, or the answers to them.
type Hold = std::sync::Arc<std::sync::Mutex<Option<(String, Held)>>>;

/// Which part of a request [`EngineProxy::hold`] holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The request: the engine does not get it.
    Request,
    /// The answer: the engine carries the request out, its client never hears.
    Answer,
}

/// Whether `hold` holds `request` back, and how.
fn held(hold: &Hold, request: &str) -> Option<Held> {
    match &*hold.lock().unwrap() {
        Some((part, how)) if request.contains(part.as_str()) => Some(*how),
        _ => None,
    }
}

/// Waits while `hold` holds anything back.
async fn while_held(hold: &Hold) {
    while hold.lock().unwrap().is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Copies a client's bytes to the engine, noting the request line (`METHOD
/// PATH`) of each request in `requests`; a request `hold` names waits while it
/// holds, or, held for its answer, sets `answers_held`. Bodies (JSON) hold no
/// line ends, so a request line is the end of a line ending in ` HTTP/1.1`.
async fn forward_requests(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hold: Hold,
    answers_held: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut line = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut request_held = false;
        for &byte in &buffer[..n] {
            line.push(byte);
            if line.ends_with(b"\r\n") {
                let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                if let Some(head) = text.strip_suffix(" HTTP/1.1") {
                    let start = ["GET /", "POST /", "DELETE /", "HEAD /", "PUT /"]
                        .iter()
                        .filter_map(|method| head.rfind(method))
                        .max();
                    if let Some(start) = start {
                        let request = &head[start..];
                        match held(&hold, request) {
                            Some(Held::Request) => request_held = true,
                            Some(Held::Answer) => {
                                answers_held.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            None => {}
                        }
                        requests.lock().unwrap().push(request.to_owned());
                    }
                }
                line.clear();
            }
        }
        if request_held {
            while_held(&hold).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies the engine's answers to its client, from the answer to a request held
/// for its answer (`answers_held`) on only once the hold is lifted.
async fn forward_answers(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hold: Hold,
    answers_held: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if answers_held.load(std::sync::atomic::Ordering::SeqCst) {
            while_held(&hold).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
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
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = Hold::default();
        let accept = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            let requests = requests.clone();
            let hold = hold.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: the engine is "away"
                    }
                    let socket = socket.clone();
                    let requests = requests.clone();
                    let hold = hold.clone();
                    let forward = tokio::spawn(async move {
                        let Ok(engine) = tokio::net::UnixStream::connect(&socket).await else {
                            return;
                        };
                        let (client_in, client_out) = client.into_split();
                        let (engine_in, engine_out) = engine.into_split();
                        let answers_held = std::sync::Arc::default();
                        tokio::select! {
                            () = forward_requests(client_in, engine_out, requests, hold.clone(), std::sync::Arc::clone(&answers_held)) => {}
                            () = forward_answers(engine_in, client_out, hold, answers_held) => {}
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
            requests,
            hold,
            accept,
        }
    }

    /// Holds back, until [`EngineProxy::let_through`], the requests whose line
    /// (`METHOD PATH`) holds `part`, or their answers.
    pub fn hold(&self, part: &str, how: Held) {
        *self.hold.lock().unwrap() = Some((part.to_owned(), how));
    }

    /// Holds every container removal back (`DELETE`) until
    /// [`EngineProxy::let_through`].
    pub fn hold_removals(&self) {
        self.hold("DELETE /", Held::Request);
    }

    /// Passes everything on again, what was held too.
    pub fn let_through(&self) {
        *self.hold.lock().unwrap() = None;
    }

    /// The requests forwarded so far (`METHOD PATH`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
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

/// A registry that takes connections and never answers, so that a pull from it
/// hangs: its port, and the task holding the connections (abort it to let go).
pub async fn hanging_registry() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    (port, held)
}

/// A TCP proxy in front of a registry that passes the registry's answers on
/// slowly ([`SlowLink::BYTES_PER_TICK`] every [`SlowLink::TICK`]) until
/// [`SlowLink::open_up`], so that a pull through it lasts as long as a test needs.
pub struct SlowLink {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// What passes each tick while the link is slow.
    pub const BYTES_PER_TICK: usize = 2048;
    /// How often it passes.
    pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

    /// Listens on a free loopback port, forwarding to `registry` (`HOST:PORT`).
    pub async fn start(registry: &str) -> SlowLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let registry = registry.to_owned();
        let accept = tokio::spawn({
            let open = open.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(upstream) = tokio::net::TcpStream::connect(&registry).await else {
                        continue;
                    };
                    connections.spawn(Self::forward(client, upstream, open.clone()));
                }
            }
        });
        SlowLink { port, open, accept }
    }

    /// Passes requests on at once and answers slowly while the link is slow.
    async fn forward(
        client: tokio::net::TcpStream,
        upstream: tokio::net::TcpStream,
        open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_in, mut client_out) = client.into_split();
        let (mut upstream_in, mut upstream_out) = upstream.into_split();
        let answers = async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let slow = !open.load(std::sync::atomic::Ordering::SeqCst);
                let most = if slow {
                    Self::BYTES_PER_TICK
                } else {
                    buffer.len()
                };
                let n = match upstream_in.read(&mut buffer[..most]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client_out.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
                if slow {
                    tokio::time::sleep(Self::TICK).await;
                }
            }
        };
        let requests = tokio::io::copy(&mut client_in, &mut upstream_out);
        let _ = tokio::join!(requests, answers);
    }

    /// `HOST:PORT` of the link: an image named with it is pulled through it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on, answers pass at full speed.
    pub fn open_up(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The user of a registry started with [`Registry::start_with_login`].
pub const REGISTRY_USER: &str = "flare";
/// Its password.
pub const REGISTRY_PASSWORD: &str = "flare-pass";
/// Its htpasswd line: the registry takes only bcrypt, made here with
/// `python3 -c "import crypt; print(crypt.crypt('flare-pass', crypt.mksalt(crypt.METHOD_BLOWFISH)))"`.
const REGISTRY_HTPASSWD: &str =
    "flare:$2b$12$weHO5KzLoxFX0SkizqoqeerfYR/O9Bkks4al/sxZLtf9eUDr1yIL2\n";

/// A distribution registry (Debian's `docker-registry`) on a loopback port, with
/// its storage in a temporary directory; stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    login: bool,
}

impl Registry {
    /// Starts one open to all and waits until it takes connections.
    pub async fn start() -> Registry {
        Self::start_serving(false).await
    }

    /// Starts one that serves only [`REGISTRY_USER`] (htpasswd basic auth).
    pub async fn start_with_login() -> Registry {
        Self::start_serving(true).await
    }

    async fn start_serving(login: bool) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if login {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, REGISTRY_HTPASSWD).expect("htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: flare-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("registry config");
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
            dir,
            login,
        }
    }

    /// `HOST:PORT` of this registry.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Docker client configuration directory this registry's pushes use;
    /// after a push to a registry with a login, its `config.json` holds the
    /// login in `auths`.
    pub fn client_config_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("client")
    }

    /// `repository:tag` in this registry.
    pub fn image(&self, repository: &str) -> String {
        format!("127.0.0.1:{}/{repository}", self.port)
    }

    /// Pushes the test image as `repository:tag` here, and leaves the engine
    /// without that name (so a job wanting it must pull it).
    pub fn push_test_image(&self, repository: &str) -> String {
        let image = self.image(repository);
        self.push(vec!["tag", TEST_IMAGE, image.as_str()], &image);
        image
    }

    /// Pushes the test image plus a layer of `bytes` random bytes, which no
    /// other image has, as `repository:tag` here, and leaves the engine without
    /// it (so a job wanting it must download that layer).
    pub fn push_image_with_own_layer(&self, repository: &str, bytes: usize) -> String {
        let image = self.image(repository);
        let context = tempfile::tempdir().expect("a build context");
        let blob: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
        std::fs::write(context.path().join("blob"), blob).expect("the layer's file");
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {TEST_IMAGE}\nCOPY blob /blob\n"),
        )
        .expect("Dockerfile written");
        let context = context.path().display().to_string();
        self.push(vec!["build", "-q", "-t", image.as_str(), &context], &image);
        image
    }

    /// Makes `image` with the `docker` command `make`, pushes it here (logged
    /// in when this registry wants a login) and removes it from the engine.
    fn push(&self, make: Vec<&str>, image: &str) {
        let address = self.address();
        let mut steps = vec![make];
        if self.login {
            steps.push(vec![
                "login",
                "-u",
                REGISTRY_USER,
                "-p",
                REGISTRY_PASSWORD,
                address.as_str(),
            ]);
        }
        steps.push(vec!["push", "-q", image]);
        steps.push(vec!["rmi", image]);
        for args in steps {
            let out = Command::new("docker")
                .arg("--config")
                .arg(self.client_config_dir())
                .args(&args)
                .output()
                .expect("docker runs");
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
