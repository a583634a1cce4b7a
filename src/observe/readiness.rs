//! What `/readyz` answers: a worker is ready when its NATS connection is up,
//! it holds its lease, it has not begun to leave, and each of its backends
//! answers (its supervisor linked, its engine or API server reachable). Each
//! backend gets a bounded time to answer, so a probe never hangs on one.

use crate::backend::Backends;
use crate::pool::lease::LeaseHandle;
use async_nats::connection::State;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a backend may take to answer a readiness check.
const BACKEND_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a readiness check looks at.
#[derive(Clone)]
pub struct Readiness {
    /// The worker's NATS connection.
    pub client: async_nats::Client,
    /// Its lease.
    pub lease: LeaseHandle,
    /// Its backends.
    pub backends: Backends,
    /// Cancelled once the worker stops taking requests (it is leaving).
    pub leaving: CancellationToken,
}

impl Readiness {
    /// What keeps the worker from being ready, one line each; none when it is.
    pub async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.leaving.is_cancelled() {
            problems.push("worker: leaving, it takes no new request".to_owned());
        }
        let state = self.client.connection_state();
        if state != State::Connected {
            problems.push(format!("nats: {state}"));
        }
        if self.lease.held_for().is_none() {
            problems.push("lease: not held".to_owned());
        }
        for backend in self.backends.all() {
            let kind = backend.kind();
            match tokio::time::timeout(BACKEND_ANSWER_TIMEOUT, backend.answers()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("backend {kind}: {e}")),
                Err(_) => problems.push(format!(
                    "backend {kind}: no answer within {BACKEND_ANSWER_TIMEOUT:?}"
                )),
            }
        }
        problems
    }
}
