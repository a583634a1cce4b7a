//! The worker's HTTP endpoint (`--metrics-listen`): `GET /metrics` answers its
//! [`Metrics`]; `GET /healthz` answers 200 while the process serves at all;
//! `GET /readyz` answers 200 when the worker is ready ([`Readiness`]), else
//! 503 with one line per problem. Anything else is 404 (405 for another
//! method). HTTP/1 only, one task per connection, stopped with the worker.

use super::metrics::{Metrics, Now};
use super::readiness::Readiness;
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (--metrics-listen): {source}")]
pub struct ListenError {
    /// The address asked for.
    address: SocketAddr,
    /// The operating system's error.
    #[source]
    source: std::io::Error,
}

/// What the endpoint answers from.
#[derive(Clone)]
pub struct Probes {
    /// What `/readyz` looks at.
    pub readiness: Readiness,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// The jobs the worker follows now.
    pub running: Arc<dyn Fn() -> usize + Send + Sync>,
    /// Its GPUs, and which job holds which.
    pub resources: ResourcePolicy,
}

/// The endpoint, serving.
pub struct Endpoint {
    /// Where it listens (the port the system chose, for port 0).
    address: SocketAddr,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

/// The endpoint's address, bound but not served yet: bound first thing at
/// start-up, so that a worker that cannot have it stops before it takes a job.
pub struct Bound {
    listener: TcpListener,
    address: SocketAddr,
}

impl Bound {
    /// Binds `address`.
    ///
    /// # Errors
    /// A [`ListenError`] when the address cannot be bound.
    pub async fn bind(address: SocketAddr) -> Result<Bound, ListenError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ListenError { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| ListenError { address, source })?;
        Ok(Bound { listener, address })
    }

    /// Serves `probes` until [`Endpoint::stop`].
    pub fn serve(self, probes: Probes) -> Endpoint {
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve(self.listener, probes, stop.clone()));
        tracing::info!(address = %self.address, "serving /metrics, /healthz and /readyz");
        Endpoint {
            address: self.address,
            stop,
            serving,
        }
    }
}

impl Endpoint {
    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving, connections in flight included.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.serving.await;
    }
}

/// Accepts connections until `stop`, each served by a task of its own.
async fn serve(listener: TcpListener, probes: Probes, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot accept a connection to the probe endpoint");
                    continue;
                }
            },
        };
        let (probes, stop) = (probes.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(answer(&request, &probes).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => if let Err(e) = served {
                    tracing::debug!(error = %error_chain(&e), "a probe connection ended in error");
                },
            }
        });
    }
}

/// The answer to one request.
async fn answer(request: &Request<Incoming>, probes: &Probes) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz or /readyz\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/metrics" => {
            let gpus = probes.resources.status("", "");
            let now = Now {
                running: (probes.running)(),
                lease_held: probes.readiness.lease.held_for().is_some(),
                gpus_held: gpus.gpus.len() - gpus.free.len(),
                gpus_free: gpus.free.len(),
                nats_connects: probes
                    .readiness
                    .client
                    .statistics()
                    .connects
                    .load(std::sync::atomic::Ordering::Relaxed),
            };
            let mut response = text(StatusCode::OK, probes.metrics.render(now));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => {
            let problems = probes.readiness.problems().await;
            if problems.is_empty() {
                return text(StatusCode::OK, "ready\n".into());
            }
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready\n{}\n", problems.join("\n")),
            )
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
