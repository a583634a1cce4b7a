//! The garbage collector, as the real control plane's does it with background
//! propagation: an object whose `metadata.ownerReferences` name only owners
//! that are gone (no object of that kind and name in its namespace, or one
//! with another uid) is deleted; one that keeps an owner loses the references
//! to the gone ones. It acts on every change: the deletion of an object (its
//! dependents are checked) and the creation or change of one with owner
//! references (a reference to an owner already gone is collected at once).
//! Owners of kinds kube-sim does not serve count as present, as the real
//! collector leaves what it cannot resolve. A watch of the changes that fell
//! behind checks every object with owner references.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::objects;
use crate::resources::{self, Resource};
use crate::store::{Change, ChangeKind, Key, StoreError};

/// Runs the collector until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut changes = cluster.store.changes();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => collect_after(&cluster, &change),
                Err(RecvError::Lagged(_)) => collect_everywhere(&cluster, None),
                Err(RecvError::Closed) => return,
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Checks what `change` may have left without an owner.
fn collect_after(cluster: &Cluster, change: &Change) {
    match change.kind {
        ChangeKind::Deleted => {
            let uid = objects::uid(&change.object);
            let namespace = Some(change.key.namespace.as_str()).filter(|ns| !ns.is_empty());
            collect_everywhere(cluster, Some((namespace, uid)));
        }
        ChangeKind::Added | ChangeKind::Modified => {
            if let Some(resource) = resources::ALL
                .iter()
                .find(|r| r.name == change.key.resource)
            {
                collect(cluster, resource, &change.object);
            }
        }
    }
}

/// Checks every object with owner references (those naming `owner`'s uid
/// only, in its namespace when it has one, if given).
fn collect_everywhere(cluster: &Cluster, owner: Option<(Option<&str>, &str)>) {
    for resource in resources::ALL {
        let namespace = owner.and_then(|(namespace, _)| namespace);
        let (objects, _) = cluster.store.list(resource.name, namespace);
        for object in objects {
            let names_owner = owner_references(&object)
                .any(|reference| owner.is_none_or(|(_, uid)| reference["uid"] == uid));
            if names_owner {
                collect(cluster, resource, &object);
            }
        }
    }
}

fn owner_references(object: &Value) -> impl Iterator<Item = &Value> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
}

/// Deletes `object` (of `resource`) when every owner it names is gone, or
/// drops the references to the gone ones when some owner remains.
fn collect(cluster: &Cluster, resource: &Resource, object: &Value) {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let (gone, kept): (Vec<&Value>, Vec<&Value>) =
        owner_references(object).partition(|reference| is_gone(cluster, namespace, reference));
    if gone.is_empty() {
        return;
    }
    let key = Key::new(resource.name, namespace, objects::name(object));
    let uid = objects::uid(object).to_owned();
    let same = |current: &Value| {
        if objects::uid(current) == uid {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    };
    // Something else may have deleted or replaced it meanwhile: nothing to do.
    if kept.is_empty() {
        let _ = cluster.store.delete::<StoreError>(&key, same);
    } else {
        let kept: Vec<Value> = kept.into_iter().cloned().collect();
        let _ = cluster.store.update::<StoreError>(&key, |current| {
            same(current)?;
            current["metadata"]["ownerReferences"] = Value::Array(kept);
            Ok(())
        });
    }
}

/// Whether the owner `reference` names (from an object in `namespace`) is
/// gone: no object of its kind and name, or one with another uid. A kind
/// kube-sim does not serve is never gone.
fn is_gone(cluster: &Cluster, namespace: &str, reference: &Value) -> bool {
    let api_version = reference["apiVersion"].as_str().unwrap_or_default();
    let kind = reference["kind"].as_str().unwrap_or_default();
    let Some(resource) = resources::of_kind(api_version, kind) else {
        return false;
    };
    let owner_namespace = if resource.namespaced { namespace } else { "" };
    let name = reference["name"].as_str().unwrap_or_default();
    let key = Key::new(resource.name, owner_namespace, name);
    cluster
        .store
        .get(&key)
        .is_none_or(|owner| objects::uid(&owner) != reference["uid"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn cluster() -> Cluster {
        Cluster::new(Config::default(), std::env::temp_dir())
    }

    fn put(cluster: &Cluster, resource: &'static str, name: &str, object: Value) -> Value {
        let stored = cluster
            .store
            .create(Key::new(resource, "default", name), object)
            .expect("created");
        (*stored).clone()
    }

    fn owned_by(owners: &[&Value]) -> Value {
        let references: Vec<Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "Pod", "name": objects::name(o), "uid": objects::uid(o)}))
            .collect();
        json!({"metadata": {"name": "s", "namespace": "default", "ownerReferences": references}})
    }

    fn pod(cluster: &Cluster, name: &str) -> Value {
        put(
            cluster,
            "pods",
            name,
            json!({"metadata": {"name": name, "namespace": "default"}}),
        )
    }

    fn secret(cluster: &Cluster) -> Option<Arc<Value>> {
        cluster.store.get(&Key::new("secrets", "default", "s"))
    }

    fn delete_pod(cluster: &Cluster, name: &str) {
        let key = Key::new("pods", "default", name);
        let gone = cluster
            .store
            .delete::<StoreError>(&key, |_| Ok(()))
            .expect("deleted");
        let change = Change {
            revision: 0,
            kind: ChangeKind::Deleted,
            key,
            object: gone,
            previous: None,
        };
        collect_after(cluster, &change);
    }

    #[test]
    fn a_dependent_goes_with_its_last_owner_and_loses_the_others_references() {
        let cluster = cluster();
        let (a, b) = (pod(&cluster, "a"), pod(&cluster, "b"));
        put(&cluster, "secrets", "s", owned_by(&[&a, &b]));
        delete_pod(&cluster, "a");
        let left = secret(&cluster).expect("kept while b is there");
        let references: Vec<&Value> = owner_references(&left).collect();
        assert_eq!(references.len(), 1);
        assert_eq!(references[0]["name"], "b");
        delete_pod(&cluster, "b");
        assert!(secret(&cluster).is_none());
    }

    #[test]
    fn an_owner_of_the_same_name_with_another_uid_or_an_unknown_kind_counts_as_gone_or_present() {
        let cluster = cluster();
        let a = pod(&cluster, "a");
        let mut stale = a.clone();
        stale["metadata"]["uid"] = json!("another");
        let stored = put(&cluster, "secrets", "s", owned_by(&[&stale]));
        collect(&cluster, &resources::SECRETS, &stored);
        assert!(secret(&cluster).is_none(), "another uid is not the owner");
        let mut unknown = owned_by(&[&a]);
        unknown["metadata"]["ownerReferences"][0]["kind"] = json!("Widget");
        let stored = put(&cluster, "secrets", "s", unknown);
        delete_pod(&cluster, "a");
        collect(&cluster, &resources::SECRETS, &stored);
        assert!(secret(&cluster).is_some(), "an unknown kind is never gone");
    }
}
