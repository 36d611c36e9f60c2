//! The one way this crate takes its std locks: a panic while a lock was held leaves data
//! that is consistent between statements, so the next holder takes it. Nothing awaits
//! under them.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
