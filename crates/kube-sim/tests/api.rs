//! The API surface through kube-rs: discovery, create/get/list/delete of pods with
//! real Status errors, generateName, resourceVersion, preconditions, lists at a
//! revision and 410 Gone once it is compacted.

mod common;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]},
    }))
    .expect("pod")
}

#[tokio::test]
async fn pods_are_created_read_listed_and_deleted_with_real_status_errors() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.minor, "32");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_owned()), "{names:?}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let a = pods
        .create(&PostParams::default(), &pod("a", json!({"app": "web"})))
        .await
        .expect("create a");
    assert!(a.metadata.uid.is_some());
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(a.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    let rv_a: u64 = a
        .metadata
        .resource_version
        .expect("rv")
        .parse()
        .expect("number");

    let mut generated = pod("", json!({"app": "db"}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".to_owned());
    let g = pods
        .create(&PostParams::default(), &generated)
        .await
        .expect("create generated");
    let g_name = g.metadata.name.expect("name");
    assert!(g_name.starts_with("gen-") && g_name.len() == 9, "{g_name}");
    let rv_g: u64 = g
        .metadata
        .resource_version
        .expect("rv")
        .parse()
        .expect("number");
    assert!(rv_g > rv_a);

    let exists = common::api_error(
        pods.create(&PostParams::default(), &pod("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(exists.message, "pods \"a\" already exists");

    let missing = common::api_error(pods.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "pods \"nope\" not found");

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 1);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .expect("list by field");
    assert_eq!(by_name.items.len(), 1);
    let bad_field = common::api_error(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad_field.code, 400);

    // A list as of a's revision shows a only.
    let then = pods
        .list(
            &ListParams::default()
                .at(&rv_a.to_string())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .expect("exact list");
    assert_eq!(then.items.len(), 1);

    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let conflict = common::api_error(pods.delete("a", &wrong_uid).await.unwrap_err());
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict
            .message
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        conflict.message
    );

    // Not bound to a node, so deleted at once.
    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        common::api_error(pods.get("a").await.unwrap_err()).code,
        404
    );

    let no_ns: Api<Pod> = Api::namespaced(client, "nowhere");
    let err = common::api_error(
        no_ns
            .create(&PostParams::default(), &pod("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn a_list_at_a_compacted_revision_is_gone() {
    let sim = common::start(|c| c.history = 3).await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim).await, "default");
    let first = pods
        .create(&PostParams::default(), &pod("first", json!({})))
        .await
        .expect("create");
    for name in ["b", "c", "d", "e"] {
        pods.create(&PostParams::default(), &pod(name, json!({})))
            .await
            .expect("create");
    }
    let rv = first.metadata.resource_version.expect("rv");
    let gone = common::api_error(
        pods.list(
            &ListParams::default()
                .at(&rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let sim = common::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim).await, "default");
    for name in ["p1", "p2", "p3"] {
        pods.create(&PostParams::default(), &pod(name, json!({})))
            .await
            .expect("create");
    }
    let page = pods
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.expect("continue token");
    pods.create(&PostParams::default(), &pod("p4", json!({})))
        .await
        .expect("create");
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    // The second page is as of the first page's revision: p4 is not in it.
    let names: Vec<_> = rest
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p3"]);
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));
}

#[tokio::test]
async fn requests_without_a_known_token_are_unauthorized() {
    let sim = common::start(|_| {}).await;
    let client = common::client_for(&sim, "mallory", "wrong-token").await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let err = common::api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn a_protobuf_body_is_refused_as_an_unsupported_media_type() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let request = http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(b"k8s\x00".to_vec())
        .expect("request");
    let err = common::api_error(client.request_text(request).await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    assert_eq!(
        err.message,
        "the body of the request was in an unknown format - accepted media types include: application/json"
    );
}
