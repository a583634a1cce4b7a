//! The worker as a NATS micro service. Each worker registers under the name
//! [`SERVICE_NAME`], with its id, pool, host and backends in the service's
//! metadata, so that NATS's service discovery (`$SRV.PING`, `$SRV.INFO`,
//! `$SRV.STATS`; `nats micro ls`, `info` and `stats`) lists the live workers and
//! the endpoints they answer on. Those endpoints are the very subscriptions the
//! worker's requests arrive on, so the service's statistics count real requests.
//!
//! An endpoint is either [`Registration::shared`]: one worker of all answers
//! each request (the control queue group), or [`Registration::own`]: this worker
//! answers whatever the others do (a queue group of its own).

use crate::nats::subjects::CONTROL_QUEUE_GROUP;
use crate::protocol::WorkerLease;
use async_nats::service::endpoint::Endpoint;
use async_nats::service::{Service, ServiceExt};
use std::collections::HashMap;

/// The name every worker registers under.
pub const SERVICE_NAME: &str = "flare-launcher";

/// Why the worker could not register, or open an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service itself could not be added.
    #[error("cannot register the worker as the NATS service {SERVICE_NAME}: {0}")]
    Register(#[source] async_nats::Error),
    /// One endpoint could not be subscribed.
    #[error("cannot open the service endpoint {name} on {subject}: {source}")]
    Endpoint {
        /// The endpoint's name.
        name: &'static str,
        /// Its subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

/// The worker's registration; its endpoints stop answering when it is
/// [stopped](Registration::stop).
pub struct Registration {
    service: Service,
    /// A queue group only this worker joins.
    own_queue: String,
}

impl Registration {
    /// Registers the worker whose lease is `lease`, with its id, pool, host,
    /// backends, capacity and instance in the service's metadata.
    ///
    /// # Errors
    /// [`ServiceError::Register`] when the client cannot subscribe.
    pub async fn start(
        client: &async_nats::Client,
        lease: &WorkerLease,
    ) -> Result<Registration, ServiceError> {
        let backends: Vec<String> = lease.backends.iter().map(ToString::to_string).collect();
        let metadata = HashMap::from([
            ("worker_id".to_owned(), lease.worker.clone()),
            ("pool".to_owned(), lease.pool.clone()),
            ("host".to_owned(), lease.host.clone()),
            ("backends".to_owned(), backends.join(",")),
            ("capacity".to_owned(), lease.capacity.to_string()),
            ("instance".to_owned(), lease.instance.clone()),
        ]);
        let service = client
            .service_builder()
            .description("Runs NVIDIA FLARE jobs as processes, containers or pods")
            .metadata(metadata)
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(ServiceError::Register)?;
        Ok(Registration {
            service,
            own_queue: format!("{SERVICE_NAME}-{}", lease.worker),
        })
    }

    /// The endpoint `name` on `subject`, where one worker of all answers each
    /// request.
    ///
    /// # Errors
    /// [`ServiceError::Endpoint`] when it cannot be subscribed.
    pub async fn shared(
        &self,
        name: &'static str,
        subject: String,
    ) -> Result<Endpoint, ServiceError> {
        self.endpoint(name, subject, CONTROL_QUEUE_GROUP).await
    }

    /// The endpoint `name` on `subject`, where this worker answers whatever the
    /// others do.
    ///
    /// # Errors
    /// [`ServiceError::Endpoint`] when it cannot be subscribed.
    pub async fn own(&self, name: &'static str, subject: String) -> Result<Endpoint, ServiceError> {
        self.endpoint(name, subject, &self.own_queue).await
    }

    async fn endpoint(
        &self,
        name: &'static str,
        subject: String,
        queue_group: &str,
    ) -> Result<Endpoint, ServiceError> {
        self.service
            .endpoint_builder()
            .name(name)
            .queue_group(queue_group)
            .add(subject.clone())
            .await
            .map_err(|source| ServiceError::Endpoint {
                name,
                subject,
                source,
            })
    }

    /// Leaves service discovery and ends every endpoint's stream.
    pub async fn stop(self) {
        // Stopping only signals and aborts tasks; it reports no failure.
        let _ = self.service.stop().await;
    }
}
