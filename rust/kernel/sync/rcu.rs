// SPDX-License-Identifier: GPL-2.0

//! RCU read-side critical sections.
//!
//! C header: [`include/linux/rcupdate.h`](srctree/include/linux/rcupdate.h).

use crate::bindings;
use core::marker::PhantomData;

/// An RCU read-side critical section (`rcu_read_lock()`).
///
/// # Invariants
///
/// This guard is inside an RCU read-side section it started.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, sync::rcu::Guard};
///
/// // SAFETY: no requirements.
/// let held = || unsafe { bindings::rcu_read_lock_held() } != 0;
/// assert!(!held());
/// let rcu = Guard::new();
/// assert!(held());
/// drop(rcu);
/// assert!(!held());
/// ```
#[must_use = "the RCU read-side section ends when the guard is dropped"]
pub struct Guard {
    // Not `Send`: the section ends on the CPU/task that began it.
    _not_send: PhantomData<*mut ()>,
}

impl Guard {
    /// Enters an RCU read-side critical section.
    #[inline]
    pub fn new() -> Self {
        // SAFETY: always allowed; nested sections are fine.
        unsafe { bindings::rcu_read_lock() };
        // INVARIANT: started just now.
        Self {
            _not_send: PhantomData,
        }
    }

    /// `cond_resched_rcu()`: leaves the section for a moment to let the CPU
    /// go (nothing to do in a preemptible kernel) and enters it again.
    /// Nothing found under the section before may be used after.
    ///
    /// # Safety
    ///
    /// No other RCU read-side critical section may be open in this task:
    /// none of the caller's (C or Rust), and no guard that holds one (a
    /// mapped PTE table: `kernel::mm::pgtable::PteMap`, `PteMapLock`, ...). On a kernel
    /// without preemptible RCU `cond_resched()` reports a quiescent state
    /// (`rcu_all_qs()`) whatever the nesting, which would let a grace
    /// period end, and memory freed by `call_rcu()` (a page table from
    /// `pte_free_defer()`) go, under the section still open.
    #[inline]
    pub unsafe fn cond_resched(&mut self) {
        // SAFETY: inside the section (type invariant), the only one open
        // (safety requirements), which the callee leaves and enters again.
        unsafe { bindings::cond_resched_rcu() };
    }
}

/// Enters an RCU read-side critical section, until the guard is dropped.
#[inline]
pub fn read_lock() -> Guard {
    Guard::new()
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: started by this guard (type invariant).
        unsafe { bindings::rcu_read_unlock() };
    }
}
