//! A stop that keeps trying until the workload's end is confirmed: each try (a
//! signal, a delete) that fails is logged and tried again with backoff
//! ([`crate::retry::Delays`]); a try the engine or cluster took is followed by
//! nothing but waiting for the end, unless it was only the polite half of a
//! stop, which the forceful half follows once the grace is over. The end is
//! confirmed by the backend's own watch (a container's `die`, a pod's deletion
//! or terminated state). Past the grace and the backend's patience, the stop
//! gives up: its caller ends the job lost (`StopUnconfirmed`), never as if it
//! stopped. A later stop of the same workload renews the one under way (tries
//! again at once, its grace shortened if it asks for less) rather than being
//! swallowed.

use super::followers::{Follower, Followers, send};
use crate::backend::Observation;
use crate::locked::lock;
use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use crate::retry::Delays;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the end is looked for while nothing else wakes the stop.
const CONFIRMATION_POLL: Duration = Duration::from_millis(200);

/// What one try of a stop achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The polite half (SIGTERM): the forceful one follows after the grace.
    Politely,
    /// All a stop sends (a kill, a delete with its grace, or the workload was
    /// gone already): what is left is to see its end.
    Finally,
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The workload's end was seen (or its job no longer follows it).
    Confirmed,
    /// Not within the grace and the patience: why the last try failed, or that
    /// the end never came.
    Unconfirmed(String),
}

/// A stop under way, shared with the later stops of the same workload.
#[derive(Debug)]
pub struct Stopping {
    /// When the polite half is over and the workload is to be killed.
    polite_until: Mutex<Instant>,
    /// When the stop gives up, whatever the grace.
    patience: Duration,
    /// Set by a later stop: every half is sent again.
    renewed: Mutex<bool>,
    wake: Notify,
}

impl Stopping {
    /// A stop with `grace`, giving up `patience` after the grace.
    pub fn new(grace: Duration, patience: Duration) -> Self {
        Stopping {
            polite_until: Mutex::new(Instant::now() + grace),
            patience,
            renewed: Mutex::new(false),
            wake: Notify::new(),
        }
    }

    fn polite_until(&self) -> MutexGuard<'_, Instant> {
        lock(&self.polite_until)
    }

    fn renewed(&self) -> MutexGuard<'_, bool> {
        lock(&self.renewed)
    }

    /// A later stop with `grace`: everything is sent again now, the grace
    /// shortened if this one asks for less.
    pub fn renew(&self, grace: Duration) {
        {
            let mut polite_until = self.polite_until();
            *polite_until = (*polite_until).min(Instant::now() + grace);
        }
        *self.renewed() = true;
        self.wake.notify_one();
    }

    /// Tries to stop the workload `name` with `attempt` (given the grace left:
    /// zero to be forceful; its error says why the try failed) until
    /// `confirmed` says its end was seen, or the grace and the patience ran out.
    pub async fn run<A, F>(
        &self,
        name: &str,
        mut attempt: A,
        confirmed: impl Fn() -> bool,
    ) -> Stopped
    where
        A: FnMut(Duration) -> F,
        F: Future<Output = Result<Sent, String>>,
    {
        let mut delays = Delays::default();
        let mut sent: Option<Sent> = None;
        let mut retry_at = Instant::now();
        let mut failures = 0u32;
        let mut last_failure: Option<String> = None;
        loop {
            if confirmed() {
                return Stopped::Confirmed;
            }
            if std::mem::take(&mut *self.renewed()) {
                sent = None;
                retry_at = Instant::now();
                delays.reset();
            }
            let polite_until = *self.polite_until();
            let give_up = polite_until + self.patience;
            let now = Instant::now();
            if now >= give_up {
                let why = match last_failure {
                    Some(why) => format!("its last try failed: {why}"),
                    None => "its end was never seen".to_owned(),
                };
                return Stopped::Unconfirmed(bounded(&why));
            }
            let forceful = now >= polite_until;
            let due = match sent {
                None => true,
                Some(Sent::Politely) => forceful,
                Some(Sent::Finally) => false,
            };
            if due && now >= retry_at {
                match attempt(polite_until.saturating_duration_since(now)).await {
                    Ok(done) => {
                        sent = Some(done);
                        last_failure = None;
                        delays.reset();
                    }
                    Err(why) => {
                        failures += 1;
                        let delay = delays.next_delay();
                        tracing::warn!(workload = name, tries = failures, error = %why, retry_in = ?delay, "a stop failed; trying again");
                        last_failure = Some(why);
                        retry_at = Instant::now() + delay;
                    }
                }
                continue;
            }
            let mut next = (now + CONFIRMATION_POLL).min(give_up);
            if due {
                next = next.min(retry_at);
            }
            if sent == Some(Sent::Politely) {
                next = next.min(polite_until.max(now));
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// What a backend notes of a followed workload, as its stops need it.
pub trait StopNotes {
    /// Where the stop under way is noted.
    fn stopping(&mut self) -> &mut Option<Arc<Stopping>>;
    /// Whether the workload's end was seen (or is no business of this worker's
    /// any more): a stop has nothing left to do.
    fn end_seen(&self) -> bool;
    /// The job is told its end now (the stop's): a later end is passed over.
    fn end_told(&mut self);
}

/// A stop of `follower`'s workload with `grace`: the one under way renewed, or
/// a new one, noted, to be run by [`follow`]; none once its end was seen.
pub fn begin<S: StopNotes>(
    follower: &mut Follower<S>,
    grace: Duration,
    patience: Duration,
) -> Option<Arc<Stopping>> {
    follower.stopped.store(true, Ordering::SeqCst);
    if follower.noted.end_seen() {
        return None;
    }
    if let Some(stopping) = follower.noted.stopping() {
        stopping.renew(grace);
        return None;
    }
    let stopping = Arc::new(Stopping::new(grace, patience));
    *follower.noted.stopping() = Some(stopping.clone());
    Some(stopping)
}

/// Runs `stopping` of the workload (a `kind`, such as pod, named `name`) of
/// `job_id` among `followers` with `attempt` (see [`Stopping::run`]) until its
/// end is seen; one whose end is not seen in time ends its job lost
/// (`StopUnconfirmed`).
pub async fn follow<S, A, F>(
    followers: &Followers<S>,
    job_id: &str,
    (kind, name): (&str, &str),
    stopping: &Arc<Stopping>,
    attempt: A,
) where
    S: StopNotes + Default,
    A: FnMut(Duration) -> F,
    F: Future<Output = Result<Sent, String>>,
{
    let confirmed = || {
        followers
            .lock()
            .get(job_id)
            .is_none_or(|follower| follower.noted.end_seen())
    };
    let stopped = stopping.run(name, attempt, confirmed).await;
    let mut followed = followers.lock();
    let Some(follower) = followed.get_mut(job_id) else {
        return;
    };
    let slot = follower.noted.stopping();
    if slot
        .as_ref()
        .is_some_and(|current| Arc::ptr_eq(current, stopping))
    {
        *slot = None;
    }
    let Stopped::Unconfirmed(why) = stopped else {
        return;
    };
    if follower.noted.end_seen() {
        return;
    }
    follower.noted.end_told();
    let message = format!(
        "its {kind} {name} could not be confirmed stopped within {} s past its grace; it may still run: {why}",
        stopping.patience.as_secs()
    );
    tracing::warn!(%job_id, "{message}");
    let end = Observation::Vanished {
        reason: reason::STOP_UNCONFIRMED,
        message: bounded(&message),
    };
    send(&follower.observe, job_id, end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    #[tokio::test(start_paused = true)]
    async fn failed_tries_are_tried_again_until_one_is_taken_and_the_end_is_seen() {
        let stopping = Stopping::new(Duration::ZERO, Duration::from_secs(60));
        let tries = Arc::new(AtomicU32::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (t, e) = (tries.clone(), ended.clone());
        let attempt = move |_| {
            let (t, e) = (t.clone(), e.clone());
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 3 {
                    return Err("refused".to_owned());
                }
                e.store(true, Ordering::SeqCst);
                Ok(Sent::Finally)
            }
        };
        let stopped = stopping
            .run("w", attempt, || ended.load(Ordering::SeqCst))
            .await;
        assert_eq!(stopped, Stopped::Confirmed);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_never_taken_gives_up_after_the_grace_and_the_patience() {
        let stopping = Stopping::new(Duration::from_secs(5), Duration::from_secs(30));
        let start = Instant::now();
        let stopped = stopping
            .run("w", |_| async { Err("forbidden".to_owned()) }, || false)
            .await;
        assert_eq!(
            stopped,
            Stopped::Unconfirmed("its last try failed: forbidden".into())
        );
        assert!(start.elapsed() >= Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn the_forceful_half_follows_the_polite_one_after_the_grace() {
        let stopping = Stopping::new(Duration::from_secs(10), Duration::from_secs(30));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let attempt = move |grace: Duration| {
            let (s, forceful) = (s.clone(), grace.is_zero());
            async move {
                s.lock().unwrap().push((forceful, Instant::now()));
                Ok(if forceful {
                    Sent::Finally
                } else {
                    Sent::Politely
                })
            }
        };
        let start = Instant::now();
        let stopped = stopping.run("w", attempt, || false).await;
        assert_eq!(
            stopped,
            Stopped::Unconfirmed("its end was never seen".into())
        );
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(!sent[0].0 && sent[1].0);
        assert!(sent[1].1 - start >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_stop_sends_again_at_once_with_its_shorter_grace() {
        let stopping = Arc::new(Stopping::new(
            Duration::from_secs(600),
            Duration::from_secs(30),
        ));
        let forceful_sent = Arc::new(AtomicBool::new(false));
        let f = forceful_sent.clone();
        let attempt = move |grace: Duration| {
            let (f, forceful) = (f.clone(), grace.is_zero());
            async move {
                if forceful {
                    f.store(true, Ordering::SeqCst);
                    return Ok(Sent::Finally);
                }
                Ok(Sent::Politely)
            }
        };
        let running = {
            let (stopping, ended) = (stopping.clone(), forceful_sent.clone());
            tokio::spawn(async move {
                stopping
                    .run("w", attempt, move || ended.load(Ordering::SeqCst))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!forceful_sent.load(Ordering::SeqCst));
        stopping.renew(Duration::ZERO);
        assert_eq!(running.await.unwrap(), Stopped::Confirmed);
    }
}
