//! The Kubernetes API requests a run costs, read from kube-sim's request
//! counter (`/kube-sim/requests`, which `DELETE` resets) with the kube-sim
//! admin's kubeconfig: every user but the admin (the workers) counted by verb
//! and resource.

use super::CliError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::collections::BTreeMap;
use std::path::Path;

/// The admin user kube-sim's kubeconfig names; its own requests are not counted.
const ADMIN: &str = "kube-sim-admin";

/// A client of the kube-sim the kubeconfig at `path` names.
pub async fn client(path: &Path) -> Result<kube::Client, CliError> {
    let failed =
        |e: String| CliError::Other(format!("kube-sim kubeconfig {}: {e}", path.display()));
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| failed(e.to_string()))
}

/// Requests of every user but the admin by `verb resource`, after a reset when
/// `reset` (then the counts are those before it).
async fn counts(client: &kube::Client, reset: bool) -> Result<BTreeMap<String, u64>, CliError> {
    let method = if reset { "DELETE" } else { "GET" };
    let request = http::Request::builder()
        .method(method)
        .uri("/kube-sim/requests")
        .body(Vec::new())
        .map_err(|e| CliError::Other(format!("kube-sim request: {e}")))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| CliError::Other(format!("cannot read kube-sim's request counter: {e}")))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Other(format!("kube-sim's request counter: {e}")))?;
    let mut counts = BTreeMap::new();
    for entry in body["requests"].as_array().into_iter().flatten() {
        if entry["user"] == ADMIN {
            continue;
        }
        let key = format!(
            "{} {}",
            entry["verb"].as_str().unwrap_or_default(),
            entry["resource"].as_str().unwrap_or_default()
        );
        *counts.entry(key).or_default() += entry["count"].as_u64().unwrap_or(0);
    }
    Ok(counts)
}

/// How long the counter may take to settle after a phase (the workers delete
/// each pod after its terminal event).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Two reads this far apart that agree mean the counter has settled.
const SETTLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(300);

/// The counts once the workers' requests for the jobs so far have all been made
/// (two reads agree), and then reset when `reset`.
pub async fn settled(
    client: &kube::Client,
    reset: bool,
) -> Result<BTreeMap<String, u64>, CliError> {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    let mut last = counts(client, false).await?;
    loop {
        tokio::time::sleep(SETTLE_INTERVAL).await;
        let now = counts(client, false).await?;
        if now == last || tokio::time::Instant::now() > deadline {
            break;
        }
        last = now;
    }
    counts(client, reset).await
}

/// The shared watch's requests (list and watch of pods), which do not grow with
/// the jobs.
pub fn is_shared(key: &str) -> bool {
    matches!(key, "list pods" | "watch pods")
}
