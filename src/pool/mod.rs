//! The pool's membership: each worker's lease ([`lease`]), the live pool read
//! from the leases ([`members`]), and the index of who owns which unfinished
//! job ([`owners`]). Together they let the pool take over a worker's jobs when
//! it goes, and let a worker find its own jobs at start-up, at a cost that
//! follows the jobs still going.

pub mod lease;
pub mod members;
pub mod owners;
