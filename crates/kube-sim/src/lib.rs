//! kube-sim: a small, faithful Kubernetes API server with a scheduler and a
//! kubelet that runs pods as local processes, for testing Kubernetes clients
//! against real behaviour.
//!
//! Layout:
//! - [`KubeSim`] (here) starts everything and hands out the address, CA and
//!   kubeconfig; `kube-sim` (the binary) wraps it.
//! - The front: `server` (TLS, tokens, routing), `router`, `query`, `http`,
//!   `status` (errors as `Status` objects), `auth`, `rbac` (Roles and
//!   RoleBindings enforced for token users).
//! - Testing aids: `faults` (latency, errors, dropped watches), `requests` (the
//!   request counter), `oom` (OOM kills of containers), `node_loss` (a node
//!   that stops reporting, and comes back), `admin` (the `/kube-sim/` API over
//!   them and compaction).
//! - The API: `api` (get, create, update, patch, delete), `jsonpatch`, `list`, `watch`, `logs`,
//!   `objects` (decoding through the API types), `pods` (what the server does to
//!   pods), `selectors`, `resources` (the served types and discovery).
//! - The control plane's controllers: `scheduler`, `eviction` (evictions from
//!   lost nodes, the pods of deleted nodes), `gc` (objects whose owners are
//!   gone).
//! - The node: `kubelet` (one task per pod), `container` (one
//!   process per container), `env`, `podstatus`, `events`, `quantity`.
//! - State: `store` (objects, the revision counter, the change log), `cluster`,
//!   `bootstrap` (default namespaces, nodes), `manifests` (RBAC files read at
//!   start), `meta`.

mod admin;
mod api;
mod auth;
mod bootstrap;
mod cluster;
pub mod config;
mod container;
mod env;
mod events;
mod eviction;
pub mod faults;
mod gc;
mod http;
mod jsonpatch;
mod kubeconfig;
mod kubelet;
mod list;
mod logs;
mod manifests;
mod meta;
mod node_loss;
mod objects;
mod oom;
mod openapi;
mod pods;
mod podstatus;
mod quantity;
mod query;
mod rbac;
pub mod requests;
mod resources;
mod router;
mod scheduler;
mod selectors;
mod server;
pub mod status;
mod store;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, NodeConfig, UserConfig};
pub use faults::{ErrorFault, FaultError, Faults};
pub use node_loss::NodeLossError;
pub use oom::{ContainerName, OomError};
pub use requests::RequestCount;

/// Why kube-sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("making the data directory: {0}")]
    DataDir(#[source] std::io::Error),
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("seeding the cluster: {0}")]
    Seed(#[from] store::StoreError),
    #[error("loading RBAC: {0}")]
    Rbac(#[from] manifests::ManifestError),
}

fn cluster_of(front: &server::Front) -> Arc<cluster::Cluster> {
    front.cluster.clone()
}

/// A running kube-sim. Dropping it stops the server and kills every pod's
/// processes.
pub struct KubeSim {
    addr: SocketAddr,
    ca_pem: String,
    front: Arc<server::Front>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _data_dir: Option<tempfile::TempDir>,
}

impl KubeSim {
    /// Starts a server (and its controllers) with `config` on the current Tokio
    /// runtime; it serves once this returns.
    ///
    /// # Errors
    /// When the address cannot be bound, the data directory or kubeconfig cannot
    /// be written, or the certificates cannot be made.
    pub async fn start(config: Config) -> Result<KubeSim, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let (temp, data_dir) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(StartError::DataDir)?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("kube-sim-")
                    .tempdir()
                    .map_err(StartError::DataDir)?;
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        let tls = tls::make(addr.ip())?;
        let tokens = auth::Tokens::new(&config.users);
        let kubeconfig_path = config.kubeconfig.clone();
        let rbac_files = config.rbac_files.clone();
        let cluster = Arc::new(cluster::Cluster::new(config, data_dir));
        bootstrap::seed(&cluster)?;
        for path in &rbac_files {
            manifests::load_rbac(&cluster, path)?;
        }
        let front = Arc::new(server::Front { cluster, tokens });
        let sim = KubeSim {
            addr,
            ca_pem: tls.ca_pem,
            front: front.clone(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            _data_dir: temp,
        };
        if let Some(path) = kubeconfig_path {
            sim.write_kubeconfig(&path)?;
        }
        sim.tasks
            .spawn(scheduler::run(cluster_of(&front), sim.shutdown.clone()));
        sim.tasks
            .spawn(eviction::run(cluster_of(&front), sim.shutdown.clone()));
        sim.tasks
            .spawn(gc::run(cluster_of(&front), sim.shutdown.clone()));
        sim.tasks.spawn(kubelet::run(
            cluster_of(&front),
            sim.shutdown.clone(),
            sim.tasks.clone(),
        ));
        sim.tasks.spawn(server::serve(
            listener,
            tls.acceptor,
            front,
            sim.shutdown.clone(),
            sim.tasks.clone(),
        ));
        Ok(sim)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://HOST:PORT`.
    pub fn url(&self) -> String {
        kubeconfig::server_url(self.addr)
    }

    /// Where pod directories and container logs live.
    pub fn data_dir(&self) -> &Path {
        &self.front.cluster.data_dir
    }

    /// The PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &str {
        self.front.tokens.admin_token()
    }

    /// A kubeconfig (YAML) for the admin.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for(auth::ADMIN, self.admin_token())
    }

    /// A kubeconfig (YAML) for `user` with `token`.
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> String {
        kubeconfig::render(&self.url(), &self.ca_pem, user, token)
    }

    /// Writes the admin's kubeconfig to `path` (mode 0600).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), StartError> {
        kubeconfig::write(path, &self.kubeconfig()).map_err(|source| StartError::Kubeconfig {
            path: path.to_owned(),
            source,
        })
    }

    /// Replaces the faults in force (what `PUT /kube-sim/faults` does).
    ///
    /// # Errors
    /// When a fault cannot be injected (an error code other than 429 or 500, an
    /// unknown verb or resource, too long a latency or `Retry-After`).
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultError> {
        self.front.cluster.faults.set(faults)
    }

    /// The faults in force (an error whose count is spent is gone).
    pub fn faults(&self) -> Faults {
        self.front.cluster.faults.get()
    }

    /// Compacts the change history at the current revision, which it returns:
    /// lists and watches at any older revision get `410 Gone` from now on.
    pub fn compact(&self) -> u64 {
        self.front.cluster.store.compact()
    }

    /// Kills a running container for its memory, as the kernel's OOM killer
    /// would (what `POST /kube-sim/oom-kill` does): it ends `OOMKilled`, exit
    /// code 137.
    ///
    /// # Errors
    /// When no such container runs.
    pub fn oom_kill(&self, container: &ContainerName) -> Result<(), OomError> {
        self.front.cluster.oom.kill(container)
    }

    /// Loses node `node` (what `POST /kube-sim/lose-node` does): it stops
    /// reporting, its pods are marked not ready, and they are evicted once
    /// they no longer tolerate it.
    ///
    /// # Errors
    /// When there is no such node.
    pub fn lose_node(&self, node: &str) -> Result<(), NodeLossError> {
        node_loss::lose(&self.front.cluster, node)
    }

    /// Brings lost node `node` back (what `POST /kube-sim/restore-node` does):
    /// it reports again, and finishes the deletions it missed.
    ///
    /// # Errors
    /// When there is no such node.
    pub fn restore_node(&self, node: &str) -> Result<(), NodeLossError> {
        node_loss::restore(&self.front.cluster, node)
    }

    /// How many resource requests each user made, by verb and resource.
    pub fn requests(&self) -> Vec<RequestCount> {
        self.front.cluster.requests.snapshot()
    }

    /// The most resource requests served at once since start (or the last
    /// reset of the counter), each until its response began.
    pub fn peak_in_flight(&self) -> u64 {
        self.front.cluster.requests.peak_in_flight()
    }

    /// Stops serving, stops every pod, and waits until all of it has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
