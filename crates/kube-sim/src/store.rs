//! The object store: every object of every resource, one global resourceVersion
//! counter, and the change log that watches and consistent lists read.
//!
//! Like etcd behind the real server, each write takes the next revision, which
//! becomes the object's `metadata.resourceVersion`. The log keeps every change (with
//! the object before it) back to the compaction point, so a watch can start at any
//! revision after it and a list can be served exactly as of such a revision; older
//! revisions are gone (`410 Gone`). Changes are also broadcast to open watches; a
//! watch that falls too far behind is dropped, as the real watch cache drops it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::meta;

/// Where an object lives: resource (plural name), namespace ("" if cluster-scoped)
/// and name. Ordered as the real server orders lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &'static str, namespace: &str, name: &str) -> Key {
        Key {
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What a change did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, as the log and watches see it.
#[derive(Debug)]
pub struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub key: Key,
    /// The object after the change (for a delete: as it was, at the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change; `None` for an add.
    pub previous: Option<Arc<Value>>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object exists")]
    Exists,
    #[error("object not found")]
    NotFound,
    /// The revision asked for has been compacted away; carries the oldest kept one.
    #[error("too old resource version: {requested} ({oldest})")]
    Compacted { requested: u64, oldest: u64 },
    /// The revision asked for is newer than the store's.
    #[error("too large resource version: {requested}, current: {current}")]
    Future { requested: u64, current: u64 },
}

struct Inner {
    revision: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    log: VecDeque<Arc<Change>>,
    /// Changes after this revision are all in `log`.
    compacted: u64,
}

impl Inner {
    /// Whether the state as of `revision` can still be told.
    fn check_revision(&self, revision: u64) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::Future {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest: self.compacted,
            });
        }
        Ok(())
    }
}

/// The shared object store.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    log_limit: usize,
}

/// A watch's starting point: the changes after the asked revision, and a receiver
/// for every later one.
pub struct Subscription {
    pub backlog: Vec<Arc<Change>>,
    pub receiver: broadcast::Receiver<Arc<Change>>,
    /// The store's revision when the subscription was taken.
    pub revision: u64,
}

impl Store {
    /// An empty store keeping up to `log_limit` changes for watches and exact lists,
    /// and buffering up to `watch_buffer` changes for a slow watch before dropping it.
    pub fn new(log_limit: usize, watch_buffer: usize) -> Store {
        Store {
            inner: Mutex::new(Inner {
                revision: 1,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                compacted: 1,
            }),
            changes: broadcast::channel(watch_buffer.max(1)).0,
            log_limit: log_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-written state (every write
        // is one insert plus one log push), so the store stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change under the lock: takes the next revision (which becomes
    /// the object's `resourceVersion`), updates the objects, logs, trims the log
    /// and broadcasts. Returns the object as stored.
    fn record(
        &self,
        inner: &mut Inner,
        kind: ChangeKind,
        key: Key,
        mut object: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        inner.revision += 1;
        object["metadata"]["resourceVersion"] = Value::String(inner.revision.to_string());
        let object = Arc::new(object);
        match kind {
            ChangeKind::Deleted => inner.objects.remove(&key),
            ChangeKind::Added | ChangeKind::Modified => {
                inner.objects.insert(key.clone(), object.clone())
            }
        };
        let change = Arc::new(Change {
            revision: inner.revision,
            kind,
            key,
            object: object.clone(),
            previous,
        });
        inner.log.push_back(change.clone());
        while inner.log.len() > self.log_limit {
            if let Some(old) = inner.log.pop_front() {
                inner.compacted = old.revision;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
        object
    }

    /// Stores a new object at `key`, setting `resourceVersion`, `uid` and
    /// `creationTimestamp`. Returns the stored object.
    pub fn create(&self, key: Key, mut object: Value) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::Exists);
        }
        let meta = &mut object["metadata"];
        meta["uid"] = Value::String(meta::new_uid());
        meta["creationTimestamp"] = Value::String(meta::now());
        Ok(self.record(&mut inner, ChangeKind::Added, key, object, None))
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.lock().objects.get(key).cloned()
    }

    /// Changes the object at `key` with `edit` (which may refuse with its own
    /// error). A change that leaves the object as it was writes nothing, as the real
    /// server does not bump the revision of a no-op update.
    pub fn update<E: From<StoreError>>(
        &self,
        key: &Key,
        edit: impl FnOnce(&mut Value) -> Result<(), E>,
    ) -> Result<Arc<Value>, E> {
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(key)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let mut next = (*current).clone();
        edit(&mut next)?;
        // Identity fields are the server's, whatever the edit did.
        for field in ["uid", "creationTimestamp", "resourceVersion"] {
            next["metadata"][field] = current["metadata"][field].clone();
        }
        if next == *current {
            return Ok(current);
        }
        let kind = ChangeKind::Modified;
        Ok(self.record(&mut inner, kind, key.clone(), next, Some(current)))
    }

    /// Removes the object at `key` if `check` accepts it; returns it with the
    /// delete's revision as its `resourceVersion` (what a watch sees in DELETED).
    pub fn delete<E: From<StoreError>>(
        &self,
        key: &Key,
        check: impl FnOnce(&Value) -> Result<(), E>,
    ) -> Result<Arc<Value>, E> {
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(key)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        check(&current)?;
        let last = (*current).clone();
        let kind = ChangeKind::Deleted;
        Ok(self.record(&mut inner, kind, key.clone(), last, Some(current)))
    }

    /// The objects of `resource` (in `namespace`, if given) now, in key order, and
    /// the revision they are as of.
    pub fn list(&self, resource: &'static str, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        (
            Self::select(&inner.objects, resource, namespace),
            inner.revision,
        )
    }

    fn select(
        objects: &BTreeMap<Key, Arc<Value>>,
        resource: &'static str,
        namespace: Option<&str>,
    ) -> Vec<Arc<Value>> {
        let start = Key::new(resource, namespace.unwrap_or(""), "");
        objects
            .range(start..)
            .take_while(|(k, _)| {
                k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The objects of `resource` as they were at `revision`, rebuilt by undoing
    /// the logged changes after it.
    pub fn list_at(
        &self,
        resource: &'static str,
        namespace: Option<&str>,
        revision: u64,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let inner = self.lock();
        inner.check_revision(revision)?;
        let mut objects: BTreeMap<Key, Arc<Value>> = inner
            .objects
            .range(Key::new(resource, "", "")..)
            .take_while(|(k, _)| k.resource == resource)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for change in inner.log.iter().rev().take_while(|c| c.revision > revision) {
            if change.key.resource != resource {
                continue;
            }
            match &change.previous {
                Some(prev) => objects.insert(change.key.clone(), prev.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(Self::select(&objects, resource, namespace))
    }

    /// Forgets every change so far, as an etcd compaction at the current revision
    /// does: lists and watches at any older revision are gone from now on. Returns
    /// the revision compacted to.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.log.clear();
        inner.compacted = inner.revision;
        inner.revision
    }

    /// A subscription to every change after `revision`.
    pub fn subscribe(&self, revision: u64) -> Result<Subscription, StoreError> {
        let inner = self.lock();
        inner.check_revision(revision)?;
        let backlog = inner
            .log
            .iter()
            .filter(|c| c.revision > revision)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            receiver: self.changes.subscribe(),
            revision: inner.revision,
        })
    }

    /// Every change from now on.
    pub fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// A subscription to every change from now on, with the current objects of
    /// `resource` (a list-then-watch taken atomically).
    pub fn list_and_subscribe(
        &self,
        resource: &'static str,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Value>>, Subscription) {
        let inner = self.lock();
        let objects = Self::select(&inner.objects, resource, namespace);
        let sub = Subscription {
            backlog: Vec::new(),
            receiver: self.changes.subscribe(),
            revision: inner.revision,
        };
        (objects, sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}})
    }

    fn rv(v: &Value) -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("resourceVersion")
    }

    #[test]
    fn every_write_takes_the_next_revision_and_no_ops_take_none() {
        let store = Store::new(100, 16);
        let a = store
            .create(Key::new("pods", "default", "a"), pod("a"))
            .expect("a");
        let b = store
            .create(Key::new("pods", "default", "b"), pod("b"))
            .expect("b");
        assert_eq!(rv(&b), rv(&a) + 1);
        let key = Key::new("pods", "default", "a");
        let same = store.update::<StoreError>(&key, |_| Ok(())).expect("no-op");
        assert_eq!(rv(&same), rv(&a));
        let changed = store
            .update::<StoreError>(&key, |o| {
                o["spec"] = json!({"x": 1});
                Ok(())
            })
            .expect("update");
        assert_eq!(rv(&changed), rv(&b) + 1);
        assert_eq!(store.create(key, pod("a")).unwrap_err(), StoreError::Exists);
    }

    #[test]
    fn lists_are_rebuilt_as_of_a_past_revision_until_compacted() {
        let store = Store::new(4, 16);
        let a = store
            .create(Key::new("pods", "default", "a"), pod("a"))
            .expect("a");
        let at = rv(&a);
        store
            .create(Key::new("pods", "default", "b"), pod("b"))
            .expect("b");
        store
            .delete::<StoreError>(&Key::new("pods", "default", "a"), |_| Ok(()))
            .expect("delete");
        let then = store.list_at("pods", None, at).expect("in the log");
        let names: Vec<&str> = then
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a"]);
        for name in ["c", "d", "e"] {
            store
                .create(Key::new("pods", "default", name), pod(name))
                .expect("c");
        }
        assert!(matches!(
            store.list_at("pods", None, at),
            Err(StoreError::Compacted { .. })
        ));
        assert!(matches!(
            store.subscribe(store.list("pods", None).1 + 5),
            Err(StoreError::Future { .. })
        ));
    }

    #[test]
    fn a_subscription_replays_what_came_after_its_revision() {
        let store = Store::new(2, 16);
        let a = store
            .create(Key::new("pods", "default", "a"), pod("a"))
            .expect("a");
        store
            .create(Key::new("pods", "default", "b"), pod("b"))
            .expect("b");
        let sub = store.subscribe(rv(&a)).expect("kept");
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].key.name, "b");
        store
            .create(Key::new("pods", "default", "c"), pod("c"))
            .expect("c");
        store
            .create(Key::new("pods", "default", "d"), pod("d"))
            .expect("d");
        assert!(matches!(
            store.subscribe(rv(&a)),
            Err(StoreError::Compacted { .. })
        ));
    }

    #[test]
    fn a_compaction_makes_every_older_revision_gone() {
        let store = Store::new(100, 16);
        let created: Vec<Arc<Value>> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let key = Key::new("pods", "default", name);
                store.create(key, pod(name)).expect("created")
            })
            .collect();
        let a = &created[0];
        let now = store.compact();
        assert!(matches!(
            store.subscribe(rv(a)),
            Err(StoreError::Compacted { .. })
        ));
        assert!(store.subscribe(now).is_ok_and(|s| s.backlog.is_empty()));
        assert_eq!(store.list_at("pods", None, now).expect("now").len(), 2);
    }
}
