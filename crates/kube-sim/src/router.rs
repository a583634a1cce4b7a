//! Request paths to routes: discovery documents, resource collections and objects
//! (with subresources), health checks and the admin API.

use hyper::Method;

use crate::resources::{self, Resource};
use crate::status::ApiError;

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/GROUP`.
    Group(String),
    /// `/api/v1` (group "") or `/apis/GROUP/v1`.
    ResourceList(String),
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// A collection, an object, or an object's subresource.
    Resource(Target),
    /// `/openapi/v3` (empty) or `/openapi/v3/GROUP-VERSION-PATH`.
    OpenApi(String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/kube-sim/...`: the rest of the path.
    Admin(String),
}

/// The resource part of a request: which resource, where, which object.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    /// `None` for a cluster-wide request on a namespaced resource.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The verb of a request with `method` on this target, as RBAC and the
    /// request counter name it.
    pub fn verb(&self, method: &Method, watch: bool) -> &'static str {
        match (method, self.name.is_some()) {
            (&Method::GET | &Method::HEAD, true) => "get",
            (&Method::GET | &Method::HEAD, false) if watch => "watch",
            (&Method::GET | &Method::HEAD, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        }
    }

    /// `pods`, or `pods/log` for a subresource, as RBAC rules name it.
    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource.name),
            None => self.resource.name.to_owned(),
        }
    }
}

/// The longest path segment kube-sim reads (names are at most 253 characters).
const MAX_SEGMENT: usize = 253;

/// Parses a request path.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.iter().any(|s| s.len() > MAX_SEGMENT) {
        return Err(ApiError::NoRoute);
    }
    match segments.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => Ok(Route::Health),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::Groups),
        ["apis", group] => Ok(Route::Group((*group).to_owned())),
        ["api", "v1"] => Ok(Route::ResourceList(String::new())),
        ["apis", group, "v1"] => Ok(Route::ResourceList((*group).to_owned())),
        ["api", "v1", rest @ ..] => target("", rest).map(Route::Resource),
        ["apis", group, "v1", rest @ ..] => target(group, rest).map(Route::Resource),
        ["openapi", "v2"] => Ok(Route::OpenApiV2),
        ["openapi", "v3", rest @ ..] => Ok(Route::OpenApi(rest.join("/"))),
        ["kube-sim", rest @ ..] => Ok(Route::Admin(rest.join("/"))),
        _ => Err(ApiError::NoRoute),
    }
}

fn target(group: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find = |name: &str| resources::find(group, name).ok_or(ApiError::NoRoute);
    let (resource, namespace, rest) = match rest {
        ["namespaces", ns, resource, rest @ ..] => {
            let r = find(resource)?;
            if !r.namespaced {
                return Err(ApiError::NoRoute);
            }
            (r, Some((*ns).to_owned()), rest)
        }
        [resource, rest @ ..] => (find(resource)?, None, rest),
        [] => return Err(ApiError::NoRoute),
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] if resource.subresources.contains(sub) => {
            (Some((*name).to_owned()), Some((*sub).to_owned()))
        }
        _ => return Err(ApiError::NoRoute),
    };
    // `/api/v1/namespaces/NAME` is the namespace itself.
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::NoRoute);
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{NAMESPACES, PODS, ROLES};

    #[test]
    fn resource_paths() {
        let Route::Resource(t) = route("/api/v1/namespaces/ns/pods/p/log").expect("route") else {
            panic!("not a resource");
        };
        assert_eq!(t.resource, &PODS);
        assert_eq!(t.namespace.as_deref(), Some("ns"));
        assert_eq!(t.name.as_deref(), Some("p"));
        assert_eq!(t.subresource.as_deref(), Some("log"));

        let Route::Resource(t) = route("/api/v1/namespaces/ns").expect("route") else {
            panic!("not a resource");
        };
        assert_eq!(t.resource, &NAMESPACES);
        assert_eq!(t.name.as_deref(), Some("ns"));

        let Route::Resource(t) =
            route("/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles").expect("route")
        else {
            panic!("not a resource");
        };
        assert_eq!(t.resource, &ROLES);
        assert_eq!(route("/api/v1/pods").ok().map(|_| ()), Some(()));
    }

    #[test]
    fn verbs_and_resource_paths() {
        let Route::Resource(log) = route("/api/v1/namespaces/a/pods/p/log").expect("route") else {
            panic!("not a resource");
        };
        assert_eq!(log.verb(&Method::GET, false), "get");
        assert_eq!(log.resource_path(), "pods/log");
        let Route::Resource(pods) = route("/api/v1/namespaces/a/pods").expect("route") else {
            panic!("not a resource");
        };
        assert_eq!(pods.verb(&Method::GET, true), "watch");
        assert_eq!(pods.verb(&Method::GET, false), "list");
        assert_eq!(pods.verb(&Method::POST, false), "create");
        assert_eq!(pods.resource_path(), "pods");
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/api/v1/widgets",
            "/api/v1/pods/p",
            "/api/v1/namespaces/a/pods/p/exec",
            "/nope",
        ] {
            assert_eq!(route(path), Err(ApiError::NoRoute), "{path}");
        }
    }
}
