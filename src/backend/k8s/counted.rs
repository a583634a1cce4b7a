//! Every request the Kubernetes client sends, counted by kind (verb and
//! resource, e.g. `get pods`, `watch pods`, `create secrets`, `get pods/log`)
//! and by whether it failed (no response, or a status of 400 or above): a tower
//! layer under the client, so that no call site can be missed.

use crate::observe::metrics::ApiCalls;
use http::{Method, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The layer that counts.
#[derive(Clone)]
pub struct CountLayer {
    calls: ApiCalls,
}

impl CountLayer {
    /// Counts into `calls`.
    pub fn new(calls: ApiCalls) -> Self {
        CountLayer { calls }
    }
}

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// A client service whose requests are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    calls: ApiCalls,
}

impl<S, B, R> tower::Service<Request<B>> for Counted<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let kind = request_kind(request.method(), request.uri());
        let calls = self.calls.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let failed = response
                .as_ref()
                .map_or(true, |response| response.status().as_u16() >= 400);
            calls.count(&kind, failed);
            response
        })
    }
}

/// A request's kind: its verb, the way the API server names it, and its
/// resource (with a subresource after a `/`).
fn request_kind(method: &Method, uri: &http::Uri) -> String {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/GROUP/VERSION/...`; anything else is discovery.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return format!("{} discovery", verb(method, false, uri)),
    };
    // `namespaces/NS/RESOURCE/...` is RESOURCE in a namespace; `namespaces`
    // and `namespaces/NS` alone are the namespaces themselves.
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named, subresource) = match rest {
        [] => ("", false, None),
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, subresource, ..] => (*resource, true, Some(*subresource)),
    };
    let verb = verb(method, named, uri);
    match subresource {
        Some(subresource) => format!("{verb} {resource}/{subresource}"),
        None => format!("{verb} {resource}"),
    }
}

/// The API server's verb for `method` on a `named` object or a collection.
fn verb(method: &Method, named: bool, uri: &http::Uri) -> &'static str {
    let watching = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, uri: &str) -> String {
        request_kind(&method, &uri.parse().unwrap())
    }

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let ns = "/api/v1/namespaces/jobs";
        assert_eq!(kind(Method::POST, &format!("{ns}/pods")), "create pods");
        assert_eq!(kind(Method::GET, &format!("{ns}/pods/p1")), "get pods");
        assert_eq!(
            kind(Method::GET, &format!("{ns}/pods?labelSelector=a%3Db")),
            "list pods"
        );
        assert_eq!(
            kind(
                Method::GET,
                &format!("{ns}/pods?watch=true&resourceVersion=5")
            ),
            "watch pods"
        );
        assert_eq!(kind(Method::PATCH, &format!("{ns}/pods/p1")), "patch pods");
        assert_eq!(
            kind(Method::DELETE, &format!("{ns}/secrets/s1")),
            "delete secrets"
        );
        assert_eq!(
            kind(Method::GET, &format!("{ns}/pods/p1/log?follow=true")),
            "get pods/log"
        );
        assert_eq!(kind(Method::GET, "/api/v1/nodes"), "list nodes");
        assert_eq!(
            kind(Method::GET, "/api/v1/namespaces/jobs"),
            "get namespaces"
        );
        assert_eq!(
            kind(
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            ),
            "create selfsubjectaccessreviews"
        );
        assert_eq!(kind(Method::GET, "/version"), "list discovery");
    }
}
