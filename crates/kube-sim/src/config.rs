//! kube-sim's settings: where it listens, its nodes, which images fail to pull,
//! its users, and the timings of watches, the kubelet and evictions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One node of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// `nvidia.com/gpu` capacity.
    pub gpus: u64,
    /// Most pods the node takes.
    pub max_pods: u64,
}

impl NodeConfig {
    /// A node named `name` with 2 GPUs, 16 CPUs, 64 GiB and room for 2,000 pods.
    pub fn new(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_owned(),
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
            gpus: 2,
            max_pods: 2_000,
        }
    }
}

/// A user who authenticates with a bearer token, subject to RBAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub token: String,
}

/// Everything kube-sim is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where to write the kubeconfig for the admin user; `None` writes none.
    pub kubeconfig: Option<PathBuf>,
    /// Holds the CA, pod working directories and container logs; a fresh
    /// temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    pub nodes: Vec<NodeConfig>,
    /// An image whose name contains one of these fails to pull.
    pub unpullable_images: Vec<String>,
    /// Users besides the admin (whose token is generated and is not subject to RBAC).
    pub users: Vec<UserConfig>,
    /// RBAC objects (Roles, RoleBindings; YAML or JSON documents) created at start.
    pub rbac_files: Vec<PathBuf>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many changes the store keeps for watches and exact lists before older
    /// revisions are gone.
    pub history: usize,
    /// First and longest back-off of image pulls and container restarts.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long a pod tolerates its node being unreachable (or not ready)
    /// before it is evicted, unless it says otherwise: the `tolerationSeconds`
    /// the API server gives it (the real default is 300).
    pub default_toleration_seconds: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            data_dir: None,
            nodes: vec![NodeConfig::new("kube-sim-node")],
            unpullable_images: vec!["unpullable".to_owned()],
            users: Vec::new(),
            rbac_files: Vec::new(),
            bookmark_interval: Duration::from_secs(60),
            history: 100_000,
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            default_toleration_seconds: 300,
        }
    }
}

impl Config {
    /// Whether pulling `image` fails.
    pub fn unpullable(&self, image: &str) -> bool {
        self.unpullable_images
            .iter()
            .any(|p| !p.is_empty() && image.contains(p.as_str()))
    }
}
