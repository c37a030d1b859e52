// SPDX-License-Identifier: GPL-2.0

//! A spinlock that a C caller holds and hands to the Rust function it calls.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h).

use crate::bindings;
use core::{marker::PhantomData, ptr::NonNull};

/// A spinlock that C code holds around a call into Rust, which may release
/// it and must take it again before returning (a function marked
/// `__releases(lock) __acquires(lock)`, as `khugepaged_scan_mm_slot()`).
///
/// Neither this proof nor [`SpinlockReleased`] touches the lock on drop:
/// the hand-off is explicit, and `#[must_use]` flags a forgotten one.
///
/// # Invariants
///
/// `lock` is a live spinlock held by the current task.
///
/// # Examples
///
/// ```
/// # #[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
/// # {
/// use core::ptr::NonNull;
/// use kernel::{bindings, mm::kunit::KthreadMm, sync::handoff::SpinlockHandoff};
///
/// // Any spinlock does: here an mm's page_table_lock.
/// let mm = KthreadMm::new()?;
/// let l = NonNull::new(mm.raw_page_table_lock()).ok_or(EINVAL)?;
/// // SAFETY: the lock lives in `mm`, which outlives every use below.
/// let held = || unsafe {
///     // Taken by someone: a trylock fails without waiting.
///     let free = bindings::spin_trylock(l.as_ptr()) != 0;
///     if free {
///         bindings::spin_unlock(l.as_ptr());
///     }
///     !free
/// };
///
/// // SAFETY: taken as a C caller would before calling into Rust.
/// unsafe { bindings::spin_lock(l.as_ptr()) };
/// // SAFETY: held, and `mm` outlives the proof.
/// let proof = unsafe { SpinlockHandoff::assert_held(l) };
/// let released = proof.unlock();
/// assert!(!held());
/// let proof = released.relock();
/// assert!(held());
/// // Handed back to the caller held, not released.
/// proof.hand_back();
/// assert!(held());
/// // SAFETY: released as the C caller would.
/// unsafe { bindings::spin_unlock(l.as_ptr()) };
/// # }
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the lock must be handed back to the C caller held"]
pub struct SpinlockHandoff<'a> {
    lock: NonNull<bindings::spinlock_t>,
    _lock: PhantomData<&'a bindings::spinlock_t>,
}

impl<'a> SpinlockHandoff<'a> {
    /// Wraps a spinlock the caller holds, asserting it
    /// (`lockdep_assert_held()`).
    ///
    /// # Safety
    ///
    /// `lock` must be live for `'a` and held by the current task.
    #[inline]
    pub unsafe fn assert_held(lock: NonNull<bindings::spinlock_t>) -> Self {
        // SAFETY: `lock` is live (safety requirements).
        unsafe { bindings::spin_assert_held(lock.as_ptr()) };
        // INVARIANT: held, by the safety requirements.
        Self {
            lock,
            _lock: PhantomData,
        }
    }

    /// Releases the lock (`spin_unlock()`), for work that may sleep.
    #[inline]
    pub fn unlock(self) -> SpinlockReleased<'a> {
        // SAFETY: held (type invariant).
        unsafe { bindings::spin_unlock(self.lock.as_ptr()) };
        // INVARIANT: released just now.
        SpinlockReleased {
            lock: self.lock,
            _lock: PhantomData,
        }
    }

    /// Ends the hand-off: the lock goes back to the C caller, held.
    #[inline]
    pub fn hand_back(self) {}
}

/// A [`SpinlockHandoff`] lock released by Rust, to be taken again before
/// returning to the C caller.
///
/// # Invariants
///
/// `lock` is live and not held by the current task.
#[must_use = "the lock must be taken again before returning to C"]
pub struct SpinlockReleased<'a> {
    lock: NonNull<bindings::spinlock_t>,
    _lock: PhantomData<&'a bindings::spinlock_t>,
}

impl<'a> SpinlockReleased<'a> {
    /// Takes the lock again (`spin_lock()`). Call it with no lock below it
    /// held.
    #[inline]
    pub fn relock(self) -> SpinlockHandoff<'a> {
        // SAFETY: live and not held by us (type invariant).
        unsafe { bindings::spin_lock(self.lock.as_ptr()) };
        // INVARIANT: held again.
        SpinlockHandoff {
            lock: self.lock,
            _lock: PhantomData,
        }
    }
}
