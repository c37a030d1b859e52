// SPDX-License-Identifier: GPL-2.0

//! RAII guards for the locks and page-table mappings of the collapse path.
//!
//! Every lock the Rust khugepaged takes is taken here and released by a
//! guard's `Drop`; nothing else in the crate calls a lock or unlock
//! function.
//!
//! # Lock order
//!
//! As documented at the top of `mm/rmap.c`, restricted to what this crate
//! takes:
//!
//! ```text
//! mmap_lock                  MmapLocked     (held by the caller, asserted)
//!   folio lock               LockedFolio    (from a Vma, so from MmapLocked)
//!     pmd lock               PmdLock        (page_table_lock or split pmd ptl)
//!       pte lock             PteLock        (alone), or
//!                            PmdPteLock     (nested in a consumed PmdLock,
//!                                            skipped when ptl == pml)
//! mmu_notifier range         MmuInvalidation (not a lock; no locks held
//!                                            when it starts or ends)
//! ```
//!
//! The types make the wrong order hard to write: a [`LockedFolio`] can
//! only be obtained through a [`Vma`], which borrows the [`MmapLocked`]
//! proof; the nested PTE lock only exists inside a [`PmdPteLock`], which
//! is built by consuming a held [`PmdLock`] and releases the PTE lock
//! before the PMD lock; a PTE entry can only be cleared with a proof that
//! its table's lock is held ([`PtlHeld`]).

use core::{marker::PhantomData, ptr::NonNull};
use kernel::bindings;
use kernel::ffi::c_ulong;

/// Number of PTEs in a PMD-sized range.
pub(crate) const HPAGE_PMD_NR: usize = bindings::RUST_HPAGE_PMD_NR as usize;

/// Proof that the mmap lock of an mm is held, for reading or writing.
///
/// # Invariants
///
/// `mm` points to a live `mm_struct` whose `mmap_lock` is held by the
/// current task for all of `'a`.
pub(crate) struct MmapLocked<'a> {
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
    pub(crate) unsafe fn assert_held(mm: NonNull<bindings::mm_struct>) -> Self {
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
    pub(crate) fn as_ptr(&self) -> *mut bindings::mm_struct {
        self.mm.as_ptr()
    }

    /// Finds the VMA that contains `addr`, as `vma_lookup()`.
    #[inline]
    pub(crate) fn vma_lookup(&self, addr: c_ulong) -> Option<Vma<'_>> {
        // SAFETY: the mm is live and its mmap lock held (type invariant).
        let vma = unsafe { bindings::vma_lookup(self.as_ptr(), addr) };
        // INVARIANT: the VMA stays in the tree while the mmap lock is held.
        NonNull::new(vma).map(|vma| Vma {
            vma,
            _mmap: PhantomData,
        })
    }
}

/// A VMA of an mm whose mmap lock is held.
///
/// # Invariants
///
/// `vma` points to a live VMA of the mm of the [`MmapLocked`] it was
/// looked up with, and stays valid for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct Vma<'a> {
    vma: NonNull<bindings::vm_area_struct>,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

impl<'a> Vma<'a> {
    /// Returns the raw VMA pointer.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.vma.as_ptr()
    }

    /// Returns the VMA's flags.
    #[inline]
    pub(crate) fn flags(&self) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant); `vm_flags` is the
        // read-only view of the flags union, written under the mmap write
        // lock only.
        unsafe { (*self.as_ptr()).__bindgen_anon_2.vm_flags }
    }

    /// Whether the VMA maps a file.
    #[inline]
    pub(crate) fn has_file(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        !unsafe { (*self.as_ptr()).vm_file }.is_null()
    }

    /// Whether `[start, end)` lies inside the VMA.
    #[inline]
    pub(crate) fn contains_range(&self, start: c_ulong, end: c_ulong) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::range_in_vma(self.as_ptr(), start, end) }
    }

    /// `thp_vma_allowable_order(vma, vma->vm_flags, 0, PMD_ORDER)`.
    #[inline]
    pub(crate) fn thp_pmd_allowed(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe {
            bindings::thp_vma_allowable_order(
                self.as_ptr(),
                self.flags(),
                0,
                bindings::RUST_HPAGE_PMD_ORDER as _,
            )
        }
    }

    /// `userfaultfd_wp(vma)`.
    #[inline]
    pub(crate) fn userfaultfd_wp(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::userfaultfd_wp(self.as_ptr()) }
    }

    /// `userfaultfd_armed(vma)`.
    #[inline]
    pub(crate) fn userfaultfd_armed(&self) -> bool {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::userfaultfd_armed(self.as_ptr()) }
    }

    /// Whether the VMA is `VM_SHARED`.
    #[inline]
    pub(crate) fn is_shared(&self) -> bool {
        self.flags() & bindings::VM_SHARED as c_ulong != 0
    }
}

/// A locked page-cache folio, with a reference.
///
/// # Invariants
///
/// `folio` points to a folio on which this guard owns one reference and
/// whose lock it holds; both are released on drop.
pub(crate) struct LockedFolio<'a> {
    folio: NonNull<bindings::folio>,
    // Number of pages: stable while the folio is locked (no split).
    nr: usize,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

impl<'a> LockedFolio<'a> {
    /// Looks up and locks the page-cache folio backing `addr` of the file
    /// VMA `vma`, as `filemap_lock_folio(mapping, linear_page_index())`.
    ///
    /// Returns `None` if the VMA has no file or the folio is not cached.
    pub(crate) fn lock_in_vma(vma: &Vma<'a>, addr: c_ulong) -> Option<Self> {
        if !vma.has_file() {
            return None;
        }
        // SAFETY: the VMA is valid and its `vm_file` non-NULL; the VMA pins
        // the file, hence its mapping, while the mmap lock is held.
        let folio = unsafe {
            let mapping = (*(*vma.as_ptr()).vm_file).f_mapping;
            let index = bindings::linear_page_index(vma.as_ptr(), addr);
            bindings::filemap_lock_folio(mapping, index)
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
            _mmap: PhantomData,
        })
    }

    /// Returns the raw folio pointer.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut bindings::folio {
        self.folio.as_ptr()
    }

    /// `folio_order(folio)`.
    #[inline]
    pub(crate) fn order(&self) -> u32 {
        self.nr.trailing_zeros()
    }

    /// `folio_page(folio, n)`: the page at index `n`, or NULL when `n` is
    /// outside the folio.
    #[inline]
    pub(crate) fn page(&self, n: usize) -> *mut bindings::page {
        if n >= self.nr {
            return core::ptr::null_mut();
        }
        // The pages of a folio are contiguous in the memmap unless it is
        // split in sections (SPARSEMEM without VMEMMAP): nth_page().
        #[cfg(any(not(CONFIG_SPARSEMEM), CONFIG_SPARSEMEM_VMEMMAP))]
        // SAFETY: a `struct folio` overlays its first `struct page`
        // (`&folio->page`, mm_types.h), `n` is within the folio, and its
        // `struct page`s are contiguous in this configuration.
        return unsafe { self.as_ptr().cast::<bindings::page>().add(n) };
        #[cfg(all(CONFIG_SPARSEMEM, not(CONFIG_SPARSEMEM_VMEMMAP)))]
        // SAFETY: `n` is within the folio.
        return unsafe { bindings::folio_page(self.as_ptr(), n as c_ulong) };
    }

    /// Takes one more reference for a new mapping of the folio.
    #[inline]
    pub(crate) fn get_for_mapping(&self) {
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
    pub(crate) unsafe fn ref_sub_mappings(&self, nr: i32) {
        // SAFETY: our own reference keeps the count above `nr`; the caller
        // owns the `nr` references it drops.
        unsafe { bindings::folio_ref_sub(self.as_ptr(), nr) };
    }

    /// `mm_counter_file(folio)`: the rss counter the folio's mappings use.
    #[inline]
    pub(crate) fn mm_counter(&self) -> i32 {
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

/// Proof that a PTE table's lock is held.
pub(crate) trait PtlHeld {
    /// The PTE lock that is held.
    fn held_ptl(&self) -> *mut bindings::spinlock_t;
}

/// Checks that `addr` is PMD-aligned, so a table mapped at it has
/// [`HPAGE_PMD_NR`] entries from there.
#[inline]
fn pmd_aligned(addr: c_ulong) -> bool {
    addr & !bindings::RUST_HPAGE_PMD_MASK == 0
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
    return Some(unsafe { core::ptr::read_volatile(ptes.as_ptr().add(i)) });
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
pub(crate) struct PteMapLock<'a> {
    ptes: NonNull<bindings::pte_t>,
    ptl: NonNull<bindings::spinlock_t>,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

impl<'a> PteMapLock<'a> {
    /// Maps and locks the PTE table under `pmd` for the PMD-aligned `addr`.
    ///
    /// Returns `None` if there is no PTE table there (any more).
    ///
    /// # Safety
    ///
    /// `pmd` must point to the PMD entry covering `addr` in `mmap`'s mm.
    pub(crate) unsafe fn map_lock(
        mmap: &'a MmapLocked<'_>,
        pmd: NonNull<bindings::pmd_t>,
        addr: c_ulong,
    ) -> Option<Self> {
        if !pmd_aligned(addr) {
            return None;
        }
        let mut ptl = core::ptr::null_mut();
        // SAFETY: the mm is valid and `pmd` is its entry for `addr` (safety
        // requirements); the mmap lock keeps the upper levels in place.
        let ptes =
            unsafe { bindings::__pte_offset_map_lock(mmap.as_ptr(), pmd.as_ptr(), addr, &mut ptl) };
        let ptes = NonNull::new(ptes)?;
        // INVARIANT: on success the table is mapped and `ptl` locked.
        Some(Self {
            ptes,
            // SAFETY: `ptl` is set whenever a table was mapped.
            ptl: unsafe { NonNull::new_unchecked(ptl) },
            _mmap: PhantomData,
        })
    }

    /// Reads entry `i`, or `None` past the PMD range.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<bindings::pte_t> {
        // SAFETY: `ptes` starts `HPAGE_PMD_NR` mapped entries (invariant).
        unsafe { read_pte(self.ptes, i) }
    }
}

impl Drop for PteMapLock<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: mapped and locked by this guard (type invariant);
        // pte_unmap_unlock() order.
        unsafe {
            bindings::pte_unmap(self.ptes.as_ptr());
            bindings::spin_unlock(self.ptl.as_ptr());
        }
    }
}

/// A PTE table mapped with `pte_offset_map_nolock()`: mapped, lock not
/// taken. The lock is taken through [`PteMap::lock`] or
/// [`PmdLock::nest_ptl`].
///
/// # Invariants
///
/// `ptes` points to the first of [`HPAGE_PMD_NR`] entries of a mapped PTE
/// table (within an RCU read-side section started by the map) of the mm
/// `mm`, and `ptl` is that table's lock.
pub(crate) struct PteMap<'a> {
    ptes: NonNull<bindings::pte_t>,
    ptl: NonNull<bindings::spinlock_t>,
    mm: NonNull<bindings::mm_struct>,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

impl<'a> PteMap<'a> {
    /// Maps the PTE table under `pmd` for the PMD-aligned `addr` without
    /// taking its lock.
    ///
    /// # Safety
    ///
    /// `pmd` must point to the PMD entry covering `addr` in `mmap`'s mm.
    pub(crate) unsafe fn map_nolock(
        mmap: &MmapLocked<'a>,
        pmd: NonNull<bindings::pmd_t>,
        addr: c_ulong,
    ) -> Option<Self> {
        if !pmd_aligned(addr) {
            return None;
        }
        let mut ptl = core::ptr::null_mut();
        // SAFETY: as in `PteMapLock::map_lock`.
        let ptes =
            unsafe { bindings::pte_offset_map_nolock(mmap.as_ptr(), pmd.as_ptr(), addr, &mut ptl) };
        let ptes = NonNull::new(ptes)?;
        // INVARIANT: on success the table is mapped and `ptl` is its lock.
        Some(Self {
            ptes,
            // SAFETY: `ptl` is set whenever a table was mapped.
            ptl: unsafe { NonNull::new_unchecked(ptl) },
            mm: mmap.mm,
            _mmap: PhantomData,
        })
    }

    /// The table's lock, to nest it under the PMD lock.
    #[inline]
    pub(crate) fn ptl(&self) -> NonNull<bindings::spinlock_t> {
        self.ptl
    }

    /// Takes the table's lock on its own (no PMD lock held).
    ///
    /// The returned guard may outlive the mapping: a held PTE lock keeps
    /// the table attached, as nobody frees it without taking that lock.
    #[inline]
    pub(crate) fn lock(&self) -> PteLock<'a> {
        // SAFETY: `ptl` is the lock of a live table (type invariant).
        unsafe { bindings::spin_lock(self.ptl.as_ptr()) };
        // INVARIANT: just locked.
        PteLock {
            ptl: self.ptl,
            _mmap: PhantomData,
        }
    }

    /// Reads entry `i`, or `None` past the PMD range.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<bindings::pte_t> {
        // SAFETY: `ptes` starts `HPAGE_PMD_NR` mapped entries (invariant).
        unsafe { read_pte(self.ptes, i) }
    }

    /// Clears entry `i`, mapping `addr`, with `ptep_clear()`; the TLB
    /// flush is left to the caller. Returns `false` (and does nothing) if
    /// `held` does not hold this table's lock or `i` is out of range.
    #[inline]
    pub(crate) fn clear(&self, held: &impl PtlHeld, addr: c_ulong, i: usize) -> bool {
        if held.held_ptl() != self.ptl.as_ptr() || i >= HPAGE_PMD_NR {
            return false;
        }
        // SAFETY: `i` is within the mapped entries and the table's lock is
        // held, so the entry cannot change under us.
        unsafe { bindings::ptep_clear(self.mm.as_ptr(), addr, self.ptes.as_ptr().add(i)) };
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
pub(crate) struct PteLock<'a> {
    ptl: NonNull<bindings::spinlock_t>,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

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
pub(crate) struct PmdLock<'a> {
    pml: NonNull<bindings::spinlock_t>,
    pmd: NonNull<bindings::pmd_t>,
    _mmap: PhantomData<&'a MmapLocked<'a>>,
}

impl<'a> PmdLock<'a> {
    /// Takes the lock of the PMD entry `pmd`.
    ///
    /// # Safety
    ///
    /// `pmd` must point to a PMD entry of `mmap`'s mm.
    #[inline]
    pub(crate) unsafe fn lock(mmap: &MmapLocked<'a>, pmd: NonNull<bindings::pmd_t>) -> Self {
        // SAFETY: the mm is live and `pmd` one of its entries; the mmap
        // lock keeps the PMD table in place.
        let pml = unsafe { bindings::pmd_lock(mmap.as_ptr(), pmd.as_ptr()) };
        // INVARIANT: pmd_lock() returns the lock it took.
        Self {
            // SAFETY: pmd_lock() never returns NULL.
            pml: unsafe { NonNull::new_unchecked(pml) },
            pmd,
            _mmap: PhantomData,
        }
    }

    /// Takes `ptl` nested inside the PMD lock, unless it is the same lock
    /// (`SINGLE_DEPTH_NESTING` only when ptl != pml), and returns a guard
    /// holding both that releases the PTE lock first.
    ///
    /// # Safety
    ///
    /// `ptl` must be the lock of the PTE table that this PMD entry points
    /// to.
    #[inline]
    pub(crate) unsafe fn nest_ptl(self, ptl: NonNull<bindings::spinlock_t>) -> PmdPteLock<'a> {
        let nested = if ptl == self.pml {
            None
        } else {
            // SAFETY: `ptl` is a live PTE lock (safety requirements), taken
            // inside the PMD lock as the lock order requires.
            unsafe {
                bindings::spin_lock_nested(ptl.as_ptr(), bindings::SINGLE_DEPTH_NESTING as _)
            };
            Some(ptl)
        };
        // INVARIANT: `nested` is held if it is `Some`; otherwise `ptl` is
        // the PMD lock itself, held by `self`.
        PmdPteLock {
            nested,
            ptl,
            pml: self,
        }
    }
}

impl Drop for PmdLock<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held by this guard (type invariant).
        unsafe { bindings::spin_unlock(self.pml.as_ptr()) };
    }
}

/// The PMD lock and, nested inside it, the PTE lock of the table it
/// points to.
///
/// # Invariants
///
/// `pml` holds the PMD lock; `ptl` is the PTE table's lock, and is held by
/// this guard through `nested` when it differs from the PMD lock.
pub(crate) struct PmdPteLock<'a> {
    nested: Option<NonNull<bindings::spinlock_t>>,
    ptl: NonNull<bindings::spinlock_t>,
    pml: PmdLock<'a>,
}

impl PmdPteLock<'_> {
    /// `pmdp_collapse_flush()` of the locked PMD entry, then
    /// `pmdp_get_lockless_sync()`: detaches the PTE table and flushes the
    /// TLB for the PMD range of `vma` at `haddr`. Returns the old entry.
    ///
    /// # Safety
    ///
    /// `vma` must be the VMA mapping `haddr`, the PMD range at `haddr` must
    /// be covered by the locked PMD entry, and every PTE of the table must
    /// already be cleared.
    #[inline]
    pub(crate) unsafe fn collapse_flush(&self, vma: &Vma<'_>, haddr: c_ulong) -> bindings::pmd_t {
        // SAFETY: both locks are held (type invariant); the rest is the
        // caller's promise.
        let pgt_pmd =
            unsafe { bindings::pmdp_collapse_flush(vma.as_ptr(), haddr, self.pml.pmd.as_ptr()) };
        // SAFETY: no requirement beyond holding the PMD lock.
        unsafe { bindings::pmdp_get_lockless_sync() };
        pgt_pmd
    }
}

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
            // SAFETY: taken in `PmdLock::nest_ptl` (type invariant).
            unsafe { bindings::spin_unlock(ptl.as_ptr()) };
        }
        // `self.pml` is dropped after this, releasing the PMD lock.
    }
}

/// An mmu_notifier range, set up for `MMU_NOTIFY_CLEAR`.
///
/// It stays in place while an invalidation is in progress: the
/// [`MmuInvalidation`] guard borrows it.
pub(crate) struct MmuNotifierRange {
    range: bindings::mmu_notifier_range,
}

impl MmuNotifierRange {
    /// `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, start, end)`.
    #[inline]
    pub(crate) fn clear(mmap: &MmapLocked<'_>, start: c_ulong, end: c_ulong) -> Self {
        let mut this = Self {
            range: Default::default(),
        };
        // SAFETY: `range` is ours to initialise; the mm is live.
        unsafe {
            bindings::mmu_notifier_range_init(
                &mut this.range,
                bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR,
                0,
                mmap.as_ptr(),
                start,
                end,
            )
        };
        this
    }

    /// `mmu_notifier_invalidate_range_start()`; the guard ends it.
    #[inline]
    pub(crate) fn start(&mut self) -> MmuInvalidation<'_> {
        // SAFETY: the range is initialised; no spinlock is held here (the
        // callee may sleep), which callers keep by the lock order above.
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
pub(crate) struct MmuInvalidation<'a> {
    range: &'a mut MmuNotifierRange,
}

impl Drop for MmuInvalidation<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: started and not yet ended (type invariant).
        unsafe { bindings::mmu_notifier_invalidate_range_end(&mut self.range.range) };
    }
}
