//! The operator's allow-lists, on kube-sim and the real Docker engine: a
//! request may mount only the Secrets, claims and named volumes the worker's
//! configuration names (exactly or by glob), never the worker's own NATS
//! credentials, and set only the label keys it allows. A refusal ends the job
//! in `error` with reason `NotAllowed`, names the option to change, and
//! creates no pod or container.

use crate::common::docker::{
    containers_of, docker_cli, docker_worker, in_container, test_image, unique, wait_until_removed,
};
use crate::common::k8s::{Cluster, in_pod, k8s_worker};
use crate::common::system::{System, states};
use flare_launcher::protocol::{JobEvent, LaunchRequest, Mount};
use flare_launcher::state::JobState;

fn mounting(mut request: LaunchRequest, source: &str) -> LaunchRequest {
    request.mounts = vec![Mount {
        source: source.into(),
        target: "/m".into(),
        read_only: true,
    }];
    request
}

/// Asserts the job ended in `error`/`NotAllowed` naming `option`.
fn assert_not_allowed(events: &[JobEvent], option: &str) {
    assert_eq!(states(events), ["starting", "error"], "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("NotAllowed"), "{last:?}");
    let message = last.message.as_deref().unwrap_or_default();
    assert!(message.contains(option), "{option} named: {message}");
}

#[tokio::test]
async fn pods_mount_only_the_secrets_and_claims_the_operator_allows() {
    let cluster = Cluster::start(|_| {}).await;
    cluster
        .create_claims_and_secrets(&["data", "models-1"], &["creds", "flare-launcher-nats"])
        .await;
    let none = System::start_with(|config| k8s_worker(config, &cluster)).await;
    for (source, option) in [
        ("secret:creds", "--k8s-allowed-secrets"),
        ("pvc:data", "--k8s-allowed-claims"),
    ] {
        let job_id = unique("none");
        let events = none.run(&mounting(in_pod(&job_id, "true"), source)).await;
        assert_not_allowed(&events, option);
    }
    let mut labelled = in_pod(&unique("label"), "true");
    labelled.labels.insert("app".into(), "web".into());
    assert_not_allowed(&none.run(&labelled).await, "--allowed-label-prefixes");
    assert_eq!(cluster.request_count("create", "pods"), 0, "no pod made");

    let allowing = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.worker_id = "w2".into();
        config.k8s.allowed_secrets = vec!["*".into()];
        config.k8s.allowed_claims = vec!["data".into(), "models-*".into()];
        config.allowed_label_prefixes = vec!["fl.example.org/".into()];
    })
    .await;
    let own = unique("own");
    let events = allowing
        .run(&mounting(
            in_pod(&own, "true"),
            "secret:flare-launcher-nats",
        ))
        .await;
    assert_not_allowed(&events, "--k8s-nats-secret");
    let other = unique("other");
    let events = allowing
        .run(&mounting(in_pod(&other, "true"), "pvc:scratch"))
        .await;
    assert_not_allowed(&events, "--k8s-allowed-claims");
    let mut outside = in_pod(&unique("outside"), "true");
    outside
        .labels
        .insert("example.org/app".into(), "web".into());
    assert_not_allowed(&allowing.run(&outside).await, "--allowed-label-prefixes");
    assert_eq!(cluster.request_count("create", "pods"), 0, "no pod made");

    for source in ["pvc:data", "pvc:models-1", "secret:creds"] {
        let job_id = unique("allowed");
        let mut request = mounting(in_pod(&job_id, "sleep 600"), source);
        request
            .labels
            .insert("fl.example.org/run".into(), "r1".into());
        allowing.client.launch(&request).await.unwrap();
        let events = allowing
            .events_until(&job_id, |e| e.state != JobState::Starting)
            .await;
        assert_eq!(
            states(&events),
            ["starting", "running"],
            "{source}: {events:?}"
        );
        let pod = serde_json::to_value(&cluster.pods_of(&job_id).await[0]).unwrap();
        assert_eq!(pod["metadata"]["labels"]["fl.example.org/run"], "r1");
        let volume = &pod["spec"]["volumes"][0];
        let name = source.split_once(':').unwrap().1;
        let named = [
            &volume["persistentVolumeClaim"]["claimName"],
            &volume["secret"]["secretName"],
        ];
        assert!(named.iter().any(|n| *n == name), "{source}: {volume}");
        allowing.client.terminate(&job_id, Some(0)).await.unwrap();
        allowing.events_until_terminal(&job_id).await;
    }
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn containers_mount_only_the_volumes_the_operator_allows() {
    test_image();
    let prefix = unique("flare-allowed");
    let system = System::start_with(|config| {
        docker_worker(config);
        config.docker.allowed_volumes = vec![format!("{prefix}-*"), "flare-exact-volume".into()];
    })
    .await;
    let refused = unique("refused");
    let events = system
        .run(&mounting(
            in_container(&refused, "true"),
            "pvc:someone-elses",
        ))
        .await;
    assert_not_allowed(&events, "--docker-allowed-volumes");
    assert!(containers_of(&refused).is_empty(), "no container made");
    let labelled = unique("label");
    let mut request = in_container(&labelled, "true");
    request
        .labels
        .insert("traefik.enable".into(), "true".into());
    assert_not_allowed(&system.run(&request).await, "--allowed-label-keys");
    assert!(containers_of(&labelled).is_empty(), "no container made");

    let mut ran = Vec::new();
    let volume = format!("{prefix}-1");
    for name in [volume.as_str(), "flare-exact-volume"] {
        let job_id = unique("allowed");
        ran.push(job_id.clone());
        let mut request = mounting(in_container(&job_id, "ls -d /m"), &format!("pvc:{name}"));
        request
            .labels
            .insert("nvflare-site".into(), "site-1".into());
        let events = system.run(&request).await;
        assert_eq!(
            events.last().unwrap().state,
            JobState::Succeeded,
            "{name}: {events:?}"
        );
    }
    wait_until_removed(&ran.iter().map(String::as_str).collect::<Vec<_>>()).await;
    docker_cli(&["volume", "rm", &volume, "flare-exact-volume"]);
}
