//! A mutex's lock that outlives a panic elsewhere: the worker's mutexes guard
//! maps and flags that every change leaves consistent, so a lock poisoned by a
//! panicking holder still holds usable data, and a worker must not stop over it.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
