//! Reaching the cluster: the client configuration from `--kubeconfig` (with
//! `--kube-context`), else `KUBECONFIG` or `~/.kube/config`, else the pod's own
//! service account when the worker runs in the cluster; and the namespace pods
//! go to, the configured one or the configuration's default. The client sends
//! at most [`MAX_REQUESTS_IN_FLIGHT`] requests at once; the others wait their
//! turn, so a burst of launches neither floods the API server nor opens a
//! connection (with its buffers) per pod. Every request is counted
//! ([`super::counted`]).

use super::counted::CountLayer;
use crate::config::K8sConfig;
use crate::observe::metrics::ApiCalls;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tower::limit::ConcurrencyLimitLayer;

/// Most API requests under way at once (a watch counts until its response
/// begins, so the shared watch never holds a place).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

/// Why the cluster cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable client configuration.
    #[error("no usable Kubernetes configuration{}: {message}", .path.as_deref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Config {
        /// The kubeconfig given, if one was.
        path: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The client cannot be built.
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),
}

/// A client of the cluster, counting its requests into `calls`, and the
/// namespace of the jobs' pods.
pub async fn connect(
    config: &K8sConfig,
    calls: ApiCalls,
) -> Result<(kube::Client, String), ClusterError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let path = config.kubeconfig.as_ref().map(|p| p.display().to_string());
    let failed = |message: String| ClusterError::Config {
        path: path.clone(),
        message,
    };
    let client_config = match &config.kubeconfig {
        Some(file) => {
            let kubeconfig = Kubeconfig::read_from(file).map_err(|e| failed(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| failed(e.to_string()))?
        }
        None if config.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| failed(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| failed(e.to_string()))?,
    };
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client_config.default_namespace.clone());
    let client = ClientBuilder::try_from(client_config)
        .map_err(|e| ClusterError::Client(Box::new(e)))?
        .with_layer(&ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .with_layer(&CountLayer::new(calls))
        .build();
    Ok((client, namespace))
}
