//! Objects created at start from YAML (or JSON) files: the Roles, RoleBindings,
//! ClusterRoles and ClusterRoleBindings of [`crate::Config::rbac_files`], each
//! file holding one or more documents.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api;
use crate::cluster::Cluster;
use crate::objects;
use crate::resources::{CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES};
use crate::router::Target;
use crate::status::ApiError;

/// The longest `kind` repeated in an error.
const MAX_KIND_SHOWN: usize = 64;

/// Why an RBAC file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error(
        "{path}: document {index} is a {kind:?}; only Role, RoleBinding, ClusterRole and ClusterRoleBinding are read"
    )]
    Kind {
        path: PathBuf,
        index: usize,
        kind: String,
    },
    #[error("{path}: document {index}: {source}")]
    Create {
        path: PathBuf,
        index: usize,
        #[source]
        source: ApiError,
    },
}

/// Creates every RBAC object in the file at `path` (a Role or RoleBinding in its
/// `metadata.namespace`, `default` if unset). Returns how many it created.
pub fn load_rbac(cluster: &Cluster, path: &Path) -> Result<usize, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|source| ManifestError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    let mut created = 0;
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let resource = match document["kind"].as_str() {
            Some("Role") => &ROLES,
            Some("RoleBinding") => &ROLE_BINDINGS,
            Some("ClusterRole") => &CLUSTER_ROLES,
            Some("ClusterRoleBinding") => &CLUSTER_ROLE_BINDINGS,
            other => {
                return Err(ManifestError::Kind {
                    path: path.to_owned(),
                    index,
                    kind: other
                        .unwrap_or_default()
                        .chars()
                        .take(MAX_KIND_SHOWN)
                        .collect(),
                });
            }
        };
        let namespace = document["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_owned();
        let target = Target {
            resource,
            namespace: resource.namespaced.then_some(namespace),
            name: None,
            subresource: None,
        };
        objects::normalize(resource, document)
            .and_then(|mut object| api::create_object(cluster, &target, &mut object))
            .map_err(|source| ManifestError::Create {
                path: path.to_owned(),
                index,
                source,
            })?;
        created += 1;
    }
    Ok(created)
}
