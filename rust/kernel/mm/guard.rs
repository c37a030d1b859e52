// SPDX-License-Identifier: GPL-2.0

//! Lock guards for the mm lock order.
//!
//! Every lock is taken by a constructor in this module and released by the
//! `Drop` of the guard it returns; users of the module do not call lock or
//! unlock functions themselves.
//!
//! # Lock order
//!
//! The order documented at the top of `mm/rmap.c`, restricted to what the
//! guards here take, with the type that holds each level:
//!
//! ```text
//! mmap_lock               MmapReadGuard, MmapWriteGuard, or MmapLocked
//!                         (asserted, for callers that already hold it);
//!                         WriteLockedVma: vma_start_write() under the
//!                         write lock
//!   folio lock            LockedFolio        from a Vma
//!     i_mmap_rwsem        IMmapReadGuard,    from a Mapping (a Vma's, or
//!                         IMmapWriteGuard    one the caller pins)
//!       anon_vma rwsem    AnonVmaWriteGuard  from a Vma's AnonVma
//!         pmd lock        PmdLock            from a Pmd, from a Vma
//!           pte lock      PteMapLock / PteLock (alone), or
//!                         PmdPteLock         (nested in a consumed PmdLock,
//!                                            skipped when ptl == pml)
//! mmu_notifier range      MmuInvalidation    (not a lock: started and ended
//!                                            with no spinlock held)
//! RCU read side           RcuReadGuard       (also implied by a PTE map;
//!                                            its cond_resched() is unsafe:
//!                                            no other section may be open)
//! ```
//!
//! How the types keep that order:
//!
//! - A [`Vma`] exists only while a lock keeps it alive: it borrows an
//!   [`MmapLocked`] proof (from [`MmapLocked::vma_lookup`]) or an i_mmap
//!   guard (from [`IMmapReadGuard::vmas`]). Everything below the mmap lock
//!   is reached through a `Vma`: its [`LockedFolio`], [`Mapping`],
//!   [`AnonVma`] and [`Pmd`], so none of them outlives the lock above.
//! - Page tables are only reached through [`Vma::find_pmd`]: the upper
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
//!   returns a [`PmdPteLock`] that releases the PTE lock before the PMD lock,
//!   and does not take the PTE lock again when it is the PMD lock itself.
//! - A PTE is only cleared with a proof ([`PtlHeld`], a sealed trait that
//!   only the PTE-lock guards implement) that its table's lock is held,
//!   and a page table is only detached under both locks
//!   ([`PmdPteLock::collapse_flush`]); the detached table must then be freed
//!   ([`DetachedTable::free`]) after the locks are dropped.
//! - A table that still maps pages is only detached with proof that nothing
//!   else can walk into it ([`PmdLock::detach_populated`] takes the
//!   [`WriteLockedVma`] and its [`AnonVmaWriteGuard`]); the
//!   [`DetachedPtes`] it returns puts it back when dropped, unless a huge
//!   PMD replaces it ([`DetachedPtes::install_anon_huge`]).
//!
//! What the types cannot see (a spinlock held by C code around a call into
//! Rust, a guard of a lower level that is still alive while one of a higher
//! level is taken) lockdep reports; every test runs with `PROVE_LOCKING`.

use crate::{
    bindings,
    ffi::{c_int, c_ulong},
};
// Only the KUnit fixture returns errors.
#[cfg(CONFIG_KUNIT)]
use crate::error::{code::*, Result};
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
unsafe fn read_once<T: Copy>(p: *const T) -> T {
    // SAFETY: by the function's safety requirements.
    unsafe { core::ptr::read_volatile(p) }
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
    /// `mm` must point to a live `mm_struct` whose `mmap_lock` the caller
    /// holds (read or write) for all of `'a`.
    #[inline]
    pub unsafe fn assert_held(mm: NonNull<bindings::mm_struct>) -> Self {
        // SAFETY: `mm` is valid by the function's safety requirements.
        unsafe { bindings::mmap_assert_locked(mm.as_ptr()) };
        // INVARIANT: the caller holds the lock for `'a`.
        Self {
            mm,
            _lock: PhantomData,
        }
    }

    /// Returns the raw `mm_struct` pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::mm_struct {
        self.mm.as_ptr()
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
    /// use kernel::mm::guard::*;
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
/// use kernel::{bindings, mm::guard::*};
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
    /// Takes the mmap lock of `mm` for reading.
    ///
    /// # Safety
    ///
    /// `mm` must point to an `mm_struct` that stays live for `'a`, and the
    /// caller must hold no lock below the mmap lock.
    #[inline]
    pub unsafe fn lock(mm: NonNull<bindings::mm_struct>) -> Self {
        // SAFETY: `mm` is live (safety requirements).
        unsafe { bindings::mmap_read_lock(mm.as_ptr()) };
        // INVARIANT: locked just now, for reading.
        Self {
            locked: MmapLocked {
                mm,
                _lock: PhantomData,
            },
        }
    }

    /// Takes over the read lock that the caller holds on `mm` (asserted
    /// with `mmap_assert_locked()`): the guard releases it, as C code that
    /// is called with the lock and returns without it
    /// (`collapse_huge_page()`) does.
    ///
    /// # Safety
    ///
    /// `mm` must point to an `mm_struct` that stays live for `'a`, whose
    /// mmap lock the caller holds for reading and no longer releases
    /// itself.
    #[inline]
    pub unsafe fn adopt(mm: NonNull<bindings::mm_struct>) -> Self {
        // SAFETY: `mm` is live (safety requirements).
        unsafe { bindings::mmap_assert_locked(mm.as_ptr()) };
        // INVARIANT: held for reading, and now released by this guard only.
        Self {
            locked: MmapLocked {
                mm,
                _lock: PhantomData,
            },
        }
    }

    /// Takes the mmap lock of `mm` for reading if that does not mean
    /// waiting (`mmap_read_trylock()`).
    ///
    /// # Safety
    ///
    /// As [`MmapReadGuard::lock`].
    #[inline]
    pub unsafe fn try_lock(mm: NonNull<bindings::mm_struct>) -> Option<Self> {
        // SAFETY: `mm` is live (safety requirements).
        if !unsafe { bindings::mmap_read_trylock(mm.as_ptr()) } {
            return None;
        }
        // INVARIANT: locked just now, for reading.
        Some(Self {
            locked: MmapLocked {
                mm,
                _lock: PhantomData,
            },
        })
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

impl<'a> MmapWriteGuard<'a> {
    /// Takes the mmap lock of `mm` for writing.
    ///
    /// # Safety
    ///
    /// As [`MmapReadGuard::lock`].
    #[inline]
    pub unsafe fn lock(mm: NonNull<bindings::mm_struct>) -> Self {
        // SAFETY: `mm` is live (safety requirements).
        unsafe { bindings::mmap_write_lock(mm.as_ptr()) };
        // INVARIANT: locked just now, for writing.
        Self {
            locked: MmapLocked {
                mm,
                _lock: PhantomData,
            },
        }
    }
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

/// A VMA write-locked with `vma_start_write()` under the mmap write lock:
/// no page fault, no per-VMA-lock reader and no mmap-lock reader can
/// reach its page tables until the mmap write lock is released.
///
/// # Invariants
///
/// `vma` is write-locked and the mmap write lock of its mm is held for
/// `'a`.
#[must_use = "a write-locked VMA is only useful while it is held"]
pub struct WriteLockedVma<'a> {
    vma: Vma<'a>,
}

impl<'a> WriteLockedVma<'a> {
    /// The VMA's `anon_vma`, if it has one: kept alive by the mmap write
    /// lock this VMA borrows.
    #[inline]
    pub fn anon_vma(&self) -> Option<AnonVma<'a>> {
        // SAFETY: the mmap write lock of the VMA's mm is held for `'a` (type
        // invariant): no munmap() of this mm can be between detaching a VMA
        // and tearing it down, so the VMA's teardown cannot start.
        unsafe { self.vma.anon_vma_pinned() }
    }
}

impl<'a> core::ops::Deref for WriteLockedVma<'a> {
    type Target = Vma<'a>;

    #[inline]
    fn deref(&self) -> &Vma<'a> {
        &self.vma
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

/// A VMA kept alive by a lock: the mmap lock of its mm, or the i_mmap lock
/// of the file it maps (while it is in that file's interval tree).
///
/// Fields that change under the mmap write lock only (flags, bounds) are
/// stable in the first case and read racily, as C does, in the second.
///
/// # Invariants
///
/// `vma` points to a VMA that stays valid, and in its mm's VMA tree or its
/// file's interval tree, for `'a`.
#[derive(Clone, Copy)]
pub struct Vma<'a> {
    vma: NonNull<bindings::vm_area_struct>,
    _lock: PhantomData<&'a ()>,
}

impl<'a> Vma<'a> {
    /// Returns the raw VMA pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.vma.as_ptr()
    }

    /// `READ_ONCE(vma->anon_vma)`, not to be dereferenced: a VMA reached
    /// without its mmap lock (from an i_mmap walk) can be unmapped, and its
    /// anon_vma freed, at any time. [`MmapLocked::anon_vma`] hands out the
    /// anon_vma itself.
    #[inline]
    fn raw_anon_vma(&self) -> *mut bindings::anon_vma {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { read_once(&(*self.as_ptr()).anon_vma) }
    }

    /// The VMA's `anon_vma`, if it has one, for as long as `'b`.
    ///
    /// # Safety
    ///
    /// The VMA's teardown must not start during `'b` (its mm's mmap lock is
    /// held for `'b`, and the VMA is in the mm's tree or the lock is held
    /// for writing). Once set, `vma->anon_vma` then stays.
    #[inline]
    unsafe fn anon_vma_pinned<'b>(&self) -> Option<AnonVma<'b>> {
        // INVARIANT: live for `'b` (safety requirements).
        NonNull::new(self.raw_anon_vma()).map(|av| AnonVma {
            av,
            _vma: PhantomData,
        })
    }

    /// Returns the raw pointer to the VMA's mm.
    #[inline]
    pub fn mm(&self) -> *mut bindings::mm_struct {
        // SAFETY: the VMA is valid (type invariant); `vm_mm` never changes.
        unsafe { (*self.as_ptr()).vm_mm }
    }

    /// Returns the VMA's flags.
    #[inline]
    pub fn flags(&self) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant); `vm_flags` is the
        // read-only view of the flags union.
        unsafe { (*self.as_ptr()).__bindgen_anon_2.vm_flags }
    }

    /// Returns the first address of the VMA.
    #[inline]
    pub fn start(&self) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// Returns the first address after the VMA.
    #[inline]
    pub fn end(&self) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// Returns the file offset of the VMA's start, in pages.
    #[inline]
    pub fn pgoff(&self) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { (*self.as_ptr()).vm_pgoff }
    }

    /// Whether the VMA maps a file.
    #[inline]
    pub fn has_file(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        !unsafe { (*self.as_ptr()).vm_file }.is_null()
    }

    /// Whether `[start, end)` lies inside the VMA.
    #[inline]
    pub fn contains_range(&self, start: c_ulong, end: c_ulong) -> bool {
        start >= self.start() && end <= self.end() && start < end
    }

    /// `thp_vma_allowable_order(vma, vma->vm_flags, 0, PMD_ORDER)`.
    #[inline]
    pub fn thp_pmd_allowed(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe {
            bindings::thp_vma_allowable_order(self.as_ptr(), self.flags(), 0, HPAGE_PMD_ORDER as _)
        }
    }

    /// `thp_vma_allowable_order(vma, vma->vm_flags, TVA_ENFORCE_SYSFS,
    /// PMD_ORDER)`: as [`Vma::thp_pmd_allowed`], obeying the sysfs THP
    /// settings too (khugepaged's rule).
    #[inline]
    pub fn thp_pmd_allowed_by_sysfs(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe {
            bindings::thp_vma_allowable_order(
                self.as_ptr(),
                self.flags(),
                bindings::TVA_ENFORCE_SYSFS as c_ulong,
                HPAGE_PMD_ORDER as _,
            )
        }
    }

    /// `vma_is_anonymous(vma)`: no `vm_ops`.
    #[inline]
    pub fn is_anonymous(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { (*self.as_ptr()).vm_ops }.is_null()
    }

    /// `userfaultfd_wp(vma)`.
    #[inline]
    pub fn userfaultfd_wp(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::userfaultfd_wp(self.as_ptr()) }
    }

    /// `userfaultfd_armed(vma)`.
    #[inline]
    pub fn userfaultfd_armed(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::userfaultfd_armed(self.as_ptr()) }
    }

    /// Whether the VMA is `VM_SHARED`.
    #[inline]
    pub fn is_shared(&self) -> bool {
        self.flags() & bindings::VM_SHARED as c_ulong != 0
    }

    /// `READ_ONCE(vma->anon_vma) != NULL`: whether the VMA has (had) private
    /// anonymous pages.
    #[inline]
    pub fn has_anon_vma(&self) -> bool {
        !self.raw_anon_vma().is_null()
    }

    /// The page cache of the file the VMA maps, if any.
    #[inline]
    pub fn mapping(&self) -> Option<Mapping<'a>> {
        // SAFETY: the VMA is valid (type invariant); `vm_file` is set for
        // the VMA's life.
        let file = unsafe { (*self.as_ptr()).vm_file };
        if file.is_null() {
            return None;
        }
        // SAFETY: the VMA holds a reference on its file.
        let mapping = unsafe { (*file).f_mapping };
        // INVARIANT: the file, and so its mapping, is pinned by the VMA.
        NonNull::new(mapping).map(|mapping| Mapping {
            mapping,
            _pin: PhantomData,
        })
    }

    /// Whether the VMA's mm is exiting (`mm_users == 0`), which is how
    /// khugepaged's `hpage_collapse_test_exit()` sees it.
    #[inline]
    pub fn mm_exiting(&self) -> bool {
        // SAFETY: a VMA's mm outlives it; `mm_users` is an `atomic_t`.
        unsafe { read_once(&(*self.mm()).__bindgen_anon_1.mm_users.counter) == 0 }
    }

    /// `vma_is_dax()`: whether the VMA maps a DAX file.
    #[inline]
    pub fn is_dax(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::vma_is_dax(self.as_ptr()) }
    }

    /// Whether the VMA's page tables can hold leaf entries above the PMD
    /// level: hugetlb (1 GiB pages), DAX (PUD-sized device mappings) and
    /// `VM_PFNMAP`/`VM_MIXEDMAP` (huge PFN maps). [`Vma::find_pmd`] refuses
    /// them.
    #[inline]
    pub fn may_have_pud_leaves(&self) -> bool {
        let special =
            (bindings::VM_HUGETLB | bindings::VM_PFNMAP | bindings::VM_MIXEDMAP) as c_ulong;
        self.flags() & special != 0 || self.is_dax()
    }

    /// The PMD entry that maps the PMD-aligned `haddr`, when the PMD range
    /// at `haddr` lies inside the VMA, the VMA is not one that can have
    /// PUD-level leaves ([`Vma::may_have_pud_leaves`]) and the upper levels
    /// are present tables (a PUD leaf is refused as well: its "PMD" would
    /// point into the user's memory).
    ///
    /// # Examples
    ///
    /// A `VM_PFNMAP` VMA gets no `Pmd`, although its page tables are there:
    ///
    /// ```
    /// use kernel::{bindings, mm::guard::*};
    ///
    /// const ADDR: usize = 0x4000_0000;
    /// let mm = KthreadMm::new()?;
    /// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
    /// mm.write(ADDR, &[1])?;
    /// let mmap = mm.mmap_write();
    /// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
    /// assert!(vma.find_pmd(ADDR as _).is_some());
    /// let pfnmap = bindings::VM_PFNMAP as kernel::ffi::c_ulong;
    /// // SAFETY: the VMA is valid; its flags change under the mmap write
    /// // lock, held; they are restored below, before the VMA is torn down.
    /// let flags = unsafe { core::ptr::addr_of_mut!((*vma.as_ptr()).__bindgen_anon_2.__vm_flags) };
    /// // SAFETY: as above.
    /// unsafe { *flags |= pfnmap };
    /// assert!(vma.may_have_pud_leaves() && vma.find_pmd(ADDR as _).is_none());
    /// // SAFETY: as above.
    /// unsafe { *flags &= !pfnmap };
    /// assert!(vma.find_pmd(ADDR as _).is_some());
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn find_pmd(&self, haddr: c_ulong) -> Option<Pmd<'a>> {
        if haddr & !HPAGE_PMD_MASK != 0
            || !self.contains_range(haddr, haddr.wrapping_add(HPAGE_PMD_SIZE))
            || self.may_have_pud_leaves()
        {
            return None;
        }
        // SAFETY: the mm is live; its upper page-table levels for the VMA's
        // range stay while the VMA is in its trees (type invariant), which
        // is all the walk reads.
        let pmd = NonNull::new(unsafe { bindings::mm_find_pmd_table(self.mm(), haddr) })?;
        // INVARIANT: as above, the entry stays in place for `'a`; it is in a
        // PMD table (the PUD entry above is a table, not a leaf), in a VMA
        // that has no PUD-level leaves.
        Some(Pmd {
            pmd,
            vma: *self,
            haddr,
        })
    }
}

/// The page cache of a file (`struct address_space`), pinned.
///
/// # Invariants
///
/// `mapping` points to an `address_space` that stays live for `'a`.
#[derive(Clone, Copy)]
pub struct Mapping<'a> {
    mapping: NonNull<bindings::address_space>,
    _pin: PhantomData<&'a ()>,
}

impl<'a> Mapping<'a> {
    /// Wraps an `address_space` that the caller keeps live.
    ///
    /// # Safety
    ///
    /// `mapping` must point to an `address_space` that stays live for `'a`
    /// (the caller holds a reference on its inode, a file or a locked folio
    /// of it).
    #[inline]
    pub unsafe fn from_raw(mapping: NonNull<bindings::address_space>) -> Self {
        // INVARIANT: by the safety requirements.
        Self {
            mapping,
            _pin: PhantomData,
        }
    }

    /// Returns the raw `address_space` pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::address_space {
        self.mapping.as_ptr()
    }

    /// Takes `i_mmap_rwsem` for reading (`i_mmap_lock_read()`).
    #[inline]
    pub fn i_mmap_read(&self) -> IMmapReadGuard<'_> {
        // SAFETY: the mapping is live (type invariant).
        unsafe { bindings::i_mmap_lock_read(self.as_ptr()) };
        // INVARIANT: locked just now.
        IMmapReadGuard { mapping: *self }
    }

    /// Takes `i_mmap_rwsem` for writing (`i_mmap_lock_write()`).
    #[inline]
    pub fn i_mmap_write(&self) -> IMmapWriteGuard<'_> {
        // SAFETY: the mapping is live (type invariant).
        unsafe { bindings::i_mmap_lock_write(self.as_ptr()) };
        // INVARIANT: locked just now.
        IMmapWriteGuard { mapping: *self }
    }

    /// Returns `&mapping->i_mmap_rwsem`, for assertions.
    #[inline]
    pub fn raw_i_mmap_rwsem(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the mapping is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.as_ptr()).i_mmap_rwsem) }
    }

    /// The VMAs of the interval tree whose file range meets
    /// `[first, last]` (pages), while the caller holds `i_mmap_rwsem`.
    fn vmas<'g>(&self, first: c_ulong, last: c_ulong) -> VmaIter<'g> {
        VmaIter {
            // SAFETY: the mapping is live and i_mmap_rwsem is held by the
            // guard that borrows it for `'g`.
            next: unsafe {
                bindings::vma_interval_tree_iter_first(
                    core::ptr::addr_of_mut!((*self.as_ptr()).i_mmap),
                    first,
                    last,
                )
            },
            first,
            last,
            _lock: PhantomData,
        }
    }
}

/// A held `i_mmap_rwsem`, read side.
///
/// # Invariants
///
/// This guard holds `mapping`'s `i_mmap_rwsem` for reading.
///
/// # Examples
///
/// A shared anonymous mapping is backed by a shmem file: its VMA is in
/// that file's interval tree.
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, true)?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let mapping = vma.mapping().ok_or(EINVAL)?;
/// let sem = mapping.raw_i_mmap_rwsem();
/// // SAFETY: `sem` lives in the mapping, pinned by `vma`.
/// let locked = |s| unsafe { bindings::rwsem_is_locked(s) } != 0;
/// {
///     let i_mmap = mapping.i_mmap_read();
///     assert!(locked(sem));
///     let mut vmas = i_mmap.vmas(0, 0);
///     assert_eq!(vmas.next().map(|v| v.as_ptr()), Some(vma.as_ptr()));
///     assert!(vmas.next().is_none());
///     // Page 512 is past the mapping.
///     assert!(i_mmap.vmas(512, 1023).next().is_none());
/// }
/// assert!(!locked(sem));
/// {
///     let i_mmap = mapping.i_mmap_write();
///     assert!(locked(sem));
///     assert_eq!(i_mmap.vmas(0, 511).count(), 1);
/// }
/// assert!(!locked(sem));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the i_mmap lock is released when the guard is dropped"]
pub struct IMmapReadGuard<'a> {
    mapping: Mapping<'a>,
}

impl IMmapReadGuard<'_> {
    /// The VMAs mapping any page of `[first, last]` (file offsets in
    /// pages), as `vma_interval_tree_foreach()`.
    #[inline]
    pub fn vmas(&self, first: c_ulong, last: c_ulong) -> VmaIter<'_> {
        self.mapping.vmas(first, last)
    }
}

impl Drop for IMmapReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for reading by this guard (type invariant).
        unsafe { bindings::i_mmap_unlock_read(self.mapping.as_ptr()) };
    }
}

/// A held `i_mmap_rwsem`, write side.
///
/// # Invariants
///
/// This guard holds `mapping`'s `i_mmap_rwsem` for writing.
#[must_use = "the i_mmap lock is released when the guard is dropped"]
pub struct IMmapWriteGuard<'a> {
    mapping: Mapping<'a>,
}

impl IMmapWriteGuard<'_> {
    /// As [`IMmapReadGuard::vmas`].
    #[inline]
    pub fn vmas(&self, first: c_ulong, last: c_ulong) -> VmaIter<'_> {
        self.mapping.vmas(first, last)
    }
}

impl Drop for IMmapWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for writing by this guard (type invariant).
        unsafe { bindings::i_mmap_unlock_write(self.mapping.as_ptr()) };
    }
}

/// Iterator over the VMAs of a file's interval tree, under `i_mmap_rwsem`.
///
/// # Invariants
///
/// `next` is NULL or a VMA in the tree, whose `i_mmap_rwsem` is held for
/// `'a`.
pub struct VmaIter<'a> {
    next: *mut bindings::vm_area_struct,
    first: c_ulong,
    last: c_ulong,
    _lock: PhantomData<&'a ()>,
}

impl<'a> Iterator for VmaIter<'a> {
    type Item = Vma<'a>;

    #[inline]
    fn next(&mut self) -> Option<Vma<'a>> {
        let vma = NonNull::new(self.next)?;
        // SAFETY: `vma` is in the tree, locked for `'a` (type invariant).
        self.next =
            unsafe { bindings::vma_interval_tree_iter_next(vma.as_ptr(), self.first, self.last) };
        // INVARIANT: a VMA leaves the tree only under the write lock.
        Some(Vma {
            vma,
            _lock: PhantomData,
        })
    }
}

/// The `anon_vma` of a [`Vma`].
///
/// # Invariants
///
/// `av` points to an `anon_vma` that stays live for `'a`.
#[derive(Clone, Copy)]
pub struct AnonVma<'a> {
    av: NonNull<bindings::anon_vma>,
    _vma: PhantomData<&'a ()>,
}

impl AnonVma<'_> {
    /// Takes the anon_vma's root rwsem for writing (`anon_vma_lock_write()`).
    #[inline]
    pub fn lock_write(&self) -> AnonVmaWriteGuard<'_> {
        // SAFETY: the anon_vma is live (type invariant).
        unsafe { bindings::anon_vma_lock_write(self.av.as_ptr()) };
        // INVARIANT: locked just now.
        AnonVmaWriteGuard { av: *self }
    }

    /// Returns `&anon_vma->root->rwsem`, the lock [`Self::lock_write`]
    /// takes, for assertions.
    #[inline]
    pub fn raw_rwsem(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the anon_vma is live (type invariant) and so is its root,
        // which it holds a reference on.
        unsafe { core::ptr::addr_of_mut!((*(*self.av.as_ptr()).root).rwsem) }
    }
}

/// A held anon_vma write lock.
///
/// # Invariants
///
/// This guard holds `av`'s root rwsem for writing.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// {
///     let mmap = mm.mmap_read();
///     let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
///     // No anon_vma before the first write fault.
///     assert!(!vma.has_anon_vma() && mmap.anon_vma(&vma).is_none());
/// }
/// mm.write(ADDR, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let av = mmap.anon_vma(&vma).ok_or(EINVAL)?;
/// let sem = av.raw_rwsem();
/// // SAFETY: `sem` lives in the anon_vma root, pinned by `vma`.
/// let locked = |s| unsafe { bindings::rwsem_is_locked(s) } != 0;
/// assert!(!locked(sem));
/// let guard = av.lock_write();
/// assert!(locked(sem));
/// drop(guard);
/// assert!(!locked(sem));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the anon_vma lock is released when the guard is dropped"]
pub struct AnonVmaWriteGuard<'a> {
    av: AnonVma<'a>,
}

impl AnonVmaWriteGuard<'_> {
    /// Whether this guard holds the lock of `vma`'s anon_vma.
    #[inline]
    pub fn locks_anon_vma_of(&self, vma: &Vma<'_>) -> bool {
        vma.raw_anon_vma() == self.av.av.as_ptr()
    }
}

impl Drop for AnonVmaWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for writing by this guard (type invariant).
        unsafe { bindings::anon_vma_unlock_write(self.av.av.as_ptr()) };
    }
}

/// A locked page-cache folio, with a reference.
///
/// # Invariants
///
/// `folio` points to a folio on which this guard owns one reference and
/// whose lock it holds; both are released on drop. `nr` is its number of
/// pages.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, true)?;
/// mm.write(ADDR + 4096, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// // Page 0 was never touched, page 1 is in the page cache.
/// assert!(LockedFolio::lock_in_vma(&vma, ADDR as _).is_none());
/// let folio = LockedFolio::lock_in_vma(&vma, (ADDR + 4096) as _).ok_or(EINVAL)?;
/// let raw = folio.as_ptr();
/// // SAFETY: the folio stays in the page cache while it is mapped.
/// let locked = |f| unsafe { bindings::folio_test_locked(f) };
/// assert!(locked(raw));
/// assert_eq!(folio.order(), 0);
/// assert_eq!(folio.page(0), raw.cast());
/// assert!(folio.page(1).is_null());
/// drop(folio);
/// assert!(!locked(raw));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the folio is unlocked and put when the guard is dropped"]
pub struct LockedFolio<'a> {
    folio: NonNull<bindings::folio>,
    // Stable while the folio is locked (no split).
    nr: usize,
    _vma: PhantomData<&'a ()>,
}

impl<'a> LockedFolio<'a> {
    /// Looks up and locks the page-cache folio backing `addr` of the file
    /// VMA `vma`, as `filemap_lock_folio(mapping, linear_page_index())`.
    ///
    /// Returns `None` if the VMA has no file or the folio is not cached.
    pub fn lock_in_vma(vma: &Vma<'a>, addr: c_ulong) -> Option<Self> {
        let mapping = vma.mapping()?;
        // SAFETY: the VMA is valid and pins the mapping.
        let folio = unsafe {
            let index = bindings::linear_page_index(vma.as_ptr(), addr);
            bindings::filemap_lock_folio(mapping.as_ptr(), index)
        };
        // SAFETY: `IS_ERR` only looks at the pointer value.
        if unsafe { bindings::IS_ERR(folio.cast()) } {
            return None;
        }
        let folio = NonNull::new(folio)?;
        // SAFETY: locked and referenced, so the order is stable.
        let nr = 1usize << unsafe { bindings::folio_order(folio.as_ptr()) };
        // INVARIANT: filemap_lock_folio() returned the folio locked and
        // with a reference.
        Some(Self {
            folio,
            nr,
            _vma: PhantomData,
        })
    }

    /// Returns the raw folio pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::folio {
        self.folio.as_ptr()
    }

    /// `folio_order(folio)`.
    #[inline]
    pub fn order(&self) -> u32 {
        self.nr.trailing_zeros()
    }

    /// `folio_page(folio, n)`: the page at index `n`, or NULL when `n` is
    /// outside the folio.
    #[inline]
    pub fn page(&self, n: usize) -> *mut bindings::page {
        if n >= self.nr {
            return core::ptr::null_mut();
        }
        // SAFETY: we hold a reference and `n` is within the folio.
        unsafe { folio_page(self.folio, n) }
    }

    /// Takes one more reference for a new mapping of the folio.
    #[inline]
    pub fn get_for_mapping(&self) {
        // SAFETY: we hold a reference (type invariant), so the folio is live.
        unsafe { bindings::folio_get(self.as_ptr()) };
    }

    /// Drops `nr` references held by mappings that were just removed.
    ///
    /// # Safety
    ///
    /// The caller must have removed `nr` mappings of the folio, each of
    /// which held a reference.
    #[inline]
    pub unsafe fn ref_sub_mappings(&self, nr: i32) {
        // SAFETY: our own reference keeps the count above `nr`; the caller
        // owns the `nr` references it drops.
        unsafe { bindings::folio_ref_sub(self.as_ptr(), nr) };
    }

    /// `mm_counter_file(folio)`: the rss counter the folio's mappings use.
    #[inline]
    pub fn mm_counter(&self) -> i32 {
        // SAFETY: we hold a reference (type invariant).
        unsafe { bindings::mm_counter_file(self.as_ptr()) }
    }
}

impl Drop for LockedFolio<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we hold the lock and one reference (type invariant).
        unsafe {
            bindings::folio_unlock(self.as_ptr());
            bindings::folio_put(self.as_ptr());
        }
    }
}

/// What a PMD entry holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PmdKind {
    /// `pmd_none()`.
    None,
    /// Not present (a migration entry).
    NotPresent,
    /// A huge mapping (`pmd_trans_huge()`).
    Huge,
    /// `pmd_devmap()` or `pmd_bad()`.
    Bad,
    /// A PTE table.
    Table,
}

impl PmdKind {
    /// Classifies the entry value `pmde`.
    #[inline]
    pub fn of(pmde: bindings::pmd_t) -> Self {
        // SAFETY: these only look at the value.
        unsafe {
            if bindings::pmd_none(pmde) != 0 {
                PmdKind::None
            } else if bindings::pmd_present(pmde) == 0 {
                PmdKind::NotPresent
            } else if bindings::pmd_trans_huge(pmde) != 0 {
                PmdKind::Huge
            } else if bindings::pmd_devmap(pmde) != 0 || bindings::pmd_bad(pmde) != 0 {
                PmdKind::Bad
            } else {
                PmdKind::Table
            }
        }
    }
}

/// A PMD entry of a [`Vma`], for a PMD-aligned range inside it.
///
/// # Invariants
///
/// `pmd` points to the PMD entry that maps `haddr` in `vma`'s mm, which
/// stays in place for `'a`; `haddr` is PMD-aligned and `[haddr, haddr +
/// HPAGE_PMD_SIZE)` lies in `vma`.
///
/// # Examples
///
/// [`Pmd::lock`] holds the PMD lock until dropped; [`PmdLock::nest_table_lock`]
/// adds the PTE table's lock unless it is the PMD lock itself (no split
/// PTE locks), and releases both.
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// mm.write(ADDR, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// // Only PMD-aligned ranges inside the VMA have a `Pmd`.
/// assert!(vma.find_pmd((ADDR + 4096) as _).is_none());
/// assert!(vma.find_pmd((ADDR + HPAGE_PMD_SIZE) as _).is_none());
/// let pmd = vma.find_pmd(ADDR as _).ok_or(EINVAL)?;
/// assert_eq!(PmdKind::of(pmd.get_lockless()), PmdKind::Table);
///
/// let pml = pmd.lock();
/// let pml_ptr = pml.raw_lock();
/// // SAFETY: the lock lives in the mm or its page tables, which outlive
/// // `pmd`.
/// let locked = |l| unsafe {
///     // Taken by someone (this guard): a trylock fails without waiting.
///     let free = bindings::spin_trylock(l) != 0;
///     if free {
///         bindings::spin_unlock(l);
///     }
///     !free
/// };
/// assert!(locked(pml_ptr));
/// let both = pml.nest_table_lock().ok_or(EINVAL)?;
/// let ptl_ptr = both.held_ptl();
/// assert_eq!(both.raw_pml(), pml_ptr);
/// assert_eq!(both.nested(), ptl_ptr != pml_ptr);
/// assert!(locked(pml_ptr) && locked(ptl_ptr));
/// drop(both);
/// assert!(!locked(pml_ptr) && !locked(ptl_ptr));
/// # Ok::<(), Error>(())
/// ```
pub struct Pmd<'a> {
    pmd: NonNull<bindings::pmd_t>,
    vma: Vma<'a>,
    haddr: c_ulong,
}

impl<'a> Pmd<'a> {
    /// The PMD-aligned address the entry maps.
    #[inline]
    pub fn haddr(&self) -> c_ulong {
        self.haddr
    }

    /// The VMA the entry was found for.
    #[inline]
    pub fn vma(&self) -> Vma<'a> {
        self.vma
    }

    /// Returns the raw entry pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::pmd_t {
        self.pmd.as_ptr()
    }

    /// `pmdp_get_lockless()`: the entry, read without its lock.
    #[inline]
    pub fn get_lockless(&self) -> bindings::pmd_t {
        // SAFETY: the entry is valid (type invariant).
        unsafe { bindings::pmdp_get_lockless(self.as_ptr()) }
    }

    /// Takes the entry's lock (`pmd_lock()`).
    #[inline]
    pub fn lock(&self) -> PmdLock<'_> {
        // SAFETY: the entry is one of the mm's, and stays (type invariant).
        let pml = unsafe { bindings::pmd_lock(self.vma.mm(), self.as_ptr()) };
        // INVARIANT: pmd_lock() returns the lock it took, never NULL.
        PmdLock {
            // SAFETY: pmd_lock() never returns NULL.
            pml: unsafe { NonNull::new_unchecked(pml) },
            pmd: self,
        }
    }

    /// Maps and locks the PTE table under the entry
    /// (`pte_offset_map_lock()`); `None` if there is no table (any more).
    #[inline]
    pub fn map_lock(&self) -> Option<PteMapLock<'_>> {
        // SAFETY: the entry is the mm's for `haddr` (type invariant).
        unsafe { PteMapLock::new(self, self.as_ptr()) }
    }

    /// Maps the PTE table under the entry without taking its lock
    /// (`pte_offset_map_nolock()`); `None` if there is no table.
    #[inline]
    pub fn map_nolock(&self) -> Option<PteMap<'_>> {
        let mut ptl = core::ptr::null_mut();
        // SAFETY: as in `map_lock`.
        let ptes = unsafe {
            bindings::pte_offset_map_nolock(self.vma.mm(), self.as_ptr(), self.haddr, &mut ptl)
        };
        let ptes = NonNull::new(ptes)?;
        // INVARIANT: on success the table is mapped and `ptl` is its lock.
        Some(PteMap {
            ptes,
            // SAFETY: `ptl` is set whenever a table was mapped.
            ptl: unsafe { NonNull::new_unchecked(ptl) },
            pmd: self,
        })
    }
}

mod private {
    /// Seals [`super::PtlHeld`]: only the guards of this module implement it.
    pub trait Sealed {}
}

/// Proof that a PTE table's lock is held: implemented by the guards that
/// hold one ([`PteMapLock`], [`PteLock`], [`PmdPteLock`]) and by nothing
/// else. The trait is sealed, so that code outside this module cannot
/// make up a proof and clear PTEs ([`PteMap::clear`]) without the lock.
pub trait PtlHeld: private::Sealed {
    /// The PTE lock that is held, for as long as `self` is borrowed.
    fn held_ptl(&self) -> *mut bindings::spinlock_t;
}

/// `ptep_get()` of entry `i` of a PMD range's PTEs, or `None` past it.
///
/// # Safety
///
/// `ptes` must point to [`HPAGE_PMD_NR`] mapped PTEs.
#[inline]
unsafe fn read_pte(ptes: NonNull<bindings::pte_t>, i: usize) -> Option<bindings::pte_t> {
    if i >= HPAGE_PMD_NR {
        return None;
    }
    // x86 uses the generic ptep_get(), READ_ONCE(*ptep): a volatile read
    // saves an out-of-line call per PTE. Elsewhere (arm64's contpte, ...)
    // the arch's ptep_get() is called.
    #[cfg(CONFIG_X86)]
    // SAFETY: `i` is within the mapped entries (safety requirements), which
    // are aligned `pte_t`s.
    return Some(unsafe { read_once(ptes.as_ptr().add(i)) });
    #[cfg(not(CONFIG_X86))]
    // SAFETY: `i` is within the mapped entries (safety requirements).
    return Some(unsafe { bindings::ptep_get(ptes.as_ptr().add(i)) });
}

/// A PTE table mapped with `pte_offset_map_lock()`: mapped, and its lock
/// held.
///
/// # Invariants
///
/// `ptes` points to the first of [`HPAGE_PMD_NR`] entries of a mapped PTE
/// table (within an RCU read-side section started by the map), and `ptl`
/// is that table's lock, held by this guard.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// mm.write(ADDR + 4096, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let pmd = vma.find_pmd(ADDR as _).ok_or(EINVAL)?;
/// // SAFETY: the lock lives in the mm or its page tables, which outlive
/// // `pmd`.
/// let locked = |l| unsafe {
///     // Taken by someone (this guard): a trylock fails without waiting.
///     let free = bindings::spin_trylock(l) != 0;
///     if free {
///         bindings::spin_unlock(l);
///     }
///     !free
/// };
///
/// let ptes = pmd.map_lock().ok_or(EINVAL)?;
/// let ptl = ptes.raw_ptl();
/// assert!(locked(ptl));
/// // SAFETY: these only look at the values.
/// unsafe {
///     assert!(bindings::pte_none(ptes.get(0).ok_or(EINVAL)?) != 0);
///     assert!(bindings::pte_present(ptes.get(1).ok_or(EINVAL)?) != 0);
/// }
/// assert!(ptes.get(HPAGE_PMD_NR).is_none());
/// drop(ptes);
/// assert!(!locked(ptl));
///
/// // Mapped without the lock, then locked alone; a PTE is only cleared
/// // with a proof that this table's lock is held.
/// let map = pmd.map_nolock().ok_or(EINVAL)?;
/// assert!(!locked(ptl));
/// let held = map.lock();
/// assert_eq!(held.held_ptl(), ptl);
/// assert!(locked(ptl));
/// assert!(!map.clear(&held, HPAGE_PMD_NR));
/// drop(held);
/// assert!(!locked(ptl));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the table is unlocked and unmapped when the guard is dropped"]
pub struct PteMapLock<'p> {
    ptes: NonNull<bindings::pte_t>,
    ptl: NonNull<bindings::spinlock_t>,
    pmd: &'p Pmd<'p>,
}

impl<'p> PteMapLock<'p> {
    /// `pte_offset_map_lock()` of the table that `entry` points to, for the
    /// range of `pmd`; `None` if it does not point to one.
    ///
    /// # Safety
    ///
    /// `entry` must be `pmd`'s entry, or a saved value of it pointing to a
    /// table that is not freed while the result lives.
    #[inline]
    unsafe fn new(pmd: &'p Pmd<'p>, entry: *mut bindings::pmd_t) -> Option<Self> {
        let mut ptl = core::ptr::null_mut();
        // SAFETY: by the function's safety requirements.
        let ptes =
            unsafe { bindings::__pte_offset_map_lock(pmd.vma.mm(), entry, pmd.haddr, &mut ptl) };
        let ptes = NonNull::new(ptes)?;
        // INVARIANT: on success the table is mapped and `ptl` locked.
        Some(PteMapLock {
            ptes,
            // SAFETY: `ptl` is set whenever a table was mapped.
            ptl: unsafe { NonNull::new_unchecked(ptl) },
            pmd,
        })
    }

    /// Releases the lock and keeps the table mapped (`spin_unlock()`
    /// without `pte_unmap()`), for work that takes the lock only around
    /// the entries it changes.
    #[inline]
    pub fn unlock(self) -> PteMap<'p> {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: held by this guard (type invariant), which is not dropped.
        unsafe { bindings::spin_unlock(this.ptl.as_ptr()) };
        // INVARIANT: still mapped; `ptl` is the table's lock.
        PteMap {
            ptes: this.ptes,
            ptl: this.ptl,
            pmd: this.pmd,
        }
    }

    /// Reads entry `i`, or `None` past the PMD range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<bindings::pte_t> {
        // SAFETY: `ptes` starts `HPAGE_PMD_NR` mapped entries (invariant).
        unsafe { read_pte(self.ptes, i) }
    }

    /// Returns the held lock, for assertions.
    #[inline]
    pub fn raw_ptl(&self) -> *mut bindings::spinlock_t {
        self.ptl.as_ptr()
    }
}

impl private::Sealed for PteMapLock<'_> {}

impl PtlHeld for PteMapLock<'_> {
    #[inline]
    fn held_ptl(&self) -> *mut bindings::spinlock_t {
        self.ptl.as_ptr()
    }
}

impl Drop for PteMapLock<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: mapped and locked by this guard (type invariant), released
        // in pte_unmap_unlock() order.
        unsafe {
            bindings::spin_unlock(self.ptl.as_ptr());
            bindings::pte_unmap(self.ptes.as_ptr());
        }
    }
}

/// A PTE table mapped with `pte_offset_map_nolock()`: mapped, lock not
/// taken. The lock is taken through [`PteMap::lock`] or
/// [`PmdLock::nest_table_lock`].
///
/// # Invariants
///
/// `ptes` points to the first of [`HPAGE_PMD_NR`] entries of a mapped PTE
/// table (within an RCU read-side section started by the map) under
/// `pmd`, and `ptl` is that table's lock.
#[must_use = "the table is unmapped when the guard is dropped"]
pub struct PteMap<'p> {
    ptes: NonNull<bindings::pte_t>,
    ptl: NonNull<bindings::spinlock_t>,
    pmd: &'p Pmd<'p>,
}

impl<'p> PteMap<'p> {
    /// Takes the table's lock on its own (no PMD lock held). The guard
    /// borrows the mapping: the lock lives in the table, which only the
    /// mapping keeps from being freed.
    #[inline]
    pub fn lock(&self) -> PteLock<'_> {
        // SAFETY: `ptl` is the lock of a live table (type invariant).
        unsafe { bindings::spin_lock(self.ptl.as_ptr()) };
        // INVARIANT: just locked.
        PteLock {
            ptl: self.ptl,
            _pmd: PhantomData,
        }
    }

    /// Reads entry `i`, or `None` past the PMD range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<bindings::pte_t> {
        // SAFETY: `ptes` starts `HPAGE_PMD_NR` mapped entries (invariant).
        unsafe { read_pte(self.ptes, i) }
    }

    /// Clears entry `i` with `ptep_clear()`; the TLB flush is left to the
    /// caller. Returns `false` (and does nothing) if `held` does not hold
    /// this table's lock or `i` is out of range.
    #[inline]
    pub fn clear(&self, held: &(impl PtlHeld + ?Sized), i: usize) -> bool {
        if held.held_ptl() != self.ptl.as_ptr() || i >= HPAGE_PMD_NR {
            return false;
        }
        let addr = self.pmd.haddr + (i * bindings::PAGE_SIZE) as c_ulong;
        // SAFETY: `i` is within the mapped entries and the table's lock is
        // held, so the entry cannot change under us.
        unsafe {
            bindings::ptep_clear(self.pmd.vma.mm(), addr, self.ptes.as_ptr().add(i));
        }
        true
    }
}

impl Drop for PteMap<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: mapped by this guard (type invariant).
        unsafe { bindings::pte_unmap(self.ptes.as_ptr()) };
    }
}

/// A held PTE lock, taken alone (without the PMD lock).
///
/// # Invariants
///
/// `ptl` is a PTE table lock held by this guard.
#[must_use = "the PTE lock is released when the guard is dropped"]
pub struct PteLock<'p> {
    ptl: NonNull<bindings::spinlock_t>,
    _pmd: PhantomData<&'p ()>,
}

impl private::Sealed for PteLock<'_> {}

impl PtlHeld for PteLock<'_> {
    #[inline]
    fn held_ptl(&self) -> *mut bindings::spinlock_t {
        self.ptl.as_ptr()
    }
}

impl Drop for PteLock<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held by this guard (type invariant).
        unsafe { bindings::spin_unlock(self.ptl.as_ptr()) };
    }
}

/// A held PMD lock (`pmd_lock()`): the mm's `page_table_lock`, or the split
/// lock of the PMD table.
///
/// # Invariants
///
/// `pml` is the lock `pmd_lock()` returned for `pmd`, held by this guard.
#[must_use = "the PMD lock is released when the guard is dropped"]
pub struct PmdLock<'p> {
    pml: NonNull<bindings::spinlock_t>,
    pmd: &'p Pmd<'p>,
}

impl<'p> PmdLock<'p> {
    /// Returns the held lock, for assertions.
    #[inline]
    pub fn raw_lock(&self) -> *mut bindings::spinlock_t {
        self.pml.as_ptr()
    }

    /// Takes the lock of the PTE table this entry points to
    /// (`pte_lockptr()`) nested inside the PMD lock, unless it is the same
    /// lock (`SINGLE_DEPTH_NESTING` only when ptl != pml), and returns a
    /// guard holding both that releases the PTE lock first.
    ///
    /// Returns `None`, releasing the PMD lock, if the entry does not point
    /// to a PTE table.
    #[inline]
    pub fn nest_table_lock(self) -> Option<PmdPteLock<'p>> {
        // SAFETY: the entry is valid, and stable while its lock is held.
        let pmde = unsafe { read_once(self.pmd.as_ptr()) };
        if PmdKind::of(pmde) != PmdKind::Table {
            return None;
        }
        // SAFETY: the entry points to a PTE table, which cannot be freed
        // while the PMD lock is held.
        let ptl = unsafe { bindings::pte_lockptr(self.pmd.vma.mm(), self.pmd.as_ptr()) };
        // SAFETY: pte_lockptr() never returns NULL.
        let ptl = unsafe { NonNull::new_unchecked(ptl) };
        let nested = if ptl == self.pml {
            None
        } else {
            // SAFETY: `ptl` is the live table's lock, taken inside the PMD
            // lock as the lock order requires.
            unsafe {
                bindings::spin_lock_nested(ptl.as_ptr(), bindings::SINGLE_DEPTH_NESTING as c_int)
            };
            Some(ptl)
        };
        // INVARIANT: `nested` is held if it is `Some`; otherwise `ptl` is
        // the PMD lock itself, held by `self`.
        Some(PmdPteLock {
            nested,
            ptl,
            pml: self,
        })
    }
}

impl<'p> PmdLock<'p> {
    /// Detaches the PTE table, PTEs and all, for a copy into a huge page:
    /// `pmdp_collapse_flush()` of the entry, which flushes the TLB for its
    /// range (GUP-fast backs off when it sees the entry change). The table
    /// goes back with the returned [`DetachedPtes`]' drop, or is replaced
    /// by a huge PMD with [`DetachedPtes::install_anon_huge`].
    ///
    /// Nothing else can walk into the table meanwhile: page faults and
    /// mmap-lock walkers are excluded by `vma`'s write locks, rmap walks of
    /// its anonymous pages by the anon_vma lock `av` (and afterwards by the
    /// folio locks the caller takes), secondary MMUs by the mmu_notifier
    /// invalidation `inv` of the range, and GUP-fast by the flush and the
    /// synchronisation of [`DetachedPtes::map_lock`].
    ///
    /// Returns `None`, detaching nothing, if `vma` is not the entry's VMA
    /// or not an anonymous one (a file VMA's pages are reached through the
    /// page cache's rmap, which the anon_vma lock does not exclude), `av`
    /// does not lock its anon_vma, `inv` does not cover its range, or the
    /// entry is not a PTE table.
    #[inline]
    pub fn detach_populated(
        &self,
        vma: &WriteLockedVma<'p>,
        av: &AnonVmaWriteGuard<'_>,
        inv: &MmuInvalidation<'_>,
    ) -> Option<DetachedPtes<'p>> {
        let pmd = self.pmd;
        if vma.as_ptr() != pmd.vma.as_ptr()
            || !vma.is_anonymous()
            || !av.locks_anon_vma_of(vma)
            || !inv.covers(pmd)
        {
            return None;
        }
        // SAFETY: the entry is valid, and stable while its lock is held.
        if PmdKind::of(unsafe { read_once(pmd.as_ptr()) }) != PmdKind::Table {
            return None;
        }
        // SAFETY: the PMD lock is held (type invariant) and the VMA maps the
        // entry's range (`Pmd` invariant).
        let pmdval =
            unsafe { bindings::pmdp_collapse_flush(pmd.vma.as_ptr(), pmd.haddr, pmd.as_ptr()) };
        // INVARIANT: detached just now, with the VMA write-locked for 'p.
        Some(DetachedPtes {
            pmdval,
            pmd,
            synced: core::cell::Cell::new(false),
        })
    }
}

impl Drop for PmdLock<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held by this guard (type invariant).
        unsafe { bindings::spin_unlock(self.pml.as_ptr()) };
    }
}

/// The PMD lock and, nested inside it, the lock of the PTE table the entry
/// points to.
///
/// # Invariants
///
/// `pml` holds the PMD lock and the entry points to a PTE table whose lock
/// is `ptl`; `ptl` is held by this guard through `nested` when it differs
/// from the PMD lock.
#[must_use = "both locks are released when the guard is dropped"]
pub struct PmdPteLock<'p> {
    nested: Option<NonNull<bindings::spinlock_t>>,
    ptl: NonNull<bindings::spinlock_t>,
    pml: PmdLock<'p>,
}

impl<'p> PmdPteLock<'p> {
    /// Whether the PTE lock was taken on its own, as opposed to being the
    /// PMD lock.
    #[inline]
    pub fn nested(&self) -> bool {
        self.nested.is_some()
    }

    /// Returns the PMD lock, for assertions.
    #[inline]
    pub fn raw_pml(&self) -> *mut bindings::spinlock_t {
        self.pml.raw_lock()
    }

    /// Detaches the PTE table: `pmdp_collapse_flush()` of the entry, which
    /// also flushes the TLB for its range, then `pmdp_get_lockless_sync()`.
    /// The table must be freed with [`DetachedTable::free`] once the locks
    /// (and any mmu_notifier invalidation) are released.
    ///
    /// # Safety
    ///
    /// No present PTE may be left in the table: each was cleared under this
    /// table's lock with its rmap and references dropped, or the caller
    /// knows that none can exist (a held lock on the only folio that may be
    /// mapped there, with no anon_vma or uffd-wp on the VMA).
    #[inline]
    pub unsafe fn collapse_flush(&self) -> DetachedTable<'p> {
        let pmd = self.pml.pmd;
        // SAFETY: both locks are held (type invariant), the VMA maps the
        // entry's range (`Pmd` invariant); the rest is the caller's promise.
        let pgt_pmd =
            unsafe { bindings::pmdp_collapse_flush(pmd.vma.as_ptr(), pmd.haddr, pmd.as_ptr()) };
        // SAFETY: no requirement beyond holding the PMD lock.
        unsafe { bindings::pmdp_get_lockless_sync() };
        // INVARIANT: detached just now, not freed.
        DetachedTable {
            pgt_pmd,
            mm: pmd.vma.mm(),
            haddr: pmd.haddr,
            _pmd: PhantomData,
        }
    }
}

impl private::Sealed for PmdPteLock<'_> {}

impl PtlHeld for PmdPteLock<'_> {
    #[inline]
    fn held_ptl(&self) -> *mut bindings::spinlock_t {
        self.ptl.as_ptr()
    }
}

impl Drop for PmdPteLock<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ptl) = self.nested {
            // SAFETY: taken in `PmdLock::nest_table_lock` (type invariant).
            unsafe { bindings::spin_unlock(ptl.as_ptr()) };
        }
        // `self.pml` is dropped after this, releasing the PMD lock.
    }
}

/// A PTE table detached from its PMD entry by
/// [`PmdPteLock::collapse_flush`], not yet freed.
///
/// # Invariants
///
/// `pgt_pmd` is the old entry of the PMD at `haddr` of `mm`, pointing to a
/// table that is no longer reachable from the mm's page tables and has not
/// been freed.
#[must_use = "a detached page table leaks unless freed"]
pub struct DetachedTable<'p> {
    pgt_pmd: bindings::pmd_t,
    mm: *mut bindings::mm_struct,
    haddr: c_ulong,
    _pmd: PhantomData<&'p ()>,
}

impl DetachedTable<'_> {
    /// Accounts for the table and frees it after an RCU grace period
    /// (`mm_dec_nr_ptes()`, `page_table_check_pte_clear_range()`,
    /// `pte_free_defer()`), so that lockless walkers still see a valid
    /// table. Call it with no spinlock held.
    #[inline]
    pub fn free(self) {
        // SAFETY: the table is detached and not freed (type invariant), and
        // the mm is live while the `Pmd` it came from is borrowed.
        unsafe {
            bindings::mm_dec_nr_ptes(self.mm);
            bindings::page_table_check_pte_clear_range(self.mm, self.haddr, self.pgt_pmd);
            bindings::pte_free_defer(self.mm, bindings::pmd_pgtable(self.pgt_pmd));
        }
    }
}

/// A populated PTE table detached from its PMD entry by
/// [`PmdLock::detach_populated`], whose entry stays `pmd_none()` meanwhile.
///
/// Dropping it puts the table back (`pmd_populate()` under the PMD lock,
/// which the drop takes: drop it with no PMD or PTE lock held), with every
/// PTE it still has: the failure paths of a collapse undo the detach this
/// way. Forgetting it leaks the table and leaves the range unmapped.
///
/// # Invariants
///
/// `pmdval` is the old value of the entry `pmd`, which points to a PTE
/// table that is no longer reachable from the mm's page tables, and has
/// not been freed; the VMA of `pmd` is write-locked (mmap write lock and
/// `vma_start_write()`) for `'p`.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::guard::*};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// mm.write(ADDR + 4096, &[1])?;
/// let mmap = mm.mmap_write();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let vma = mmap.vma_start_write(vma).ok_or(EINVAL)?;
/// let av = vma.anon_vma().ok_or(EINVAL)?;
/// let av = av.lock_write();
/// let pmd = vma.find_pmd(ADDR as _).ok_or(EINVAL)?;
/// let mut range = MmuNotifierRange::pmd_clear(&pmd);
/// let inv = range.start();
/// let detached = pmd.lock().detach_populated(&vma, &av, &inv).ok_or(EINVAL)?;
/// // Nothing to detach any more.
/// assert!(pmd.lock().detach_populated(&vma, &av, &inv).is_none());
/// drop(inv);
/// // Detached: the entry is empty, the table keeps its PTEs.
/// assert!(PmdKind::of(pmd.get_lockless()) == PmdKind::None);
/// let ptes = detached.map_lock().ok_or(EINVAL)?;
/// // SAFETY: these only look at the values.
/// unsafe {
///     assert!(bindings::pte_none(ptes.get(0).ok_or(EINVAL)?) != 0);
///     assert!(bindings::pte_present(ptes.get(1).ok_or(EINVAL)?) != 0);
/// }
/// // Unlocked, still mapped.
/// let ptes = ptes.unlock();
/// // Dropped: the table is back, PTEs and all.
/// drop(detached);
/// assert!(PmdKind::of(pmd.get_lockless()) == PmdKind::Table);
/// drop(ptes);
/// let ptes = pmd.map_lock().ok_or(EINVAL)?;
/// // SAFETY: only looks at the value.
/// assert!(unsafe { bindings::pte_present(ptes.get(1).ok_or(EINVAL)?) } != 0);
/// # Ok::<(), Error>(())
/// ```
#[must_use = "dropping it puts the page table back"]
pub struct DetachedPtes<'p> {
    pmdval: bindings::pmd_t,
    pmd: &'p Pmd<'p>,
    // Whether GUP-fast was synchronised with since the detach.
    synced: core::cell::Cell<bool>,
}

impl<'p> DetachedPtes<'p> {
    /// Maps and locks the detached table (`pte_offset_map_lock()` on the
    /// saved entry); `None` if that fails. The first call waits for
    /// GUP-fast walkers that may still see the table
    /// (`tlb_remove_table_sync_one()`, where page tables are freed by RCU),
    /// so that the PTEs and page references read under the lock are
    /// final.
    ///
    /// The mapping may outlive `self`: the table stays allocated while the
    /// VMA is write-locked, whether it is put back or deposited. Its lock
    /// must not: release it ([`PteMapLock::unlock`]) before `self` goes.
    #[inline]
    pub fn map_lock(&self) -> Option<PteMapLock<'p>> {
        if !self.synced.replace(true) {
            tlb_remove_table_sync_one();
        }
        let mut pmdval = self.pmdval;
        // SAFETY: `pmdval` is a PTE table entry of this mm for `haddr`, and
        // the table is not freed (type invariant); it is read only during
        // the call.
        unsafe { PteMapLock::new(self.pmd, &mut pmdval) }
    }

    /// Replaces the table by a huge PMD mapping `folio` in the VMA, which
    /// is anonymous: under the PMD lock, `folio_add_new_anon_rmap()`
    /// (exclusive), `folio_add_lru_vma()`, the table deposited
    /// (`pgtable_trans_huge_deposit()`) for a later split, `set_pmd_at()` of
    /// a dirty entry (writable if the VMA is), `update_mmu_cache_pmd()`,
    /// and `deferred_split_folio()`. The folio is marked uptodate first,
    /// so its contents are visible before the entry is.
    ///
    /// # Safety
    ///
    /// Every entry of the table must have been cleared (with its rmap,
    /// reference and rss accounting done), `folio` must hold the data of
    /// the whole PMD range, and the VMA must be anonymous with an anon_vma.
    #[inline]
    pub unsafe fn install_anon_huge(self, folio: NewFolio) {
        let this = core::mem::ManuallyDrop::new(self);
        let pmd = this.pmd;
        let (vma, mm, haddr) = (pmd.vma.as_ptr(), pmd.vma.mm(), pmd.haddr);
        let folio = core::mem::ManuallyDrop::new(folio);
        // SAFETY: the folio is ours, not yet mapped; the VMA is valid.
        let entry = unsafe {
            bindings::__folio_mark_uptodate(folio.as_ptr());
            bindings::khugepaged_mk_huge_pmd(folio.page(0), vma)
        };
        let _pml = pmd.lock();
        // SAFETY: the PMD lock is held; the table is detached and empty and
        // the VMA an anonymous one (safety requirements), write-locked (type
        // invariant), and the folio's reference becomes the mapping's.
        unsafe {
            if bindings::pmd_none(read_once(pmd.as_ptr())) == 0 {
                bindings::BUG();
            }
            bindings::khugepaged_add_new_anon_rmap(folio.as_ptr(), vma, haddr);
            bindings::folio_add_lru_vma(folio.as_ptr(), vma);
            bindings::pgtable_trans_huge_deposit(
                mm,
                pmd.as_ptr(),
                bindings::pmd_pgtable(this.pmdval),
            );
            bindings::set_pmd_at(mm, haddr, pmd.as_ptr(), entry);
            bindings::update_mmu_cache_pmd(vma, haddr, pmd.as_ptr());
            bindings::deferred_split_folio(folio.as_ptr(), false);
        }
    }
}

impl Drop for DetachedPtes<'_> {
    #[inline]
    fn drop(&mut self) {
        let _pml = self.pmd.lock();
        // SAFETY: the PMD lock is held; the entry stayed none while the
        // table was detached (type invariant: the VMA is write-locked), and
        // the table is put back as it was. `set_pmd_at()` is for huge
        // entries only: a table goes back with `pmd_populate()`.
        unsafe {
            if bindings::pmd_none(read_once(self.pmd.as_ptr())) == 0 {
                bindings::BUG();
            }
            bindings::khugepaged_pmd_populate(
                self.pmd.vma.mm(),
                self.pmd.as_ptr(),
                bindings::pmd_pgtable(self.pmdval),
            );
        }
    }
}

/// `tlb_remove_table_sync_one()`: an IPI to every CPU, so that GUP-fast
/// walkers (which run with interrupts off) that saw a page table before it
/// was detached are done with it, where page tables are freed by RCU;
/// nothing to do otherwise. Call it with no spinlock held.
fn tlb_remove_table_sync_one() {
    #[cfg(CONFIG_MMU_GATHER_RCU_TABLE_FREE)]
    {
        // `mm/mmu_gather.c`, declared in `<asm-generic/tlb.h>`.
        extern "C" {
            fn tlb_remove_table_sync_one();
        }
        // SAFETY: no requirements.
        unsafe { tlb_remove_table_sync_one() };
    }
}

/// A folio that nothing maps yet, with a reference owned by this object
/// (a freshly allocated huge page, say); dropping it puts the reference.
///
/// # Invariants
///
/// `folio` points to a folio on which this object owns one reference, of
/// `nr` pages.
pub struct NewFolio {
    folio: NonNull<bindings::folio>,
    nr: usize,
}

impl NewFolio {
    /// Takes over the caller's reference to `folio`.
    ///
    /// # Safety
    ///
    /// `folio` must point to a folio that nothing maps, on which the caller
    /// owns a reference that it hands over.
    #[inline]
    pub unsafe fn from_raw(folio: NonNull<bindings::folio>) -> Self {
        // SAFETY: referenced, so live (safety requirements).
        let nr = unsafe { bindings::folio_nr_pages(folio.as_ptr()) } as usize;
        // INVARIANT: the caller's reference is now ours.
        Self { folio, nr }
    }

    /// Returns the raw folio pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::folio {
        self.folio.as_ptr()
    }

    /// `folio_page(folio, n)`: the page at index `n`, or NULL when `n` is
    /// outside the folio.
    #[inline]
    pub fn page(&self, n: usize) -> *mut bindings::page {
        if n >= self.nr {
            return core::ptr::null_mut();
        }
        // SAFETY: we hold a reference and `n` is within the folio.
        unsafe { folio_page(self.folio, n) }
    }
}

impl Drop for NewFolio {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { bindings::folio_put(self.as_ptr()) };
    }
}

/// `folio_page(folio, n)`.
///
/// # Safety
///
/// `folio` must be live with more than `n` pages.
#[inline]
unsafe fn folio_page(folio: NonNull<bindings::folio>, n: usize) -> *mut bindings::page {
    // The pages of a folio are contiguous in the memmap unless it is split
    // in sections (SPARSEMEM without VMEMMAP): nth_page().
    #[cfg(any(not(CONFIG_SPARSEMEM), CONFIG_SPARSEMEM_VMEMMAP))]
    // SAFETY: a `struct folio` overlays its first `struct page`
    // (`&folio->page`, mm_types.h), `n` is within the folio (safety
    // requirements), and its `struct page`s are contiguous in this
    // configuration.
    return unsafe { folio.as_ptr().cast::<bindings::page>().add(n) };
    #[cfg(all(CONFIG_SPARSEMEM, not(CONFIG_SPARSEMEM_VMEMMAP)))]
    // SAFETY: `n` is within the folio (safety requirements).
    return unsafe { bindings::folio_page(folio.as_ptr(), n as c_ulong) };
}

/// An mmu_notifier range, set up for `MMU_NOTIFY_CLEAR` of a PMD range.
///
/// It stays in place while an invalidation is in progress: the
/// [`MmuInvalidation`] guard borrows it.
pub struct MmuNotifierRange {
    range: bindings::mmu_notifier_range,
    // The C struct has no `mm` without `CONFIG_MMU_NOTIFIER`.
    mm: *mut bindings::mm_struct,
}

impl MmuNotifierRange {
    /// `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, haddr, haddr +
    /// HPAGE_PMD_SIZE)` for the range of `pmd`.
    #[inline]
    pub fn pmd_clear(pmd: &Pmd<'_>) -> Self {
        let mut this = Self {
            range: Default::default(),
            mm: pmd.vma.mm(),
        };
        // SAFETY: `range` is ours to initialise; the mm is live.
        unsafe {
            bindings::mmu_notifier_range_init(
                &mut this.range,
                bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR,
                0,
                this.mm,
                pmd.haddr,
                pmd.haddr + HPAGE_PMD_SIZE as c_ulong,
            )
        };
        this
    }

    /// `mmu_notifier_invalidate_range_start()`; the guard ends it. Call it
    /// with no spinlock held: the notifiers may sleep.
    #[inline]
    pub fn start(&mut self) -> MmuInvalidation<'_> {
        // SAFETY: the range is initialised.
        unsafe { bindings::mmu_notifier_invalidate_range_start(&mut self.range) };
        // INVARIANT: started just now.
        MmuInvalidation { range: self }
    }
}

/// An mmu_notifier invalidation in progress.
///
/// # Invariants
///
/// `mmu_notifier_invalidate_range_start()` was called on `range` and the
/// matching end has not been.
#[must_use = "the invalidation ends when the guard is dropped"]
pub struct MmuInvalidation<'a> {
    range: &'a mut MmuNotifierRange,
}

impl MmuInvalidation<'_> {
    /// Whether the invalidation covers the whole range of `pmd`.
    #[inline]
    pub fn covers(&self, pmd: &Pmd<'_>) -> bool {
        let r = &*self.range;
        r.mm == pmd.vma.mm()
            && r.range.start <= pmd.haddr
            && r.range.end >= pmd.haddr + HPAGE_PMD_SIZE as c_ulong
    }
}

impl Drop for MmuInvalidation<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: started and not yet ended (type invariant).
        unsafe { bindings::mmu_notifier_invalidate_range_end(&mut self.range.range) };
    }
}

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
/// use core::ptr::NonNull;
/// use kernel::{bindings, mm::guard::*};
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

/// An RCU read-side critical section (`rcu_read_lock()`).
///
/// # Invariants
///
/// This guard is inside an RCU read-side section it started.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::guard::RcuReadGuard};
///
/// // SAFETY: no requirements.
/// let held = || unsafe { bindings::rcu_read_lock_held() } != 0;
/// assert!(!held());
/// let rcu = RcuReadGuard::new();
/// assert!(held());
/// drop(rcu);
/// assert!(!held());
/// ```
#[must_use = "the RCU read-side section ends when the guard is dropped"]
pub struct RcuReadGuard {
    // Not `Send`: the section ends on the CPU/task that began it.
    _not_send: PhantomData<*mut ()>,
}

impl RcuReadGuard {
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
    /// mapped PTE table: [`PteMap`], [`PteMapLock`], ...). On a kernel
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

impl Default for RcuReadGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RcuReadGuard {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: started by this guard (type invariant).
        unsafe { bindings::rcu_read_unlock() };
    }
}

/// A user address space of its own for the current kernel thread: the mm
/// the doctests of this module run against.
///
/// # Invariants
///
/// `mm` came from `mm_alloc()`, this guard owns its `mm_users` reference,
/// and it is the current kthread's mm (`kthread_use_mm()`) until drop.
#[cfg(CONFIG_KUNIT)]
pub struct KthreadMm {
    mm: NonNull<bindings::mm_struct>,
    // Not `Send`: tied to the current kthread.
    _not_send: PhantomData<*mut ()>,
}

#[cfg(CONFIG_KUNIT)]
impl KthreadMm {
    /// Allocates an empty mm and makes it the current kthread's.
    ///
    /// Fails with `EINVAL` outside a kthread or in one that already uses
    /// an mm.
    pub fn new() -> Result<Self> {
        // SAFETY: `current` is always valid.
        let (flags, cur_mm) = unsafe {
            let task = bindings::get_current();
            ((*task).flags, (*task).mm)
        };
        if flags & bindings::PF_KTHREAD == 0 || !cur_mm.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: no requirements.
        let mm = NonNull::new(unsafe { bindings::mm_alloc() }).ok_or(ENOMEM)?;
        // SAFETY: a kthread without an mm (checked above); `mm` is live.
        unsafe { bindings::kthread_use_mm(mm.as_ptr()) };
        // INVARIANT: allocated and adopted just now.
        Ok(Self {
            mm,
            _not_send: PhantomData,
        })
    }

    /// Maps `len` bytes of private (or, if `shared`, shmem-backed shared)
    /// anonymous memory read-write at `addr`, with `vm_mmap()`.
    pub fn map_anon(&self, addr: usize, len: usize, shared: bool) -> Result {
        let flags = bindings::MAP_ANONYMOUS
            | bindings::MAP_FIXED_NOREPLACE
            | if shared {
                bindings::MAP_SHARED
            } else {
                bindings::MAP_PRIVATE
            };
        // SAFETY: the mm is the current one (type invariant) and no mmap
        // lock is held here.
        let ret = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                addr as c_ulong,
                len as c_ulong,
                (bindings::PROT_READ | bindings::PROT_WRITE) as c_ulong,
                flags as c_ulong,
                0,
            )
        };
        if ret != addr as c_ulong {
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Writes `data` at user address `addr`, faulting the pages in.
    pub fn write(&self, addr: usize, data: &[u8]) -> Result {
        crate::uaccess::UserSlice::new(addr, data.len())
            .writer()
            .write_slice(data)
    }

    /// Takes the mmap lock for reading.
    pub fn mmap_read(&self) -> MmapReadGuard<'_> {
        // SAFETY: the guard owns a reference on the mm (type invariant).
        unsafe { MmapReadGuard::lock(self.mm) }
    }

    /// Takes the mmap lock for reading, without waiting.
    pub fn mmap_try_read(&self) -> Option<MmapReadGuard<'_>> {
        // SAFETY: the guard owns a reference on the mm (type invariant).
        unsafe { MmapReadGuard::try_lock(self.mm) }
    }

    /// Takes the mmap lock for writing.
    pub fn mmap_write(&self) -> MmapWriteGuard<'_> {
        // SAFETY: the guard owns a reference on the mm (type invariant).
        unsafe { MmapWriteGuard::lock(self.mm) }
    }

    /// Returns `&mm->page_table_lock`.
    pub fn raw_page_table_lock(&self) -> *mut bindings::spinlock_t {
        // SAFETY: the mm is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.mm.as_ptr()).__bindgen_anon_1.page_table_lock) }
    }

    /// Returns `&mm->mmap_lock`, for assertions.
    pub fn raw_mmap_lock(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the mm is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.mm.as_ptr()).__bindgen_anon_1.mmap_lock) }
    }
}

#[cfg(CONFIG_KUNIT)]
impl Drop for KthreadMm {
    fn drop(&mut self) {
        // SAFETY: adopted in `new` and still current; our `mm_users`
        // reference is dropped last, which tears the mappings down.
        unsafe {
            bindings::kthread_unuse_mm(self.mm.as_ptr());
            bindings::mmput(self.mm.as_ptr());
        }
    }
}
