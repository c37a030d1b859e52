// SPDX-License-Identifier: GPL-2.0

//! Memory management.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/rmap.h`](srctree/include/linux/rmap.h),
//! [`include/linux/pgtable.h`](srctree/include/linux/pgtable.h).
//!
//! The lock guards the Rust khugepaged (`mm/khugepaged/`) is written
//! against, one module per object, with the order they keep written once,
//! below. Every lock is taken by a constructor here and released by the
//! `Drop` of the guard it returns; users of these modules do not call lock
//! or unlock functions themselves.
//!
//! # Lock order
//!
//! The order documented at the top of `mm/rmap.c`, restricted to what the
//! guards of these modules take, with the type that holds each level:
//!
//! ```text
//! mmap_lock               MmapReadGuard, MmapWriteGuard, or MmapLocked
//!                         (asserted, for callers that already hold it);
//!                         virt::WriteLockedVma: vma_start_write() under
//!                         the write lock
//!   folio lock            folio::LockedFolio        from a Vma
//!     i_mmap_rwsem        rmap::IMmapReadGuard,     from a Mapping (a
//!                         rmap::IMmapWriteGuard     Vma's, or one the
//!                                                   caller pins)
//!       anon_vma rwsem    rmap::AnonVmaWriteGuard   from an AnonVma
//!         pmd lock        pgtable::PmdLock          from a Pmd of a Vma
//!           pte lock      pgtable::PteMapLock / PteLock (alone), or
//!                         pgtable::PmdPteLock       (nested in a consumed
//!                                                   PmdLock, skipped when
//!                                                   ptl == pml); taken and
//!                         released inside pgtable::PteRange::
//!                         unmap_file_pages()
//! mmu_notifier range      mmu_notifier::MmuInvalidation (not a lock:
//!                         started and ended with no spinlock held)
//! RCU read side           sync::rcu::Guard          (also implied by a
//!                         PTE map; its cond_resched() is unsafe: no other
//!                         section may be open)
//! ```
//!
//! This is the one copy of the order; the other modules link here.
//!
//! How the types keep that order:
//!
//! - A [`Vma`] exists only while a lock keeps it alive: it borrows an
//!   [`MmapLocked`] proof (from [`MmapLocked::vma_lookup`], the
//!   [`virt::Mmap`] access level) or an i_mmap guard (from
//!   [`IMmapReadGuard::vmas`], the [`virt::Rmap`] level); the level is part
//!   of its type and decides what it reaches. Everything below the mmap
//!   lock is reached through a `Vma`: its [`LockedFolio`], [`Mapping`],
//!   [`AnonVma`] and [`Pmd`], so none of them outlives the lock above.
//! - Page tables are only reached through [`Vma::find_pmd`] (or
//!   [`Vma::find_pte_range`], for a range of one table that need not be
//!   PMD-aligned): the upper
//!   levels cannot be freed while the VMA is in the tree (mmap lock) or in
//!   its file's interval tree (i_mmap lock), which is what makes a [`Pmd`]
//!   safe to lock and map. Its guards borrow it. It refuses VMAs that can
//!   have leaf entries above the PMD level (hugetlb, DAX, PFN maps) and a
//!   PUD leaf, whose "PMD" would be the user's memory.
//! - A VMA's `anon_vma` is only handed out under the mmap lock of its mm
//!   ([`MmapLocked::anon_vma`], [`WriteLockedVma::anon_vma`]): a [`Vma`]
//!   from an i_mmap walk can be unmapped, and its anon_vma freed, meanwhile.
//! - The PTE lock nests inside the PMD lock only through
//!   [`PmdLock::nest_table_lock`], which consumes the held [`PmdLock`] and
//!   returns a [`PmdPteLock`] that releases the PTE lock before the PMD
//!   lock, and does not take the PTE lock again when it is the PMD lock
//!   itself.
//! - A PTE is only cleared with a proof ([`PtlHeld`], a sealed trait that
//!   only the PTE-lock guards implement) that its table's lock is held,
//!   and a page table is only detached under both locks
//!   ([`PmdPteLock::collapse_flush`]); the detached table must then be
//!   freed ([`DetachedTable::free`]) after the locks are dropped.
//! - A table that still maps pages is only detached with proof that nothing
//!   else can walk into it ([`PmdLock::detach_populated`] takes the
//!   [`WriteLockedVma`] and its [`AnonVmaWriteGuard`]); the
//!   [`DetachedPtes`] it returns puts it back when dropped, unless a huge
//!   PMD replaces it ([`DetachedPtes::map_anon_folio_pmd`]).
//!
//! What the types cannot see (a spinlock held by C code around a call into
//! Rust, a guard of a lower level that is still alive while one of a higher
//! level is taken) lockdep reports; every test runs with `PROVE_LOCKING`.
//!
//! [`Vma`]: virt::Vma
//! [`Vma::find_pmd`]: virt::Vma::find_pmd
//! [`WriteLockedVma`]: virt::WriteLockedVma
//! [`WriteLockedVma::anon_vma`]: virt::WriteLockedVma::anon_vma
//! [`IMmapReadGuard::vmas`]: rmap::IMmapReadGuard::vmas
//! [`Mapping`]: rmap::Mapping
//! [`AnonVma`]: rmap::AnonVma
//! [`AnonVmaWriteGuard`]: rmap::AnonVmaWriteGuard
//! [`LockedFolio`]: folio::LockedFolio
//! [`Pmd`]: pgtable::Pmd
//! [`PmdLock`]: pgtable::PmdLock
//! [`PmdLock::nest_table_lock`]: pgtable::PmdLock::nest_table_lock
//! [`PmdLock::detach_populated`]: pgtable::PmdLock::detach_populated
//! [`PmdPteLock`]: pgtable::PmdPteLock
//! [`PmdPteLock::collapse_flush`]: pgtable::PmdPteLock::collapse_flush
//! [`PtlHeld`]: pgtable::PtlHeld
//! [`DetachedTable::free`]: pgtable::DetachedTable::free
//! [`DetachedPtes`]: pgtable::DetachedPtes
//! [`DetachedPtes::map_anon_folio_pmd`]: pgtable::DetachedPtes::map_anon_folio_pmd

pub mod folio;
#[cfg(CONFIG_KUNIT)]
pub mod kunit;
pub mod mmu_notifier;
pub mod pgtable;
pub mod rmap;
pub mod virt;

use crate::mm::rmap::AnonVma;
use crate::mm::virt::{Vma, WriteLockedVma};
use crate::{bindings, ffi::c_ulong, types::Opaque};
use core::{marker::PhantomData, ptr::NonNull};

/// Number of PTEs in a PMD-sized range.
pub const HPAGE_PMD_NR: usize = bindings::RUST_HPAGE_PMD_NR as usize;
/// Size of the range one PMD entry maps.
pub const HPAGE_PMD_SIZE: usize = bindings::RUST_HPAGE_PMD_SIZE;
/// Mask of the PMD-aligned part of an address.
pub const HPAGE_PMD_MASK: usize = bindings::RUST_HPAGE_PMD_MASK;
/// Page order of a PMD-sized folio.
pub const HPAGE_PMD_ORDER: u32 = bindings::RUST_HPAGE_PMD_ORDER;

/// Reads an `int`-sized field once, as `READ_ONCE()`.
///
/// # Safety
///
/// `p` must be valid for reads.
#[inline]
pub(crate) unsafe fn read_once<T: Copy>(p: *const T) -> T {
    // SAFETY: by the function's safety requirements.
    unsafe { core::ptr::read_volatile(p) }
}

/// `count_vm_event(item)`: counts one event in `/proc/vmstat`. An item out
/// of range is ignored (with a warning).
#[inline]
pub fn count_vm_event(item: bindings::vm_event_item) {
    if warn_on_once(item >= bindings::vm_event_item_NR_VM_EVENT_ITEMS) {
        return;
    }
    // SAFETY: a valid item; a per-cpu counter.
    unsafe { bindings::count_vm_event(item) };
}

/// `WARN_ON_ONCE(cond)`: a kernel warning with a backtrace, the first time
/// `cond` holds (once for all Rust callers); returns `cond`.
#[inline]
pub fn warn_on_once(cond: bool) -> bool {
    // SAFETY: no requirements.
    unsafe { bindings::warn_on_once(cond) }
}

/// A borrowed `mm_struct`, as mainline's `kernel::mm::Mm`: a reference
/// to it proves the structure is live (someone holds `mm_count`, as
/// khugepaged's mm slot does, or `mm_users`), not that its address space
/// is. Its mmap lock can always be taken: `exit_mmap()` tears the VMAs down
/// under the write lock, so a reader sees them all or an empty tree.
/// (Mainline offers the lock on `MmWithUser` only, for callers that need
/// the address space to be there; khugepaged checks that itself, with
/// `hpage_collapse_test_exit()`, once it holds the lock.)
///
/// # Invariants
///
/// The `mm_struct` is live for as long as the reference is.
#[repr(transparent)]
pub struct Mm(Opaque<bindings::mm_struct>);

impl Mm {
    /// Borrows the `mm_struct` at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an `mm_struct` that stays live (a reference on
    /// `mm_count` or `mm_users` is held) for `'a`.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::mm_struct) -> &'a Self {
        // SAFETY: `Mm` is a transparent wrapper; the structure is live for
        // `'a` (safety requirements).
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `mm_struct` pointer.
    #[inline]
    pub fn as_raw(&self) -> *mut bindings::mm_struct {
        self.0.get()
    }

    #[inline]
    fn locked(&self) -> MmapLocked<'_> {
        MmapLocked {
            // SAFETY: a reference is never NULL.
            mm: unsafe { NonNull::new_unchecked(self.as_raw()) },
            _lock: PhantomData,
        }
    }

    /// Takes the mmap lock for reading (`mmap_read_lock()`). The lock
    /// order (above) says what may be held meanwhile; lockdep checks it.
    #[inline]
    pub fn mmap_read_lock(&self) -> MmapReadGuard<'_> {
        // SAFETY: the mm is live (type invariant).
        unsafe { bindings::mmap_read_lock(self.as_raw()) };
        // INVARIANT: locked just now, for reading.
        MmapReadGuard {
            locked: self.locked(),
        }
    }

    /// Takes the mmap lock for reading if that does not mean waiting
    /// (`mmap_read_trylock()`).
    #[inline]
    pub fn mmap_read_trylock(&self) -> Option<MmapReadGuard<'_>> {
        // SAFETY: the mm is live (type invariant).
        if !unsafe { bindings::mmap_read_trylock(self.as_raw()) } {
            return None;
        }
        // INVARIANT: locked just now, for reading.
        Some(MmapReadGuard {
            locked: self.locked(),
        })
    }

    /// Takes the mmap lock for writing (`mmap_write_lock()`).
    #[inline]
    pub fn mmap_write_lock(&self) -> MmapWriteGuard<'_> {
        // SAFETY: the mm is live (type invariant).
        unsafe { bindings::mmap_write_lock(self.as_raw()) };
        // INVARIANT: locked just now, for writing.
        MmapWriteGuard {
            locked: self.locked(),
        }
    }
}

/// Proof that the mmap lock of an mm is held, for reading or writing.
///
/// # Invariants
///
/// `mm` points to a live `mm_struct` whose `mmap_lock` is held by the
/// current task for all of `'a`.
pub struct MmapLocked<'a> {
    mm: NonNull<bindings::mm_struct>,
    _lock: PhantomData<&'a bindings::mm_struct>,
}

impl<'a> MmapLocked<'a> {
    /// Wraps an mm whose mmap lock the caller holds, asserting it with
    /// `mmap_assert_locked()` (lockdep and `CONFIG_DEBUG_VM`).
    ///
    /// # Safety
    ///
    /// The caller must hold the mmap lock of `mm` (read or write) for all
    /// of `'a`.
    #[inline]
    pub unsafe fn assert_held(mm: &'a Mm) -> Self {
        // SAFETY: `mm` is live (type invariant of `Mm`).
        unsafe { bindings::mmap_assert_locked(mm.as_raw()) };
        // INVARIANT: the caller holds the lock for `'a`.
        mm.locked()
    }

    /// Returns the raw `mm_struct` pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::mm_struct {
        self.mm.as_ptr()
    }

    /// The mm whose lock is held.
    #[inline]
    pub fn mm(&self) -> &'a Mm {
        // SAFETY: live for `'a` (type invariant).
        unsafe { Mm::from_raw(self.mm.as_ptr()) }
    }

    /// `flush_tlb_mm()`: flushes every TLB entry of the mm, on every CPU.
    #[inline]
    pub fn flush_tlb(&self) {
        // SAFETY: the mm is live (type invariant).
        unsafe { bindings::flush_tlb_mm(self.as_ptr()) };
    }

    /// `add_mm_counter(mm, member, value)`: adjusts an rss counter
    /// (`MM_FILEPAGES`, `MM_ANONPAGES`, ...).
    #[inline]
    pub fn add_mm_counter(&self, member: i32, value: i64) {
        // SAFETY: the mm is live (type invariant); a per-cpu counter.
        unsafe { bindings::add_mm_counter(self.as_ptr(), member, value as _) };
    }

    /// Wraps a VMA of this mm that C code passed in.
    ///
    /// # Safety
    ///
    /// `vma` must point to a VMA of this mm, in its VMA tree.
    #[inline]
    pub unsafe fn vma_from_raw(&self, vma: NonNull<bindings::vm_area_struct>) -> Vma<'_> {
        // INVARIANT: in the tree (safety requirements), so it stays valid
        // while the mmap lock is held.
        Vma {
            vma,
            _lock: PhantomData,
        }
    }

    /// Finds the first VMA that ends above `addr`, as `find_vma()`: the
    /// one containing `addr`, or the next one.
    #[inline]
    pub fn find_vma(&self, addr: c_ulong) -> Option<Vma<'_>> {
        // SAFETY: the mm is live and its mmap lock held (type invariant).
        let vma = unsafe { bindings::find_vma(self.as_ptr(), addr) };
        // INVARIANT: the VMA stays in the tree while the mmap lock is held.
        NonNull::new(vma).map(|vma| Vma {
            vma,
            _lock: PhantomData,
        })
    }

    /// The `anon_vma` of `vma`, if it has one and is in this mm's VMA tree
    /// (`None` for another mm's VMA, whose mmap lock is not held, and for
    /// one being unmapped).
    ///
    /// Only the mmap lock keeps a VMA's anon_vma alive: a VMA found in a
    /// file's interval tree under `i_mmap_rwsem` alone can be unmapped, and
    /// its anon_vma freed in `free_pgtables()`, while it is looked at. So
    /// [`Vma`] itself does not hand it out.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm};
    ///
    /// const ADDR: usize = 0x4000_0000;
    /// let mm = KthreadMm::new()?;
    /// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
    /// {
    ///     let mmap = mm.mmap_read();
    ///     let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
    ///     assert!(!vma.has_anon_vma() && mmap.anon_vma(&vma).is_none());
    /// }
    /// // The first write fault gives the VMA its anon_vma.
    /// mm.write(ADDR, &[1])?;
    /// let mmap = mm.mmap_read();
    /// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
    /// assert!(vma.has_anon_vma() && mmap.anon_vma(&vma).is_some());
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn anon_vma(&self, vma: &Vma<'_>) -> Option<AnonVma<'_>> {
        // In this mm's VMA tree, not just of this mm: munmap() detaches the
        // VMA under the write lock, then downgrades to the read lock for
        // free_pgtables(), which frees the anon_vma while an i_mmap walk may
        // still find the VMA.
        if vma.mm() != self.as_ptr()
            || self.vma_lookup(vma.start()).map(|v| v.as_ptr()) != Some(vma.as_ptr())
        {
            return None;
        }
        // SAFETY: the VMA is in the tree of this mm, whose mmap lock is held
        // for `'_`: its teardown cannot start meanwhile.
        unsafe { vma.anon_vma_pinned() }
    }

    /// Finds the VMA that contains `addr`, as `vma_lookup()`.
    #[inline]
    pub fn vma_lookup(&self, addr: c_ulong) -> Option<Vma<'_>> {
        // SAFETY: the mm is live and its mmap lock held (type invariant).
        let vma = unsafe { bindings::vma_lookup(self.as_ptr(), addr) };
        // INVARIANT: the VMA stays in the tree while the mmap lock is held.
        NonNull::new(vma).map(|vma| Vma {
            vma,
            _lock: PhantomData,
        })
    }
}

/// A held mmap read lock (`mmap_read_lock()`).
///
/// # Invariants
///
/// `locked.mm` is live for `'a` and its mmap lock is held for reading by
/// this guard.
///
/// # Examples
///
/// The lock is held while the guard lives, and only then; VMAs are looked
/// up through it.
///
/// ```
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// let sem = mm.raw_mmap_lock();
/// {
///     let mmap = mm.mmap_read();
///     // SAFETY: `sem` is the live mm's mmap_lock.
///     assert!(unsafe { bindings::rwsem_is_locked(sem) } != 0);
///     let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
///     assert_eq!(vma.start(), ADDR as _);
///     assert_eq!(vma.end(), (ADDR + HPAGE_PMD_SIZE) as _);
///     assert!(mmap.vma_lookup((ADDR + HPAGE_PMD_SIZE) as _).is_none());
/// }
/// // SAFETY: as above.
/// assert!(unsafe { bindings::rwsem_is_locked(sem) } == 0);
/// {
///     let _mmap = mm.mmap_write();
///     // SAFETY: as above.
///     assert!(unsafe { bindings::rwsem_is_locked(sem) } != 0);
///     // A writer holds it: a read trylock fails without waiting.
///     assert!(mm.mmap_try_read().is_none());
/// }
/// // SAFETY: as above.
/// assert!(unsafe { bindings::rwsem_is_locked(sem) } == 0);
///
/// // Lent to code that keeps it: the guard comes back, still holding it.
/// let mmap = mm.mmap_try_read().ok_or(EBUSY)?;
/// // SAFETY: the closure keeps the lock and says so.
/// let mmap = unsafe { mmap.lend(|_| true) }.ok_or(EINVAL)?;
/// // SAFETY: as above.
/// assert!(unsafe { bindings::rwsem_is_locked(sem) } != 0);
/// // Lent to code that releases it: no guard, and no second unlock.
/// // SAFETY: the closure releases the lock it was lent and says so.
/// let back = unsafe {
///     mmap.lend(|mm| {
///         bindings::mmap_read_unlock(mm);
///         false
///     })
/// };
/// assert!(back.is_none());
/// // SAFETY: as above.
/// assert!(unsafe { bindings::rwsem_is_locked(sem) } == 0);
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the mmap lock is released when the guard is dropped"]
pub struct MmapReadGuard<'a> {
    locked: MmapLocked<'a>,
}

impl<'a> MmapReadGuard<'a> {
    /// Takes over the read lock that the caller holds on `mm` (asserted
    /// with `mmap_assert_locked()`): the guard releases it, as C code that
    /// is called with the lock and returns without it
    /// (`collapse_huge_page()`) does.
    ///
    /// # Safety
    ///
    /// The caller must hold the mmap lock of `mm` for reading, and no
    /// longer release it itself.
    #[inline]
    pub unsafe fn adopt(mm: &'a Mm) -> Self {
        // SAFETY: `mm` is live (type invariant of `Mm`).
        unsafe { bindings::mmap_assert_locked(mm.as_raw()) };
        // INVARIANT: held for reading, and now released by this guard only.
        Self {
            locked: mm.locked(),
        }
    }

    /// Lends the held lock to C code that may release it (as
    /// `hpage_collapse_scan_pmd()` does through its `mmap_locked`): `f`
    /// runs with the lock held and returns whether it still is. Returns the
    /// guard if so, `None` if `f` released the lock.
    ///
    /// # Safety
    ///
    /// `f` must return `true` exactly when the lock is still held by the
    /// current task, for reading, when it returns.
    #[inline]
    pub unsafe fn lend(self, f: impl FnOnce(*mut bindings::mm_struct) -> bool) -> Option<Self> {
        let mm = self.locked.mm;
        if f(mm.as_ptr()) {
            return Some(self);
        }
        // The callee released the lock: nothing left to unlock.
        core::mem::forget(self);
        None
    }
}

impl<'a> core::ops::Deref for MmapReadGuard<'a> {
    type Target = MmapLocked<'a>;

    #[inline]
    fn deref(&self) -> &MmapLocked<'a> {
        &self.locked
    }
}

impl Drop for MmapReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for reading by this guard (type invariant).
        unsafe { bindings::mmap_read_unlock(self.locked.as_ptr()) };
    }
}

/// A held mmap write lock (`mmap_write_lock()`).
///
/// # Invariants
///
/// `locked.mm` is live for `'a` and its mmap lock is held for writing by
/// this guard.
#[must_use = "the mmap lock is released when the guard is dropped"]
pub struct MmapWriteGuard<'a> {
    locked: MmapLocked<'a>,
}

impl MmapWriteGuard<'_> {
    /// Write-locks `vma` for page faults under the per-VMA lock
    /// (`vma_start_write()`), so that only the mmap write lock, held here,
    /// gives access to its page tables. Returns `None` if `vma` is not one
    /// of this mm's.
    #[inline]
    pub fn vma_start_write<'b>(&'b self, vma: Vma<'b>) -> Option<WriteLockedVma<'b>> {
        if vma.mm() != self.as_ptr() {
            return None;
        }
        // SAFETY: the VMA is one of this mm's, whose mmap lock this guard
        // holds for writing.
        unsafe { bindings::vma_start_write(vma.as_ptr()) };
        // INVARIANT: write-locked just now, under the mmap write lock that
        // `'b` borrows.
        Some(WriteLockedVma { vma })
    }
}

impl<'a> core::ops::Deref for MmapWriteGuard<'a> {
    type Target = MmapLocked<'a>;

    #[inline]
    fn deref(&self) -> &MmapLocked<'a> {
        &self.locked
    }
}

impl Drop for MmapWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for writing by this guard (type invariant).
        unsafe { bindings::mmap_write_unlock(self.locked.as_ptr()) };
    }
}
