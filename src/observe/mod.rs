//! What an operator, or an orchestrator, can ask a running worker over HTTP:
//! whether it lives (`/healthz`) and whether it is ready to run jobs
//! (`/readyz`), for liveness and readiness probes. Off unless
//! `--metrics-listen` names an address.

pub mod endpoint;
pub mod readiness;

pub use endpoint::{Bound, Endpoint, ListenError};
pub use readiness::Readiness;
