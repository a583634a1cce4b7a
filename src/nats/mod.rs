//! The NATS side of the project: connecting, naming subjects, and preparing the
//! streams, consumer and buckets.

pub mod connect;
pub mod failure;
pub mod kv_latest;
pub mod replicas;
pub mod setup;
pub mod subjects;
