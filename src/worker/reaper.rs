//! Reaping for a worker that runs as PID 1 (in a container): every orphan of the
//! container is re-parented to it, and what nobody waits for would stay a zombie.
//! Elsewhere the worker reaps only its own children, each where it spawns them.

use crate::report::error_chain;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::signal::unix::{SignalKind, signal};

/// When this process is PID 1, starts reaping every child that ends.
pub fn reap_orphans_if_init() {
    if std::process::id() != 1 {
        return;
    }
    let mut children = match signal(SignalKind::child()) {
        Ok(children) => children,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "running as PID 1 but cannot listen for SIGCHLD; orphans will stay zombies");
            return;
        }
    };
    tracing::info!("running as PID 1: reaping every orphan");
    tokio::spawn(async move {
        loop {
            while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
            if children.recv().await.is_none() {
                return;
            }
        }
    });
}
