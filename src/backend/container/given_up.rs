//! A launch under way that may be given up before it ends: its future dropped,
//! as when `start_s` runs out during an image pull. The guard then undoes what
//! the launch did (the job no longer followed, its workload removed if made),
//! the removal in a task of its own; a launch that ended, either way, disarms it.

use futures::future::BoxFuture;

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
            runtime.spawn(removal);
        }
    }
}
