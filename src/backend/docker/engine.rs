//! The Docker engine as the backend reaches it: bollard's client, and the
//! count of the requests sent to it (by kind, and whether they failed). Every
//! request the backend makes goes through [`Engine::api`] and is counted at its
//! call site with [`Engine::counted`], a stream (events, logs, a pull) once
//! when it ends.

use crate::observe::metrics::ApiCalls;
use bollard::Docker;

/// The engine, and where its requests are counted.
#[derive(Clone)]
pub struct Engine {
    /// bollard's client.
    pub api: Docker,
    calls: ApiCalls,
}

impl Engine {
    /// The engine `api`, its requests counted into `calls`.
    pub fn new(api: Docker, calls: ApiCalls) -> Self {
        Engine { api, calls }
    }

    /// Counts a request of `kind` that gave `result`, and hands it back.
    pub fn counted<T, E>(&self, kind: &str, result: Result<T, E>) -> Result<T, E> {
        self.calls.counted(kind, result)
    }

    /// Counts a request of `kind` (a stream that ended), and whether it failed.
    pub fn count(&self, kind: &str, failed: bool) {
        self.calls.count(kind, failed);
    }
}
