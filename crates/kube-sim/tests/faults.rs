//! Faults on demand, each seen by a real client: kube's client retries a 429 after
//! its `Retry-After` and reports a 500, kube-runtime's watcher recovers from
//! dropped watch streams and re-lists after a `410 Gone` from a compaction, and the
//! request counter shows what the clients did. The admin API is the admin's only.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube_sim::{ErrorFault, Faults, UserConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}]},
    }))
    .expect("pod")
}

fn config_map(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": app}},
        "data": {"k": "v"},
    }))
    .expect("configmap")
}

/// A request to the admin API, as kube's client sends it.
async fn admin(client: &kube::Client, method: &str, path: &str, body: Value) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .expect("request");
    let text = client.request_text(request).await.expect("admin request");
    serde_json::from_str(&text).expect("json")
}

/// The count of `verb` on `resource` by `user` in a `/kube-sim/requests` answer.
fn count(requests: &Value, verb: &str, resource: &str, user: &str) -> u64 {
    requests["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["verb"] == verb && c["resource"] == resource && c["user"] == user)
        .and_then(|c| c["count"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn kubes_client_retries_a_429_after_its_retry_after_and_the_counter_shows_it() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .expect("create");
    admin(&client, "DELETE", "/kube-sim/requests", json!({})).await;
    let fault = json!({"error": {"code": 429, "retryAfterSeconds": 1, "count": 2,
                                 "verb": "get", "resource": "pods"}});
    let set = admin(&client, "PUT", "/kube-sim/faults", fault).await;
    assert_eq!(set["error"]["count"], 2);

    // A client that does not retry sees the real 429 Status.
    let mut config = common::config(&sim, "kube-sim-admin", sim.admin_token()).await;
    config.default_retry = false;
    let plain: Api<Pod> =
        Api::namespaced(kube::Client::try_from(config).expect("client"), "default");
    let status = common::api_error(plain.get("a").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(
        status.details.map(|d| d.retry_after_seconds),
        Some(1),
        "the Status names the wait"
    );

    // kube's own client waits the Retry-After and tries again.
    let got = pods.get("a").await.expect("retried past the 429");
    assert_eq!(got.metadata.name.as_deref(), Some("a"));
    let requests = admin(&client, "GET", "/kube-sim/requests", json!({})).await;
    assert_eq!(count(&requests, "get", "pods", "kube-sim-admin"), 3);
    // The error's count is spent: no fault is left.
    let left = admin(&client, "GET", "/kube-sim/faults", json!({})).await;
    assert_eq!(left, json!({"latencyMs": 0}));
}

#[tokio::test]
async fn a_500_reaches_the_client_once_and_latency_delays_requests() {
    let sim = common::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim).await, "default");
    sim.set_faults(Faults {
        error: Some(ErrorFault {
            code: 500,
            retry_after_seconds: 1,
            count: Some(1),
            verb: Some("list".to_owned()),
            resource: None,
        }),
        ..Faults::default()
    })
    .expect("valid fault");
    let status = common::api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    pods.list(&ListParams::default())
        .await
        .expect("the next list is served");

    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    })
    .expect("valid fault");
    let started = Instant::now();
    pods.list(&ListParams::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let refused = sim.set_faults(Faults {
        error: Some(ErrorFault {
            code: 418,
            retry_after_seconds: 1,
            count: None,
            verb: None,
            resource: None,
        }),
        ..Faults::default()
    });
    assert!(refused.is_err());
}

/// What a kube-runtime watcher reported, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    InitDone,
    Applied(String),
    Gone,
    OtherError(String),
}

/// Runs kube-runtime's watcher over `api` (with `labels`), reporting what it sees.
fn watch<K>(api: Api<K>, labels: &str) -> mpsc::UnboundedReceiver<Seen>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let config = watcher::Config::default().labels(labels);
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            let seen = match event {
                Ok(WatchEvent::InitDone) => Seen::InitDone,
                Ok(WatchEvent::Apply(o) | WatchEvent::InitApply(o)) => {
                    Seen::Applied(o.meta().name.clone().unwrap_or_default())
                }
                Ok(_) => continue,
                Err(watcher::Error::WatchError(s)) if s.code == 410 => Seen::Gone,
                Err(e) => Seen::OtherError(e.to_string()),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until the watcher reports `wanted`, skipping anything else.
async fn expect_seen(seen: &mut mpsc::UnboundedReceiver<Seen>, wanted: Seen) {
    tokio::time::timeout(common::PATIENCE, async {
        while let Some(s) = seen.recv().await {
            if s == wanted {
                return;
            }
        }
        panic!("the watcher ended");
    })
    .await
    .unwrap_or_else(|_| panic!("the watcher never saw {wanted:?}"));
}

#[tokio::test]
async fn kube_runtimes_watcher_sees_every_change_through_dropped_watches() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    sim.set_faults(Faults {
        watch_drop_after: Some(2),
        ..Faults::default()
    })
    .expect("valid fault");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut seen = watch(maps.clone(), "app=watched");
    expect_seen(&mut seen, Seen::InitDone).await;
    for name in ["c1", "c2", "c3", "c4", "c5"] {
        maps.create(&PostParams::default(), &config_map(name, "watched"))
            .await
            .expect("create");
        expect_seen(&mut seen, Seen::Applied(name.to_owned())).await;
    }
    // Five events at two a stream: the watcher watched at least three times.
    let watches = sim
        .requests()
        .into_iter()
        .find(|c| c.verb == "watch" && c.resource == "configmaps")
        .map_or(0, |c| c.count);
    assert!(watches >= 3, "{watches} watch requests");
}

#[tokio::test]
async fn kube_runtimes_watcher_relists_after_a_410_from_a_compaction() {
    // No bookmark may move the watcher's revision past the compaction.
    let sim = common::start(|c| c.bookmark_interval = Duration::from_secs(3600)).await;
    let client = common::client(&sim).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut seen = watch(maps.clone(), "app=watched");
    expect_seen(&mut seen, Seen::InitDone).await;
    maps.create(&PostParams::default(), &config_map("a", "watched"))
        .await
        .expect("create a");
    expect_seen(&mut seen, Seen::Applied("a".to_owned())).await;
    // A change the watch does not send moves the revision past the watcher's;
    // compacting there makes the watcher's revision gone.
    maps.create(&PostParams::default(), &config_map("n1", "other"))
        .await
        .expect("create n1");
    let compacted = admin(&client, "POST", "/kube-sim/compact", json!({})).await;
    assert!(compacted["revision"].is_string());
    // The open stream (which has sent one event) closes at the next change; the
    // watcher watches again from its own revision and gets 410 Gone.
    sim.set_faults(Faults {
        watch_drop_after: Some(1),
        ..Faults::default()
    })
    .expect("valid fault");
    maps.create(&PostParams::default(), &config_map("n2", "other"))
        .await
        .expect("create n2");
    expect_seen(&mut seen, Seen::Gone).await;
    // It lists again: a is there, and later changes still arrive.
    expect_seen(&mut seen, Seen::Applied("a".to_owned())).await;
    expect_seen(&mut seen, Seen::InitDone).await;
    sim.set_faults(Faults::default()).expect("no faults");
    maps.create(&PostParams::default(), &config_map("b", "watched"))
        .await
        .expect("create b");
    expect_seen(&mut seen, Seen::Applied("b".to_owned())).await;
}

#[tokio::test]
async fn the_admin_api_is_the_admins_only_and_counts_each_user() {
    let sim = common::start(|c| {
        c.users.push(UserConfig {
            name: "alice".to_owned(),
            token: "alice-token".to_owned(),
        });
    })
    .await;
    let alice = common::client_for(&sim, "alice", "alice-token").await;
    let request = http::Request::builder()
        .uri("/kube-sim/requests")
        .body(Vec::new())
        .expect("request");
    let status = common::api_error(alice.request_text(request).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "forbidden: User \"alice\" cannot get path \"/kube-sim/requests\""
    );
    let pods: Api<Pod> = Api::namespaced(alice, "default");
    // Whatever the answer, the request is counted as alice's.
    let _ = pods.get("nope").await;
    let requests = sim.requests();
    assert!(
        requests
            .iter()
            .any(|c| c.user == "alice" && c.verb == "get" && c.resource == "pods"),
        "{requests:?}"
    );
}

/// Polls pod `name` until `done` holds for it.
async fn pod_until(pods: &Api<Pod>, name: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let pod = pods.get(name).await.expect("get");
        if done(&pod) {
            return pod;
        }
        assert!(Instant::now() < deadline, "{name}: {:?}", pod.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[tokio::test]
async fn an_oom_kill_ends_the_container_oomkilled_with_code_137() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut never = pod("hog");
    never.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
    pods.create(&PostParams::default(), &never)
        .await
        .expect("create");
    pod_until(&pods, "hog", |p| phase(p) == Some("Running")).await;
    let wrong = json!({"namespace": "default", "pod": "hog", "container": "other"});
    let refused = client
        .request_text(
            http::Request::builder()
                .method("POST")
                .uri("/kube-sim/oom-kill")
                .body(wrong.to_string().into_bytes())
                .expect("request"),
        )
        .await;
    assert_eq!(common::api_error(refused.unwrap_err()).code, 400);

    let kill = json!({"namespace": "default", "pod": "hog", "container": "main"});
    admin(&client, "POST", "/kube-sim/oom-kill", kill).await;
    let ended = pod_until(&pods, "hog", |p| phase(p) == Some("Failed")).await;
    let status = ended.status.expect("status");
    let state = status.container_statuses.expect("statuses")[0]
        .state
        .clone()
        .expect("state");
    let terminated = state.terminated.expect("terminated");
    assert_eq!(
        (terminated.reason.as_deref(), terminated.exit_code),
        (Some("OOMKilled"), 137)
    );
}
