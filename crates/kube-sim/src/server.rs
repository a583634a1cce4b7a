//! The HTTPS front: accepts TLS connections, authenticates each request by its
//! bearer token, routes it, counts it, injects the faults in force, authorizes it
//! by RBAC, and answers errors as `Status` objects.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ResourceRequest};
use crate::auth::{Tokens, User};
use crate::cluster::Cluster;
use crate::http::{self, Body};
use crate::query::Query;
use crate::router::{self, Route, Target};
use crate::status::ApiError;
use crate::{admin, openapi, rbac, resources};

/// The largest request body accepted (the real server's limit).
const MAX_BODY: usize = 3 << 20;

/// Everything a request handler needs.
pub struct Front {
    pub cluster: Arc<Cluster>,
    pub tokens: Tokens,
}

/// Accepts connections on `listener` until `shutdown`, each served on its own task.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    front: Arc<Front>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (tcp, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let front = front.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let front = front.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&front, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// Answers one request.
async fn handle(front: &Front, req: Request<Incoming>) -> Response<Body> {
    match respond(front, req).await {
        Ok(response) => response,
        Err(e) => http::error(&e),
    }
}

async fn respond(front: &Front, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let route = router::route(req.uri().path());
    if let Ok(public @ (Route::Health | Route::Version)) = &route {
        return Ok(serve_public(public));
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user: Option<User> = front.tokens.authenticate(auth).cloned();
    let Some(user) = user else {
        return Err(ApiError::Unauthorized);
    };
    let route = route?;
    let query = Query::parse(req.uri().query())?;
    let not_found = || ApiError::NoRoute;
    match route {
        Route::Health | Route::Version => Ok(serve_public(&route)),
        Route::CoreVersions => Ok(http::json(200, &resources::core_versions())),
        Route::Groups => Ok(http::json(200, &resources::group_list())),
        Route::Group(g) => resources::group(&g)
            .map(|v| http::json(200, &v))
            .ok_or_else(not_found),
        Route::ResourceList(g) => resources::resource_list(&g)
            .map(|v| http::json(200, &v))
            .ok_or_else(not_found),
        Route::OpenApiV2 => {
            let accept = req.headers().get(header::ACCEPT);
            Ok(openapi::v2(accept.and_then(|v| v.to_str().ok())))
        }
        Route::OpenApi(path) if path.is_empty() => Ok(http::json(200, &openapi::root())),
        Route::OpenApi(path) => openapi::group_version(&path)
            .map(|v| http::json(200, &v))
            .ok_or_else(not_found),
        Route::Admin(path) => {
            let method = req.method().clone();
            admin::authorize(&user, &method, req.uri().path())?;
            let body = read_body(req).await?;
            admin::handle(&front.cluster, &method, &path, &body)
        }
        Route::Resource(target) => serve_resource(&front.cluster, &user, target, query, req).await,
    }
}

/// A resource request: counted, delayed or failed as the faults in force say,
/// authorized by RBAC, then served.
async fn serve_resource(
    cluster: &Arc<Cluster>,
    user: &User,
    target: Target,
    query: Query,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let verb = target.verb(&method, query.watch);
    let resource = target.resource_path();
    cluster.requests.record(verb, &resource, &user.name);
    let _in_flight = cluster.requests.begin();
    let latency = cluster.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(injected) = cluster
        .faults
        .take_error(verb, &resource, || rbac::forbidden(user, verb, &target))
    {
        return Err(injected);
    }
    rbac::authorize(cluster, user, verb, &target)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = read_body(req).await?;
    api::handle(
        cluster,
        ResourceRequest {
            method: &method,
            target,
            query,
            content_type,
            body,
        },
    )
    .await
}

/// The answers anyone may have, signed in or not.
fn serve_public(route: &Route) -> Response<Body> {
    match route {
        Route::Health => http::text(200, "ok"),
        _ => http::json(200, &resources::version()),
    }
}

/// The request body, refused when larger than [`MAX_BODY`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))
}
