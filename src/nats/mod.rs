//! The NATS side of the project: connecting, naming subjects, and preparing the
//! streams, consumer and buckets; and counting the KV requests of a server's
//! clients, for the benchmarks and the tests that check what a path reads.

pub mod connect;
pub mod failure;
pub mod kv_latest;
pub mod replicas;
pub mod setup;
pub mod subjects;
pub mod wiretap;
