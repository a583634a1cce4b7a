//! The main crate's integration tests, as one test binary: each module drives a
//! real system (its own nats-server, the Docker engine, kube-sim) through one
//! part of the worker, and `common` holds what they share.

mod common;

mod allow_lists;
mod chaos;
mod cli;
mod cli_bench;
mod cli_dev;
mod cli_top;
mod cluster;
mod config;
mod config_reference;
mod conformance;
mod control;
mod control_paths;
mod dashboard;
mod deploy;
mod docker;
mod docker_lockdown;
mod docker_recovery;
mod docker_registry;
mod docker_stops;
mod failover;
mod gpus;
mod harness;
mod intake;
mod intake_paths;
mod job_output;
mod job_task;
mod jobs;
mod k8s;
mod k8s_adoption;
mod k8s_nodes;
mod k8s_rollout;
mod k8s_secrets;
mod k8s_stops;
mod limits;
mod nats_connect;
mod nats_roles;
mod poison;
mod probes;
mod recovery_paths;
mod resilience;
mod retention;
mod schemas;
mod secret_env;
mod secrets;
mod startup;
mod store;
mod storm;
mod story;
mod supervision;
