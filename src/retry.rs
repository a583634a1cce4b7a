//! The retry policy for NATS calls that must eventually succeed, such as recording
//! a job's state: capped exponential backoff with jitter (backon). Reconnecting the
//! connection itself is the NATS client's job, paced by the reconnect delay in
//! [`crate::nats::connect`], which the client asks for by attempt number.

use crate::report::error_chain;
use backon::{ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

const MIN_DELAY: Duration = Duration::from_millis(50);
/// The longest delay between attempts, before jitter (which adds up to as much again).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The backoff used everywhere: 50 ms doubling to 5 s, plus up to as much again
/// of random jitter, no limit on
/// attempts (callers bound the time by cancelling the future).
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// Runs `op` until it succeeds or fails with an error `is_transient` rejects,
/// logging each failed attempt once with `what` it was doing.
///
/// # Errors
/// The first error that is not transient.
pub async fn retry_transient<T, E, Fut, F>(
    what: &str,
    op: F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::error::Error,
    Fut: Future<Output = Result<T, E>>,
    F: FnMut() -> Fut,
{
    op.retry(backoff())
        .when(|e| is_transient(e))
        .notify(|e, delay| tracing::warn!(error = %error_chain(e), retry_in = ?delay, "{what} failed; retrying"))
        .await
}

/// The delays of [`backoff`] for loops that retry by hand.
pub struct Delays {
    current: backon::ExponentialBackoff,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            current: backon::BackoffBuilder::build(backoff()),
        }
    }
}

impl Delays {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(MAX_DELAY)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        *self = Delays::default();
    }
}
