//! What intake does with a request that does not fit on this worker now (see
//! [`crate::resources`]): it hands the request back with a delay that grows
//! with its deliveries, so that this worker or another of the pool places it
//! later and the requests behind it are not held up; once the request's
//! `start_s` has passed since it was published with no worker placing it, the
//! job ends in `error` with reason `Unschedulable`.
//!
//! A request this worker could never hold, even with all its GPUs free, ends
//! sooner when no worker of the pool could: the worker asks the pool
//! (`P.resources.POOL`) and, when every answer within [`CENSUS_WINDOW`] (its
//! own among them) is from a `gpu` worker too small for it, ends the job at
//! once. A worker that does not answer in time (not started yet, cut off) is
//! not counted.

use crate::report::error_chain;
use crate::resources::census;
use crate::resources::gpu_pool::NotPlaced;
use std::time::Duration;

/// How long the answers of the pool's workers are collected.
pub const CENSUS_WINDOW: Duration = Duration::from_secs(1);

/// The first delay before a request that did not fit comes back.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest delay.
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// How far past its `start_s` a request may come back, so that the delivery
/// that ends it surely falls after the limit.
const PAST_THE_LIMIT: Duration = Duration::from_millis(100);

/// What becomes of a request this worker could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it back, to come again after this long.
    RetryIn(Duration),
    /// Its job ends: nobody placed it in time. The message for its event.
    Unschedulable(String),
}

/// The verdict on a request not placed (`not_placed`) on its `deliveries`-th
/// delivery, `waited` after it was published, with `start_s` seconds to start.
pub fn verdict(not_placed: &NotPlaced, start_s: u64, waited: Duration, deliveries: u64) -> Verdict {
    let limit = Duration::from_secs(start_s);
    if waited >= limit {
        return Verdict::Unschedulable(format!(
            "no worker of the pool placed the job within its start_s of {start_s} s; {not_placed}"
        ));
    }
    let doublings = u32::try_from(deliveries.saturating_sub(1).min(16)).unwrap_or(16);
    let backoff = FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(LONGEST_RETRY);
    Verdict::RetryIn(backoff.min(limit - waited + PAST_THE_LIMIT))
}

/// Asks the pool's workers (`P.resources.POOL`) what they could hold.
pub struct Census {
    /// The connection.
    pub client: async_nats::Client,
    /// `P.resources.POOL` of this worker's pool.
    pub subject: String,
}

impl Census {
    /// When the pool's workers that answer within [`CENSUS_WINDOW`] all say they
    /// could never hold what `not_placed` asked for: the message ending its job
    /// (none when any could, or none answered).
    pub async fn never_schedulable(&self, not_placed: &NotPlaced) -> Option<String> {
        let answers = match census::gather(&self.client, self.subject.clone(), CENSUS_WINDOW).await
        {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "could not ask the pool's workers for their resources");
                return None;
            }
        };
        let nobody = !answers.is_empty()
            && answers
                .iter()
                .all(|status| !census::could_ever_hold(status, not_placed.need));
        nobody.then(|| {
            let count = answers.len();
            let plural = if count == 1 { "" } else { "s" };
            format!(
                "none of the {count} worker{plural} of the pool that answered could ever hold the job; {not_placed}"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::gpu_pool::GpuNeed;

    fn not_placed() -> NotPlaced {
        NotPlaced {
            need: GpuNeed {
                count: 3,
                memory_mb: None,
            },
            has: "this worker has 2 GPUs (0, 1), 2 free".into(),
            never: true,
        }
    }

    #[test]
    fn the_delay_doubles_up_to_a_limit_and_never_overshoots_start_s_much() {
        let retry = |waited_ms: u64, deliveries| {
            verdict(
                &not_placed(),
                120,
                Duration::from_millis(waited_ms),
                deliveries,
            )
        };
        assert_eq!(retry(0, 1), Verdict::RetryIn(Duration::from_millis(500)));
        assert_eq!(retry(0, 2), Verdict::RetryIn(Duration::from_secs(1)));
        assert_eq!(retry(0, 3), Verdict::RetryIn(Duration::from_secs(2)));
        assert_eq!(retry(0, 40), Verdict::RetryIn(LONGEST_RETRY));
        assert_eq!(
            retry(119_000, 40),
            Verdict::RetryIn(Duration::from_millis(1100))
        );
    }

    #[test]
    fn past_start_s_the_job_is_unschedulable_with_what_was_asked_and_what_is_here() {
        let Verdict::Unschedulable(message) = verdict(&not_placed(), 3, Duration::from_secs(3), 7)
        else {
            panic!("expected Unschedulable");
        };
        assert_eq!(
            message,
            "no worker of the pool placed the job within its start_s of 3 s; asked for 3 GPUs; this worker has 2 GPUs (0, 1), 2 free"
        );
    }
}
