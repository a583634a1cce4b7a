//! `kube-sim`: runs the simulated API server until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_sim::{Config, KubeSim, NodeConfig, UserConfig};

/// A small, faithful Kubernetes API server with a kubelet that runs pods as local
/// processes.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to serve HTTPS on; port 0 picks a free one.
    #[arg(long, env = "KUBE_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the admin's kubeconfig.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Directory for pod working directories and logs (default: a temporary one).
    #[arg(long, env = "KUBE_SIM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `nvidia.com/gpu` capacity of the node.
    #[arg(long, env = "KUBE_SIM_GPUS", default_value_t = 2)]
    gpus: u64,
    /// CPU capacity of the node, in millicores.
    #[arg(long, env = "KUBE_SIM_CPU_MILLIS", default_value_t = 16_000)]
    cpu_millis: u64,
    /// Memory capacity of the node, in bytes.
    #[arg(long, env = "KUBE_SIM_MEMORY_BYTES", default_value_t = 64 << 30)]
    memory_bytes: u64,
    /// Images whose name contains this fail to pull (repeatable).
    #[arg(
        long = "unpullable",
        env = "KUBE_SIM_UNPULLABLE",
        value_delimiter = ',',
        default_value = "unpullable"
    )]
    unpullable: Vec<String>,
    /// A user as NAME=TOKEN, subject to RBAC (repeatable).
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<UserConfig>,
    /// A YAML or JSON file of Roles and RoleBindings to create at start (repeatable).
    #[arg(long = "rbac", env = "KUBE_SIM_RBAC", value_delimiter = ',')]
    rbac_files: Vec<PathBuf>,
    /// Seconds between watch bookmarks.
    #[arg(long, env = "KUBE_SIM_BOOKMARK_SECONDS", default_value_t = 60)]
    bookmark_seconds: u64,
    /// Seconds a pod tolerates a lost node before it is evicted, unless it says.
    #[arg(
        long,
        env = "KUBE_SIM_DEFAULT_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_toleration_seconds: u64,
}

fn parse_user(text: &str) -> Result<UserConfig, String> {
    let (name, token) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=TOKEN".to_owned())?;
    Ok(UserConfig {
        name: name.to_owned(),
        token: token.to_owned(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut node = NodeConfig::new("kube-sim-node");
    node.gpus = args.gpus;
    node.cpu_millis = args.cpu_millis;
    node.memory_bytes = args.memory_bytes;
    let config = Config {
        listen: args.listen,
        kubeconfig: args.kubeconfig,
        data_dir: args.data_dir,
        nodes: vec![node],
        unpullable_images: args.unpullable,
        users: args.users,
        rbac_files: args.rbac_files,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        default_toleration_seconds: args.default_toleration_seconds,
        ..Config::default()
    };
    let sim = KubeSim::start(config).await?;
    println!("kube-sim serving on {}", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
