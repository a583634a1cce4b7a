//! What an operator, or an orchestrator, can ask a running worker over HTTP:
//! its metrics (`/metrics`), whether it lives (`/healthz`) and whether it is
//! ready to run jobs (`/readyz`), for Prometheus and for liveness and
//! readiness probes. Off unless `--metrics-listen` names an address; the
//! metrics are counted all the same.

pub mod ask;
pub mod endpoint;
pub mod metrics;
pub mod readiness;

pub use endpoint::{Bound, Endpoint, ListenError, Probes};
pub use metrics::Metrics;
pub use readiness::Readiness;
