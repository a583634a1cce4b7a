//! The shared state of one kube-sim: the store, its settings, its data
//! directory, the faults in force, the request counter, the running
//! containers (for OOM kills) and the lost nodes. Every request handler and
//! controller holds an `Arc<Cluster>`.

use std::path::PathBuf;

use crate::config::Config;
use crate::faults::FaultState;
use crate::node_loss::LostNodes;
use crate::oom::OomKiller;
use crate::requests::RequestCounter;
use crate::store::Store;

/// One simulated cluster.
pub struct Cluster {
    pub store: Store,
    pub config: Config,
    /// Pod working directories and container logs live under here.
    pub data_dir: PathBuf,
    pub faults: FaultState,
    pub requests: RequestCounter,
    /// The running containers, for OOM kills on demand.
    pub oom: OomKiller,
    /// Nodes whose kubelet no longer reports.
    pub lost_nodes: LostNodes,
}

impl Cluster {
    pub fn new(config: Config, data_dir: PathBuf) -> Cluster {
        // A slow watch may fall this many changes behind before it is dropped.
        let watch_buffer = 16_384;
        Cluster {
            store: Store::new(config.history, watch_buffer),
            config,
            data_dir,
            faults: FaultState::default(),
            requests: RequestCounter::default(),
            oom: OomKiller::default(),
            lost_nodes: LostNodes::default(),
        }
    }
}

impl Cluster {
    /// The directory a pod's containers run in (unless they set `workingDir`).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }

    /// Where the output of a pod's container goes.
    pub fn log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join(format!("{container}.log"))
    }
}
