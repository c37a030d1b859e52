// SPDX-License-Identifier: GPL-2.0

//! mmu_notifier invalidations of a PMD range, or of a range of a VMA.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::pgtable::Pmd;
use crate::mm::virt::{Vma, VmaAccess};
use crate::mm::HPAGE_PMD_SIZE;
use crate::{bindings, ffi::c_ulong};
use core::marker::PhantomData;

/// An mmu_notifier range, set up for `MMU_NOTIFY_CLEAR` of a PMD range or
/// of a range of a VMA.
///
/// It stays in place while an invalidation is in progress: the
/// [`MmuInvalidation`] guard borrows it.
///
/// # Invariants
///
/// `mm` is the mm of a VMA that the lock behind `'a` keeps in its trees,
/// so it stays live for `'a`; `range` was initialised for it, with
/// `start < end`.
pub struct MmuNotifierRange<'a> {
    range: bindings::mmu_notifier_range,
    // The C struct has no `mm` without `CONFIG_MMU_NOTIFIER`.
    mm: *mut bindings::mm_struct,
    _vma: PhantomData<&'a ()>,
}

impl<'a> MmuNotifierRange<'a> {
    /// `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, haddr, haddr +
    /// HPAGE_PMD_SIZE)` for the range of `pmd`.
    #[inline]
    pub fn pmd_clear(pmd: &Pmd<'a>) -> Self {
        // INVARIANT: a `Pmd<'a>`'s VMA is kept for `'a`; the range is a
        // PMD's.
        Self::new_clear(
            pmd.vma.mm(),
            pmd.haddr,
            pmd.haddr + HPAGE_PMD_SIZE as c_ulong,
        )
    }

    /// `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, vma->vm_mm, start,
    /// end)`, for `[start, end)` of `vma` (clamped to the VMA); `None` if
    /// nothing of the VMA is left.
    #[inline]
    pub fn vma_clear<A: VmaAccess>(vma: &Vma<'a, A>, start: c_ulong, end: c_ulong) -> Option<Self> {
        let (start, end) = (start.max(vma.start()), end.min(vma.end()));
        // INVARIANT: a `Vma<'a, _>` is kept for `'a`; checked non-empty.
        (start < end).then(|| Self::new_clear(vma.mm(), start, end))
    }

    #[inline]
    fn new_clear(mm: *mut bindings::mm_struct, start: c_ulong, end: c_ulong) -> Self {
        let mut this = Self {
            range: Default::default(),
            mm,
            _vma: PhantomData,
        };
        // SAFETY: `range` is ours to initialise; the mm is live (a VMA of
        // it is).
        unsafe {
            bindings::mmu_notifier_range_init(
                &mut this.range,
                bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR,
                0,
                this.mm,
                start,
                end,
            )
        };
        this
    }

    /// `mmu_notifier_invalidate_range_start()`; the guard ends it. Call it
    /// with no spinlock held: the notifiers may sleep.
    #[inline]
    pub fn start(&mut self) -> MmuInvalidation<'_> {
        // SAFETY: the range is initialised, for an mm live for `'a`, which
        // outlives this borrow (type invariant).
        unsafe { bindings::mmu_notifier_invalidate_range_start(&mut self.range) };
        // INVARIANT: started just now.
        MmuInvalidation {
            mm: self.mm,
            range: &mut self.range,
        }
    }
}

/// An mmu_notifier invalidation in progress.
///
/// # Invariants
///
/// `mmu_notifier_invalidate_range_start()` was called on `range`, of an
/// [`MmuNotifierRange`] for `mm` that the borrow keeps live, and the
/// matching end has not been.
#[must_use = "the invalidation ends when the guard is dropped"]
pub struct MmuInvalidation<'a> {
    mm: *mut bindings::mm_struct,
    range: &'a mut bindings::mmu_notifier_range,
}

impl MmuInvalidation<'_> {
    /// Whether the invalidation covers the whole range of `pmd`.
    #[inline]
    pub fn covers(&self, pmd: &Pmd<'_>) -> bool {
        self.covers_range(
            pmd.vma.mm(),
            pmd.haddr,
            pmd.haddr + HPAGE_PMD_SIZE as c_ulong,
        )
    }

    /// Whether the invalidation covers `[start, end)` of `mm`.
    #[inline]
    pub fn covers_range(&self, mm: *mut bindings::mm_struct, start: c_ulong, end: c_ulong) -> bool {
        self.mm == mm && self.range.start <= start && self.range.end >= end
    }
}

impl Drop for MmuInvalidation<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: started and not yet ended (type invariant).
        unsafe { bindings::mmu_notifier_invalidate_range_end(self.range) };
    }
}
