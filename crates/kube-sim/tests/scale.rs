//! The scale benchmark: 1,000 pods running at once (each a real `sleep 600`
//! process), with a watch on every pod open, while GETs of single pods are timed.
//! It says how long they take (p50, p99, max) and fails if the p99 is 20 ms or
//! more. Ignored by default; run it as the README shows.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::json;
use tokio::sync::oneshot;

const PODS: usize = 1_000;
const GETS: usize = 2_000;
const P99_LIMIT: Duration = Duration::from_millis(20);

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "scale"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}]},
    }))
    .expect("pod")
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The `q` quantile of sorted `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index.min(samples.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: starts 1,000 processes; see the README for how to run it"]
async fn a_thousand_running_pods_with_a_watch_open_answer_gets_within_20_ms_at_p99() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The open watch (kube-runtime's, on every pod) tells when all of them run,
    // and stays open while the GETs are timed.
    let (all_running_tx, all_running) = oneshot::channel();
    let watch = tokio::spawn({
        let all: Api<Pod> = Api::all(client.clone());
        async move {
            let mut seen: HashSet<String> = HashSet::new();
            let mut notify = Some(all_running_tx);
            let mut stream = watcher::watcher(all, watcher::Config::default()).boxed();
            while let Some(event) = stream.try_next().await.expect("watch") {
                if let WatchEvent::Apply(p) | WatchEvent::InitApply(p) = event {
                    if running(&p) {
                        seen.insert(p.metadata.name.unwrap_or_default());
                    }
                    if seen.len() == PODS
                        && let Some(tx) = notify.take()
                    {
                        let _ = tx.send(());
                    }
                }
            }
        }
    });

    let started = Instant::now();
    futures::stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(&format!("bench-{i:04}")))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    tokio::time::timeout(Duration::from_secs(600), all_running)
        .await
        .expect("all pods run within 10 minutes")
        .expect("watcher");
    println!(
        "{PODS} pods created and running in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut samples = Vec::with_capacity(GETS);
    for i in 0..GETS {
        let name = format!("bench-{:04}", (i * 7919) % PODS);
        let t = Instant::now();
        let got = pods.get(&name).await.expect("get");
        samples.push(t.elapsed());
        assert!(running(&got), "{name} still runs");
    }
    samples.sort();
    let (p50, p99, max) = (
        quantile(&samples, 0.50),
        quantile(&samples, 0.99),
        quantile(&samples, 1.0),
    );
    println!(
        "GET of one pod, {GETS} times with {PODS} pods running and a watch open: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert!(!watch.is_finished(), "the watch is still open");
    assert!(p99 < P99_LIMIT, "p99 {p99:?} is not under {P99_LIMIT:?}");
    watch.abort();
    sim.shutdown().await;
}
