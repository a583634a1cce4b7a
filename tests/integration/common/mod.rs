//! Helpers shared by the integration tests.

pub mod chaos;
pub mod docker;
pub mod fake_backend;
pub mod fake_worker;
pub mod k8s;
pub mod malformed;
pub mod nats_server;
pub mod pool;
pub mod probe;
pub mod processes;
pub mod story_bench;
pub mod system;
pub mod tmux;
pub mod workloads;
