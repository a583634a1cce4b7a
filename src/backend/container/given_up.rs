//! A launch under way that may be given up before it ends: its future dropped,
//! as when `start_s` runs out during an image pull. The guard then undoes what
//! the launch did (the job no longer followed, its workload removed if made),
//! the removal in a task of its own; a launch that ended, either way, disarms it.

use futures::future::BoxFuture;
use tracing::Instrument;

/// Undoes a launch given up; `T` is what the launch made so far.
pub struct GivenUp<T: Default, U>
where
    U: FnOnce(T) -> Option<BoxFuture<'static, ()>>,
{
    made: T,
    undo: Option<U>,
}

impl<T: Default, U> GivenUp<T, U>
where
    U: FnOnce(T) -> Option<BoxFuture<'static, ()>>,
{
    /// Armed: `undo` takes what was made and returns the removal to run, if any.
    pub fn new(made: T, undo: U) -> Self {
        GivenUp {
            made,
            undo: Some(undo),
        }
    }

    /// What the launch made so far, for it to note more.
    pub fn made(&mut self) -> &mut T {
        &mut self.made
    }

    /// The launch ended (either way): nothing to undo.
    pub fn disarm(mut self) {
        self.undo = None;
    }
}

impl<T: Default, U> Drop for GivenUp<T, U>
where
    U: FnOnce(T) -> Option<BoxFuture<'static, ()>>,
{
    fn drop(&mut self) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        let made = std::mem::take(&mut self.made);
        if let Some(removal) = undo(made)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Dropped inside the job's span: the removal's log lines stay the job's.
            runtime.spawn(removal.instrument(tracing::Span::current()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::{Arc, Mutex};

    /// A guard whose undo records what was made, and whose removal notes it ran.
    fn guard(
        undone: &Arc<Mutex<Vec<String>>>,
    ) -> GivenUp<Option<String>, impl FnOnce(Option<String>) -> Option<BoxFuture<'static, ()>>>
    {
        let undone = undone.clone();
        GivenUp::new(None, move |made: Option<String>| {
            let made = made?;
            let undone = undone.clone();
            Some(async move { undone.lock().unwrap().push(made) }.boxed())
        })
    }

    #[tokio::test]
    async fn a_launch_given_up_has_what_it_made_removed() {
        let undone = Arc::new(Mutex::new(Vec::new()));
        let mut given_up = guard(&undone);
        *given_up.made() = Some("container".into());
        drop(given_up);
        tokio::task::yield_now().await;
        assert_eq!(*undone.lock().unwrap(), ["container"]);
    }

    #[tokio::test]
    async fn a_launch_that_ended_undoes_nothing() {
        let undone = Arc::new(Mutex::new(Vec::new()));
        let mut given_up = guard(&undone);
        *given_up.made() = Some("container".into());
        given_up.disarm();
        tokio::task::yield_now().await;
        assert!(undone.lock().unwrap().is_empty());
    }
}
