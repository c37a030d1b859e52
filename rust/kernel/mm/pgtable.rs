// SPDX-License-Identifier: GPL-2.0

//! Page tables below a VMA: the PMD entry ([`Pmd`]), its lock, PTE tables
//! mapped with or without their lock, the PTE lock nested in the PMD lock,
//! and tables detached from their PMD entry.
//!
//! C header: [`include/linux/pgtable.h`](srctree/include/linux/pgtable.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::folio::{Folio, IsolatedFolio, LockedFolio, NewFolio, PutBatch};
use crate::mm::mmu_notifier::MmuInvalidation;
use crate::mm::read_once;
use crate::mm::rmap::AnonVmaWriteGuard;
use crate::mm::virt::{Rmap, Vma, WriteLockedVma};
use crate::mm::HPAGE_PMD_NR;
use crate::{
    bindings,
    ffi::{c_int, c_ulong},
};
use core::{marker::PhantomData, ptr::NonNull};

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

/// The identity of a PMD entry (its address), as [`Pmd::id`] returns it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PmdId(usize);

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
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm, mm::pgtable::{PmdKind, PtlHeld}};
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
    pub(super) pmd: NonNull<bindings::pmd_t>,
    // The weaker level: enough for the page tables, and what a `Pmd` found
    // under the mmap lock gives away to code that only has the `Pmd`.
    pub(super) vma: Vma<'a, Rmap>,
    pub(super) haddr: c_ulong,
}

impl<'a> Pmd<'a> {
    /// The PMD-aligned address the entry maps.
    #[inline]
    pub fn haddr(&self) -> c_ulong {
        self.haddr
    }

    /// The address that entry `i` of a PTE table under this entry maps,
    /// for `i` below [`HPAGE_PMD_NR`]: `haddr + i * PAGE_SIZE`, which
    /// stays within the PMD range (so without overflow checks).
    #[inline]
    fn entry_addr(&self, i: usize) -> c_ulong {
        self.haddr
            .wrapping_add((i as c_ulong).wrapping_mul(bindings::PAGE_SIZE as c_ulong))
    }

    /// The VMA the entry was found for.
    #[inline]
    pub fn vma(&self) -> Vma<'a, Rmap> {
        self.vma
    }

    /// Returns the raw entry pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::pmd_t {
        self.pmd.as_ptr()
    }

    /// The entry's identity (its address), to check later that a lookup
    /// under a retaken lock found the same entry.
    #[inline]
    pub fn id(&self) -> PmdId {
        PmdId(self.pmd.as_ptr() as usize)
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

/// What kind of entry a [`Pte`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PteKind {
    /// `pte_none()`.
    None,
    /// `pte_present()`.
    Present,
    /// Neither (`is_swap_pte()`).
    Swap,
}

/// The value of a page table entry (`pte_t`), as read from its table.
///
/// A value, not a reference: what it says holds for as long as the
/// table's lock (or a check repeated under it) keeps the entry as read.
/// Whether it is empty, present or neither is found once, when it is
/// read: the other queries depend on it.
#[derive(Clone, Copy)]
pub struct Pte {
    raw: bindings::pte_t,
    kind: PteKind,
}

impl Pte {
    /// Wraps an entry value.
    #[inline]
    pub fn from_raw(raw: bindings::pte_t) -> Self {
        // SAFETY: these only look at the value.
        let kind = unsafe {
            if bindings::pte_none(raw) != 0 {
                PteKind::None
            } else if bindings::pte_present(raw) != 0 {
                PteKind::Present
            } else {
                PteKind::Swap
            }
        };
        Self { raw, kind }
    }

    /// The entry value.
    #[inline]
    pub fn as_raw(self) -> bindings::pte_t {
        self.raw
    }

    /// `pte_none()`: the entry is empty.
    #[inline]
    pub fn is_none(self) -> bool {
        self.kind == PteKind::None
    }

    /// `pte_present()`: the entry maps a page.
    #[inline]
    pub fn is_present(self) -> bool {
        self.kind == PteKind::Present
    }

    /// `is_swap_pte()`: neither empty nor present (a swap, migration or
    /// device entry, or a marker).
    #[inline]
    pub fn is_swap(self) -> bool {
        self.kind == PteKind::Swap
    }

    /// The page frame a present entry maps (`pte_pfn()`), `None` for any
    /// other entry.
    #[inline]
    pub fn pfn(self) -> Option<c_ulong> {
        // SAFETY: only looks at the value.
        self.is_present()
            .then(|| unsafe { bindings::pte_pfn(self.raw) })
    }

    /// A present entry of the zero page (`is_zero_pfn(pte_pfn())`).
    #[inline]
    pub fn is_zero_page(self) -> bool {
        // SAFETY: only looks at the value.
        self.pfn()
            .is_some_and(|pfn| unsafe { bindings::is_zero_pfn(pfn) } != 0)
    }

    /// `pte_none() || is_zero_pfn(pte_pfn())` of a present entry: a hole,
    /// as a collapse counts them.
    #[inline]
    pub fn is_none_or_zero(self) -> bool {
        self.is_none() || self.is_zero_page()
    }

    /// The uffd-wp bit: `pte_uffd_wp()` of a present entry,
    /// `pte_swp_uffd_wp_any()` (markers included) of a swap entry.
    #[inline]
    pub fn uffd_wp(self) -> bool {
        // SAFETY: these only look at the value.
        unsafe {
            match self.kind {
                PteKind::Present => bindings::pte_uffd_wp(self.raw),
                PteKind::Swap => bindings::pte_swp_uffd_wp_any(self.raw),
                PteKind::None => false,
            }
        }
    }

    /// `pte_write()` of a present entry.
    #[inline]
    pub fn is_write(self) -> bool {
        // SAFETY: only looks at the value.
        self.is_present() && unsafe { bindings::pte_write(self.raw) != 0 }
    }

    /// `pte_young()` of a present entry.
    #[inline]
    pub fn is_young(self) -> bool {
        // SAFETY: only looks at the value.
        self.is_present() && unsafe { bindings::pte_young(self.raw) != 0 }
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
unsafe fn read_pte(ptes: NonNull<bindings::pte_t>, i: usize) -> Option<Pte> {
    if i >= HPAGE_PMD_NR {
        return None;
    }
    // SAFETY: `i` is within the mapped entries (safety requirements).
    Some(Pte::from_raw(unsafe {
        bindings::ptep_get(ptes.as_ptr().add(i))
    }))
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
/// use kernel::{bindings, mm::{HPAGE_PMD_NR, HPAGE_PMD_SIZE}, mm::kunit::KthreadMm, mm::pgtable::PtlHeld};
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
/// assert!(ptes.get(0).ok_or(EINVAL)?.is_none());
/// let pte = ptes.get(1).ok_or(EINVAL)?;
/// assert!(pte.is_present() && pte.is_write() && !pte.is_zero_page() && !pte.is_swap());
/// assert!(ptes.get(HPAGE_PMD_NR).is_none());
/// // Entry 1 maps a small anonymous folio, entry 0 nothing.
/// assert!(ptes.normal_folio(0).is_none());
/// let (folio, pfn) = ptes.normal_folio(1).ok_or(EINVAL)?;
/// assert!(folio.is_anon() && !folio.is_large() && folio.mapcount() == 1);
/// assert_eq!(pfn, folio.pfn());
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
    pub(super) ptes: NonNull<bindings::pte_t>,
    pub(super) ptl: NonNull<bindings::spinlock_t>,
    pub(super) pmd: &'p Pmd<'p>,
    // A table detached by `DetachedPtes`, which the map borrows.
    pub(super) detached: bool,
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
            detached: false,
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
    pub fn get(&self, i: usize) -> Option<Pte> {
        // SAFETY: `ptes` starts `HPAGE_PMD_NR` mapped entries (invariant).
        unsafe { read_pte(self.ptes, i) }
    }

    /// Returns the held lock, for assertions.
    #[inline]
    pub fn raw_ptl(&self) -> *mut bindings::spinlock_t {
        self.ptl.as_ptr()
    }

    /// Entry `i`, read once under the lock, with what it maps
    /// ([`LockedPte::normal_folio`]); `None` past the PMD range.
    #[inline]
    pub fn entry(&self, i: usize) -> Option<LockedPte<'_>> {
        Some(LockedPte {
            pte: self.get(i)?,
            i,
            map: self,
        })
    }

    /// The folio that entry `i` maps and the pfn of the page, as
    /// `vm_normal_page()` sees them (see [`LockedPte::normal_folio`]).
    #[inline]
    pub fn normal_folio(&self, i: usize) -> Option<(&Folio, c_ulong)> {
        let entry = self.entry(i)?;
        Some((entry.normal_folio()?, entry.pte().pfn()?))
    }
}

/// An entry of a PTE table read under the table's lock
/// ([`PteMapLock::entry`]): it cannot change while the guard is borrowed.
#[derive(Clone, Copy)]
pub struct LockedPte<'a> {
    pte: Pte,
    i: usize,
    map: &'a PteMapLock<'a>,
}

impl<'a> LockedPte<'a> {
    /// The entry's value.
    #[inline]
    pub fn pte(self) -> Pte {
        self.pte
    }

    /// The folio of the page that the entry maps, as `vm_normal_page()`
    /// sees it: `None` for an entry that is not present or maps no normal
    /// page (the zero page, a PFN map). Zone-device pages are returned too
    /// ([`Folio::is_zone_device`]).
    ///
    /// The folio stays live while the guard is borrowed: the entry, which
    /// holds a reference to it, cannot change while its lock is held.
    #[inline]
    pub fn normal_folio(self) -> Option<&'a Folio> {
        if !self.pte.is_present() {
            return None;
        }
        let pmd = self.map.pmd;
        let addr = pmd.entry_addr(self.i);
        // SAFETY: the VMA is valid (a `Pmd` borrows it), and `pte` is a
        // present entry read under its table's lock, held while `map` is
        // borrowed.
        let page = unsafe { bindings::vm_normal_page(pmd.vma.as_ptr(), addr, self.pte.raw) };
        if page.is_null() {
            return None;
        }
        // SAFETY: a mapped page; its folio is live while the entry maps it,
        // which the held lock keeps for `'a`.
        Some(unsafe { Folio::from_raw(bindings::page_folio(page)) })
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
    pub(super) ptes: NonNull<bindings::pte_t>,
    pub(super) ptl: NonNull<bindings::spinlock_t>,
    pub(super) pmd: &'p Pmd<'p>,
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
    pub fn get(&self, i: usize) -> Option<Pte> {
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
        let addr = self.pmd.entry_addr(i);
        // SAFETY: `i` is within the mapped entries and the table's lock is
        // held, so the entry cannot change under us.
        unsafe {
            bindings::ptep_clear(self.pmd.vma.mm(), addr, self.ptes.as_ptr().add(i));
        }
        true
    }
}

/// An entry of a detached table, as [`PteMapLock::check_detached`] shows
/// it.
pub enum DetachedEntry<'a> {
    /// None, or mapping the zero page: a hole, which a collapse fills with
    /// zeroes.
    Hole(Pte),
    /// A present entry and the folio of the normal page it maps, as
    /// `vm_normal_page()` sees it (zone-device pages included,
    /// [`Folio::is_zone_device`]). The folio stays live while the entry
    /// maps it.
    Page(Pte, &'a Folio),
    /// Anything else: not present (a swap or migration entry, a marker) or
    /// mapping no normal page (a special or PFN mapping).
    Other(Pte),
}

impl<'p> PteMapLock<'p> {
    /// Shows `f` every entry of a detached table (a map from
    /// [`DetachedPtes::map_lock`]) in order, under the lock, and stops at
    /// the first error `f` returns. The page each present entry maps is
    /// looked up once (`vm_normal_page()`), here: if `f` accepts every
    /// entry and each is a hole or maps a normal page, the lock is
    /// released and the result, a [`CheckedPtes`], copies and unmaps the
    /// entries without looking their pages up again (`pte_page()`), as
    /// 6.12's `__collapse_huge_page_copy()` does after the isolation.
    ///
    /// `other` is the error if `f` accepts a [`DetachedEntry::Other`], or if
    /// this is a map of a table in place (then `f` sees nothing).
    #[inline]
    pub fn check_detached<E>(
        self,
        other: E,
        mut f: impl FnMut(usize, DetachedEntry<'_>) -> Result<(), E>,
    ) -> Result<CheckedPtes<'p>, E> {
        if !self.detached {
            return Err(other);
        }
        let mut all_normal = true;
        for i in 0..HPAGE_PMD_NR {
            // Cannot fail: `i` is within the table.
            let Some(locked) = self.entry(i) else {
                return Err(other);
            };
            let pte = locked.pte();
            let entry = if pte.is_none_or_zero() {
                DetachedEntry::Hole(pte)
            } else {
                // Not present, or no normal page: `Other`.
                locked
                    .normal_folio()
                    .map_or(DetachedEntry::Other(pte), |folio| {
                        DetachedEntry::Page(pte, folio)
                    })
            };
            all_normal &= !matches!(entry, DetachedEntry::Other(_));
            f(i, entry)?;
        }
        if !all_normal {
            return Err(other);
        }
        // INVARIANT: a detached table's map, every entry of which is a hole
        // or maps a normal page (checked above under the lock); only maps
        // of the detached table, which clear entries and nothing else,
        // change them.
        Ok(CheckedPtes { map: self.unlock() })
    }
}

/// A detached table whose entries were checked by
/// [`PteMapLock::check_detached`]: each is a hole or maps a normal page.
/// Mapped, its lock not held ([`CheckedPtes::lock`] takes it).
///
/// # Invariants
///
/// `map` is a map of a detached table, every entry of which is none, maps
/// the zero page, or is present and maps a normal page (one that
/// `vm_normal_page()` returns). Only maps of the detached table change its
/// entries, and only to none, so this stays true while `map` lives.
#[must_use = "the table is unmapped when the guard is dropped"]
pub struct CheckedPtes<'p> {
    map: PteMap<'p>,
}

/// What [`CheckedPtes::unmap`] did with entry `i`.
pub enum Unmapped {
    /// The entry was none: nothing done.
    None,
    /// The entry mapped the zero page: cleared (`ksm_might_unmap_zero_page()`
    /// told).
    ZeroPage,
    /// The entry and those after it that map the next pages of the same
    /// large folio (a run that `folio_pte_batch()` finds) were cleared and
    /// their rmap removed; the references they held are in the
    /// [`UnmappedPages`].
    Pages(UnmappedPages),
    /// Not unmapped: `held` is not the table's lock, or `i` is out of
    /// range.
    Refused,
}

/// The pages of a run of page-table entries that were cleared and whose
/// rmap was removed, with the references the entries held; dropping it
/// puts them (`free_swap_cache()`, then `folio_put_refs()`), which frees a
/// folio nobody else holds.
///
/// # Invariants
///
/// This object owns `nr` references on `folio`, one per page of it that
/// the cleared entries mapped, which no entry reachable by the MMU maps
/// any more.
#[must_use = "the pages are put when dropped"]
pub struct UnmappedPages {
    folio: NonNull<bindings::folio>,
    nr: usize,
}

impl UnmappedPages {
    /// The pages' folio, which the references keep live.
    #[inline]
    pub fn folio(&self) -> &Folio {
        // SAFETY: referenced by this object (type invariant).
        unsafe { Folio::from_raw(self.folio.as_ptr()) }
    }

    /// How many entries were unmapped: the run starts at the entry given to
    /// [`CheckedPtes::unmap`].
    #[inline]
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// Frees the small folio whose last mapping these pages were, and which
    /// `isolated` keeps isolated, without putting it back on an LRU list
    /// first ([`IsolatedFolio::free_unreferenced`]), the references going
    /// to `batch`. When that cannot be (`isolated` is another folio, or the
    /// folio is referenced elsewhere), releases `isolated` and then these
    /// pages, as their drops do.
    #[inline]
    pub fn free_isolated(self, isolated: IsolatedFolio, batch: &mut PutBatch) {
        if isolated.as_ptr() != self.folio.as_ptr() {
            drop(isolated);
            drop(self);
            return;
        }
        let this = core::mem::ManuallyDrop::new(self);
        // `nr` is 1 for a small folio; a larger one is given back.
        let refs = u32::try_from(this.nr).unwrap_or(u32::MAX);
        // SAFETY: this object owns `nr` references on the folio (type
        // invariant), which it gives up to `batch` on success.
        if let Err(isolated) = unsafe { isolated.free_unreferenced(refs, batch) } {
            drop(isolated);
            drop(core::mem::ManuallyDrop::into_inner(this));
        }
    }
}

impl Drop for UnmappedPages {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own `nr` references (type invariant); no TLB entry can
        // reach the pages any more.
        unsafe {
            bindings::mm_free_swap_cache(self.folio.as_ptr());
            bindings::folio_put_refs(self.folio.as_ptr(), self.nr as c_int);
        }
    }
}

impl<'p> CheckedPtes<'p> {
    /// Takes the table's lock (see [`PteMap::lock`]).
    #[inline]
    pub fn lock(&self) -> PteLock<'_> {
        self.map.lock()
    }

    /// Reads entry `i`, or `None` past the PMD range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Pte> {
        self.map.get(i)
    }

    /// The normal page that entry `pte` of this table maps (`pte_page()`),
    /// or `None` for a hole (none, or the zero page).
    #[inline]
    fn page_of(pte: Pte) -> Option<NonNull<bindings::page>> {
        // SAFETY: only looks at the value.
        let pfn = pte
            .pfn()
            .filter(|&pfn| unsafe { bindings::is_zero_pfn(pfn) } == 0)?;
        // SAFETY: entries that are present and not the zero page map a
        // normal page (type invariant), whose pfn has a `struct page`.
        NonNull::new(unsafe { bindings::pfn_to_page(pfn) })
    }

    /// Copies what entry `i` maps into page `i` of `dst`
    /// (`copy_mc_user_highpage()`), or zeroes that page for a hole
    /// (`clear_user_highpage()`). `false` on a memory error in the source
    /// (machine check), and (copying nothing) if `i` is out of range.
    #[inline]
    pub fn copy(&self, i: usize, dst: &NewFolio) -> bool {
        let (Some(pte), true) = (self.get(i), i < dst.nr) else {
            return false;
        };
        let vma = self.map.pmd.vma;
        let addr = self.map.pmd.entry_addr(i);
        let to = dst.page(i);
        let Some(from) = Self::page_of(pte) else {
            // SAFETY: `to` is a page of `dst`, which nothing maps.
            unsafe { bindings::clear_user_highpage(to, addr) };
            return true;
        };
        // SAFETY: `from` is mapped by the entry, which holds a reference and
        // only maps of the detached table change (type invariant); `to` is a
        // page of `dst`.
        unsafe { bindings::copy_mc_user_highpage(to, from.as_ptr(), addr, vma.as_ptr()) == 0 }
    }

    /// Unmaps entry `i` under the table's lock `held`: clears it and, for a
    /// normal page, removes its rmap (`folio_remove_rmap_ptes()`, under
    /// the lock, which keeps preemption off for the per-cpu counters). For
    /// a page of a large folio the entries after it that map the folio's
    /// next pages go too, in one rmap update (`folio_pte_batch()`, as
    /// 6.17's `__collapse_huge_page_copy_succeeded()`). No TLB flush is
    /// needed: the detach flushed the range, and the MMU cannot reach the
    /// table meanwhile.
    #[inline]
    pub fn unmap(&self, held: &(impl PtlHeld + ?Sized), i: usize) -> Unmapped {
        if held.held_ptl() != self.map.ptl.as_ptr() {
            return Unmapped::Refused;
        }
        let Some(pte) = self.get(i) else {
            return Unmapped::Refused;
        };
        if pte.is_none() {
            return Unmapped::None;
        }
        let vma = self.map.pmd.vma;
        let mm = vma.mm();
        let addr = self.map.pmd.entry_addr(i);
        // SAFETY: `i` is within the mapped entries.
        let ptep = unsafe { self.map.ptes.as_ptr().add(i) };
        let Some(page) = Self::page_of(pte) else {
            // Not none, so the zero page (type invariant).
            // SAFETY: the lock is held; the zero-page entry is cleared.
            unsafe {
                bindings::ptep_clear(mm, addr, ptep);
                bindings::ksm_might_unmap_zero_page(mm, pte.raw);
            }
            return Unmapped::ZeroPage;
        };
        // SAFETY: a normal page mapped by the entry, so live.
        let folio = unsafe { bindings::page_folio(page.as_ptr()) };
        let max = HPAGE_PMD_NR - i;
        // SAFETY: `folio` is live; the run stays within the table.
        let nr = if unsafe { bindings::folio_test_large(folio) } {
            // SAFETY: entry `i` is present and maps a page of `folio`; the
            // run stays within the table, whose lock is held.
            (unsafe { bindings::folio_pte_batch(folio, addr, ptep, pte.raw, max as c_int) })
                .clamp(1, max as c_int) as usize
        } else {
            1
        };
        // SAFETY: the lock is held; entries `i..i + nr` map `nr` pages of
        // `folio` from `page` in `vma` (`folio_pte_batch()`); they are
        // cleared and their references become ours.
        unsafe {
            bindings::ptep_clear_range(mm, addr, ptep, nr as _);
            bindings::folio_remove_rmap_ptes(folio, page.as_ptr(), nr as c_int, vma.as_ptr());
        }
        // INVARIANT: the cleared entries' references; the table is
        // detached, so no TLB entry maps them.
        Unmapped::Pages(UnmappedPages {
            // SAFETY: `page_folio()` of a page is never NULL.
            folio: unsafe { NonNull::new_unchecked(folio) },
            nr,
        })
    }
}

/// Why [`PteMap::unmap_file_folio`] or [`PteMapLock::check_file_folio`]
/// stopped at an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnmapFileError {
    /// The entry is not present (swapped out, migrating).
    NotPresent,
    /// The entry maps another page than the folio's: an anonymous one
    /// (a CoW copy, a uprobe's) if `anon`.
    Mismatch {
        /// Whether the page mapped instead is anonymous.
        anon: bool,
    },
    /// `held` is not this table's lock, or `i` is out of range.
    Refused,
}

impl PteMap<'_> {
    /// Unmaps every entry that maps a page of the locked, PMD-sized
    /// page-cache `folio` for this range (entry `i` mapping page `i`), under
    /// this table's lock `held`: clears them (`ptep_clear()`) and removes
    /// their rmap, one `folio_remove_rmap_ptes()` per run of entries that
    /// `folio_pte_batch()` finds, as 6.17's `collapse_pte_mapped_thp()`
    /// does. None entries are left alone. Stops at the first entry that maps
    /// anything else, saying what. Returns how many entries it unmapped:
    /// the references they held are the caller's to drop
    /// ([`LockedFolio::ref_sub_mappings`]) once no TLB entry can map the
    /// pages; the TLB flush is left to the caller.
    #[inline]
    pub fn unmap_file_folio(
        &self,
        held: &(impl PtlHeld + ?Sized),
        folio: &LockedFolio<'_>,
    ) -> (usize, Result<(), UnmapFileError>) {
        if held.held_ptl() != self.ptl.as_ptr() {
            return (0, Err(UnmapFileError::Refused));
        }
        let vma = self.pmd.vma;
        let mut unmapped = 0;
        let unmap = |i: usize, nr: usize, addr: c_ulong| {
            // SAFETY: entries `i..i + nr` are mapped, the lock is held, and
            // they map pages `i..i + nr` of the locked folio, whose rmap
            // goes with them.
            unsafe {
                bindings::ptep_clear_range(vma.mm(), addr, self.ptes.as_ptr().add(i), nr as _);
                bindings::folio_remove_rmap_ptes(
                    folio.as_ptr(),
                    folio.page(i),
                    nr as _,
                    vma.as_ptr(),
                );
            }
            unmapped += nr;
        };
        // SAFETY: the lock is held.
        let result = unsafe { file_folio_runs(self.pmd, self.ptes, folio, unmap) };
        (unmapped, result)
    }
}

impl PteMapLock<'_> {
    /// Checks that every entry is none or maps a page of the locked,
    /// PMD-sized page-cache `folio` for this range (entry `i` mapping page
    /// `i`), a run of entries per `folio_pte_batch()`; says what the first
    /// other entry maps.
    #[inline]
    pub fn check_file_folio(&self, folio: &LockedFolio<'_>) -> Result<(), UnmapFileError> {
        // SAFETY: the lock is held (type invariant).
        unsafe { file_folio_runs(self.pmd, self.ptes, folio, |_, _, _| {}) }
    }
}

/// Walks the table at `ptes` under `pmd` in runs of entries that map pages
/// of the PMD-sized `folio` at their own index: `run(i, nr, addr)` for each
/// run of `nr` entries from entry `i` (at `addr`), found by
/// `folio_pte_batch()`; none entries are skipped. Stops at the first other
/// entry, with what it is.
///
/// # Safety
///
/// `ptes` must start the [`HPAGE_PMD_NR`] mapped entries of the table
/// under `pmd`, whose lock the caller holds.
#[inline]
unsafe fn file_folio_runs(
    pmd: &Pmd<'_>,
    ptes: NonNull<bindings::pte_t>,
    folio: &LockedFolio<'_>,
    mut run: impl FnMut(usize, usize, c_ulong),
) -> Result<(), UnmapFileError> {
    if folio.nr != HPAGE_PMD_NR {
        return Err(UnmapFileError::Refused);
    }
    let base = folio.pfn();
    let mut i = 0;
    while i < HPAGE_PMD_NR {
        // SAFETY: mapped entries (safety requirements).
        let Some(pte) = (unsafe { read_pte(ptes, i) }) else {
            break;
        };
        if pte.is_none() {
            i += 1;
            continue;
        }
        let addr = pmd.entry_addr(i);
        match pte.pfn() {
            None => return Err(UnmapFileError::NotPresent),
            Some(pfn) if pfn != base + i as c_ulong => {
                return Err(mismatch(pmd, addr, pte));
            }
            Some(_) => {}
        }
        // SAFETY: entry `i` is present and maps page `i` of the large,
        // referenced folio; the batch stays within the table.
        let nr = unsafe {
            bindings::folio_pte_batch(
                folio.as_ptr(),
                addr,
                ptes.as_ptr().add(i),
                pte.raw,
                (HPAGE_PMD_NR - i) as _,
            )
        }
        .clamp(1, (HPAGE_PMD_NR - i) as _) as usize;
        run(i, nr, addr);
        i += nr;
    }
    Ok(())
}

/// What a present entry at `addr` maps instead of the expected page of a
/// page-cache folio, as `vm_normal_page()` sees it: zone-device pages
/// count as none, with a warning (as C does).
#[inline]
fn mismatch(pmd: &Pmd<'_>, addr: c_ulong, pte: Pte) -> UnmapFileError {
    // SAFETY: the VMA is valid; `pte` was read under its table's lock.
    let page = unsafe { bindings::vm_normal_page(pmd.vma.as_ptr(), addr, pte.raw) };
    #[cfg(CONFIG_ZONE_DEVICE)]
    // SAFETY: `page` is NULL or a mapped page, live under the lock.
    let page = if unsafe { bindings::page_warn_zone_device(page) } {
        core::ptr::null_mut()
    } else {
        page
    };
    // SAFETY: a page mapped by the entry, live under the lock.
    let anon = !page.is_null() && unsafe { bindings::page_is_anon(page) };
    UnmapFileError::Mismatch { anon }
}

impl Drop for PteMap<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: mapped by this guard (type invariant).
        unsafe { bindings::pte_unmap(self.ptes.as_ptr()) };
    }
}

/// The entries of one PTE table that map `[start, end)` of a [`Vma`]: a
/// whole PMD range, or the part of one that a VMA not aligned to PMDs
/// covers ([`Vma::find_pte_range`]).
///
/// # Invariants
///
/// `pmd` points to the PMD entry that maps `start` in `vma`'s mm, which
/// stays in place for `'a`; `start < end` are page-aligned, and `[start,
/// end)` lies in `vma` and in one PMD range.
///
/// # Examples
///
/// A shared anonymous (shmem) mapping that starts one page past a PMD
/// boundary: its pages are small page-cache folios, unmapped within an
/// invalidation that covers them.
///
/// ```
/// use kernel::{mm::kunit::KthreadMm, mm::mmu_notifier::MmuNotifierRange};
///
/// const ADDR: usize = 0x4000_0000 + 4096;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, 16 * 4096, true)?;
/// for i in 0..4 {
///     mm.write(ADDR + i * 4096, &[1])?;
/// }
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let (start, end) = (ADDR as _, (ADDR + 16 * 4096) as _);
/// // Only page-aligned ranges inside the VMA and one PMD range.
/// assert!(vma.find_pte_range(start, start).is_none());
/// assert!(vma.find_pte_range(start + 1, end).is_none());
/// assert!(vma.find_pte_range(start, end + 4096).is_none());
/// let ptes = vma.find_pte_range(start, end).ok_or(EINVAL)?;
///
/// // An invalidation of part of the range does not do.
/// // Nothing of the VMA: no range.
/// assert!(MmuNotifierRange::vma_clear(&vma, end, end + 4096).is_none());
/// let mut part = MmuNotifierRange::vma_clear(&vma, start + 4096, end).ok_or(EINVAL)?;
/// assert_eq!(ptes.unmap_file_pages(&part.start()), 0);
/// let mut range = MmuNotifierRange::vma_clear(&vma, start, end).ok_or(EINVAL)?;
/// let inv = range.start();
/// assert_eq!(ptes.unmap_file_pages(&inv), 4);
/// assert_eq!(ptes.unmap_file_pages(&inv), 0);
/// drop(inv);
/// drop(mmap);
/// // The data stayed in the page cache, and faults back in.
/// mm.write(ADDR, &[2])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let ptes = vma.find_pte_range(start, end).ok_or(EINVAL)?;
/// let mut range = MmuNotifierRange::vma_clear(&vma, start, end).ok_or(EINVAL)?;
/// assert_eq!(ptes.unmap_file_pages(&range.start()), 1);
/// # Ok::<(), Error>(())
/// ```
pub struct PteRange<'a> {
    pub(super) pmd: NonNull<bindings::pmd_t>,
    pub(super) vma: Vma<'a, Rmap>,
    pub(super) start: c_ulong,
    pub(super) end: c_ulong,
}

/// How many entries [`PteRange::unmap_file_pages`] clears before it
/// flushes their TLB entries and releases the pages: a `folio_batch`'s
/// worth, and a range that x86 still flushes page by page.
const UNMAP_BATCH: usize = 32;

/// The entries [`PteRange::unmap_file_pages`] has cleared and not yet
/// flushed from the TLB.
///
/// # Invariants
///
/// For `i < nr`, `folios[i]` is a small folio whose entry at `addr(i)` of
/// `vma` was cleared under the table's lock, still held; its mapcount and
/// the reference the entry held are still counted; bit `i` of `dirty` says
/// whether the entry was dirty.
struct ClearedPtes {
    folios: [*mut bindings::folio; UNMAP_BATCH],
    dirty: u32,
    nr: usize,
    // The range to flush: the first and the last cleared entry's address.
    first: c_ulong,
    last: c_ulong,
}

impl ClearedPtes {
    /// Flushes the TLB entries of the cleared entries, then removes their
    /// rmap, marks dirty the folios of the dirty ones and drops their
    /// references. Returns how many it released, by rss counter: file
    /// pages, shmem pages.
    ///
    /// # Safety
    ///
    /// The table's lock must still be held, `vma` be the table's VMA.
    #[inline]
    unsafe fn release(&mut self, vma: Vma<'_, Rmap>) -> (i64, i64) {
        if self.nr == 0 {
            return (0, 0);
        }
        // The rmap goes after the flush, as in zap_pte_range()'s
        // delay_rmap: until then a CPU may still write to the page through
        // its TLB, and folio_mkclean() must find the mapping in the rmap
        // to wait for this lock.
        // SAFETY: the VMA is valid; the range is in it.
        unsafe {
            bindings::flush_tlb_range(
                vma.as_ptr(),
                self.first,
                self.last + bindings::PAGE_SIZE as c_ulong,
            )
        };
        let (mut file, mut shmem) = (0, 0);
        for (i, &folio) in self.folios.iter().take(self.nr).enumerate() {
            // SAFETY: each folio was mapped by an entry cleared under the
            // lock still held, whose reference and mapcount we hold (type
            // invariant); no TLB entry maps it any more.
            unsafe {
                if self.dirty & (1 << i) != 0 {
                    bindings::folio_mark_dirty(folio);
                }
                if bindings::mm_counter_file(folio) == bindings::MM_SHMEMPAGES as c_int {
                    shmem += 1;
                } else {
                    file += 1;
                }
                bindings::folio_remove_rmap_pte(
                    folio,
                    bindings::folio_page(folio, 0),
                    vma.as_ptr(),
                );
                bindings::folio_put(folio);
            }
        }
        self.nr = 0;
        self.dirty = 0;
        (file, shmem)
    }
}

impl<'a> PteRange<'a> {
    /// The first address of the range.
    #[inline]
    pub fn start(&self) -> c_ulong {
        self.start
    }

    /// The first address after the range.
    #[inline]
    pub fn end(&self) -> c_ulong {
        self.end
    }

    /// Unmaps every entry of the range that maps a small folio of the
    /// VMA's file at its own index (`folio->mapping` the file's,
    /// `folio->index` the entry's `linear_page_index()`), as
    /// `try_to_unmap(folio, TTU_IGNORE_MLOCK)` of each of those folios
    /// would unmap it from this VMA: in `inv`, an invalidation that must
    /// cover the range, under the table's lock taken once, in batches of 32
    /// entries (`UNMAP_BATCH`), each one TLB flush and then, per entry, the
    /// dirty bit carried to the folio, the rmap removed and the reference
    /// dropped; a uffd-wp entry leaves its marker
    /// (`pte_install_uffd_wp_if_needed()`), the rss counters go down once
    /// for the range, and the munlock batch (filled in a `VM_LOCKED` VMA)
    /// is drained before the lock is dropped. Other entries (none, swap, migration,
    /// markers, anonymous CoW copies, large folios) are left alone.
    ///
    /// Returns how many entries it unmapped; 0, doing nothing, if `inv`
    /// does not cover the range or the PMD entry holds no PTE table.
    pub fn unmap_file_pages(&self, inv: &MmuInvalidation<'_>) -> usize {
        let vma = self.vma;
        let mm = vma.mm();
        if !inv.covers_range(mm, self.start, self.end) {
            return 0;
        }
        let Some(mapping) = vma.mapping() else {
            return 0;
        };
        let nr = (self.end - self.start) >> bindings::PAGE_SHIFT;
        let pgoff = vma.linear_page_index(self.start);
        let mut ptl = core::ptr::null_mut();
        // SAFETY: the entry is the mm's for `start`, and stays (type
        // invariant).
        let ptes =
            unsafe { bindings::__pte_offset_map_lock(mm, self.pmd.as_ptr(), self.start, &mut ptl) };
        let Some(ptes) = NonNull::new(ptes) else {
            return 0;
        };
        // SAFETY: the VMA is valid; a no-op where caches are not virtually
        // indexed.
        unsafe { bindings::flush_cache_range(vma.as_ptr(), self.start, self.end) };
        let mut cleared = ClearedPtes {
            folios: [core::ptr::null_mut(); UNMAP_BATCH],
            dirty: 0,
            nr: 0,
            first: 0,
            last: 0,
        };
        let (mut unmapped, mut file, mut shmem) = (0, 0, 0);
        for i in 0..nr {
            // SAFETY: the table is mapped from `start`'s entry on, and the
            // range stays in one table (type invariant), so entry `i` is
            // one of it.
            let ptep = unsafe { ptes.as_ptr().add(i) };
            // SAFETY: a mapped entry, under its lock.
            let pte = Pte::from_raw(unsafe { bindings::ptep_get(ptep) });
            if !pte.is_present() {
                continue;
            }
            let addr = self.start + ((i as c_ulong) << bindings::PAGE_SHIFT);
            // SAFETY: the VMA is valid; `pte` is present, read under its
            // table's lock, held.
            let page = unsafe { bindings::vm_normal_page(vma.as_ptr(), addr, pte.raw) };
            if page.is_null() {
                continue;
            }
            // SAFETY: a page mapped by the entry, live under the lock.
            let folio = unsafe { bindings::page_folio(page) };
            // SAFETY: the folio is live under the lock; an anonymous or KSM
            // folio's `mapping` is tagged, never the file's.
            let ours = unsafe {
                !bindings::folio_test_large(folio)
                    && (*folio).__bindgen_anon_1.__bindgen_anon_1.mapping == mapping.as_ptr()
                    && (*folio).__bindgen_anon_1.__bindgen_anon_1.index == pgoff + i as c_ulong
            };
            if !ours {
                continue;
            }
            if unmapped == 0 {
                // Update high watermark before we lower rss.
                // SAFETY: the mm is live.
                unsafe { bindings::update_hiwater_rss(mm) };
            }
            // SAFETY: entry `i`, mapped and locked, maps `folio`; a uffd-wp
            // marker replaces it if the VMA wants one.
            let old = unsafe {
                let old = bindings::ptep_get_and_clear(mm, addr, ptep);
                bindings::pte_install_uffd_wp_if_needed(vma.as_ptr(), addr, ptep, old);
                old
            };
            if cleared.nr == 0 {
                cleared.first = addr;
            }
            cleared.last = addr;
            // SAFETY: only looks at the value.
            if unsafe { bindings::pte_dirty(old) } != 0 {
                cleared.dirty |= 1 << cleared.nr;
            }
            if let Some(slot) = cleared.folios.get_mut(cleared.nr) {
                *slot = folio;
            }
            // INVARIANT: cleared under the held lock; its reference and
            // mapcount are the batch's.
            cleared.nr += 1;
            unmapped += 1;
            if cleared.nr == UNMAP_BATCH {
                // SAFETY: the lock is held; the VMA is the table's.
                let (f, s) = unsafe { cleared.release(vma) };
                file += f;
                shmem += s;
            }
        }
        // SAFETY: as above.
        let (f, s) = unsafe { cleared.release(vma) };
        file += f;
        shmem += s;
        if unmapped != 0 {
            // In a `VM_LOCKED` VMA, folio_remove_rmap_pte() queued the
            // folios for munlock, in this CPU's batch, which holds a
            // reference on each: drain it while the lock keeps us on this
            // CPU, as try_to_unmap_one() does, so that no reference is left
            // behind. Whatever the flags say now: `mlock()` and `munlock()`
            // change them under the mmap lock, which we do not hold, so
            // they may have changed since folio_remove_rmap_pte() read them.
            // SAFETY: no requirements; takes only this CPU's `mlock_fbatch`
            // local lock and the lruvec lock.
            unsafe { bindings::mlock_drain_local() };
        }
        // SAFETY: mapped and locked above, released in pte_unmap_unlock()
        // order.
        unsafe {
            bindings::spin_unlock(ptl);
            bindings::pte_unmap(ptes.as_ptr());
        }
        if file != 0 {
            vma.add_mm_counter(bindings::MM_FILEPAGES as i32, -file);
        }
        if shmem != 0 {
            vma.add_mm_counter(bindings::MM_SHMEMPAGES as i32, -shmem);
        }
        unmapped
    }
}

/// A held PTE lock, taken alone (without the PMD lock).
///
/// # Invariants
///
/// `ptl` is a PTE table lock held by this guard.
#[must_use = "the PTE lock is released when the guard is dropped"]
pub struct PteLock<'p> {
    pub(super) ptl: NonNull<bindings::spinlock_t>,
    pub(super) _pmd: PhantomData<&'p ()>,
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
    pub(super) pml: NonNull<bindings::spinlock_t>,
    pub(super) pmd: &'p Pmd<'p>,
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
    /// by a huge PMD with [`DetachedPtes::map_anon_folio_pmd`].
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
    pub(super) nested: Option<NonNull<bindings::spinlock_t>>,
    pub(super) ptl: NonNull<bindings::spinlock_t>,
    pub(super) pml: PmdLock<'p>,
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
    /// Only an empty table is detached: `None` (and nothing done) if an
    /// entry is not none (a page, swap entry or marker still there, whose
    /// mapping would be lost with the table). The entries are read under
    /// the held PTE lock, so they stay none.
    #[inline]
    pub fn collapse_flush(&self) -> Option<DetachedTable<'p>> {
        if !self.is_empty() {
            return None;
        }
        // SAFETY: the table is empty (just checked), and stays so under its
        // lock, which is held (type invariant).
        unsafe { self.flush() }
    }

    /// [`Self::collapse_flush`] of a table the caller knows to be empty,
    /// without reading its 512 entries, as `retract_page_tables()` does in
    /// C. With `CONFIG_DEBUG_VM` the entries are read all the same, and a
    /// table that is not empty is refused with a warning.
    ///
    /// # Safety
    ///
    /// Every entry of the table must be none (while the PTE lock, which
    /// `self` holds, keeps it so): nothing it maps would be unmapped when
    /// the table is freed.
    #[inline]
    pub unsafe fn collapse_flush_empty(&self) -> Option<DetachedTable<'p>> {
        #[cfg(CONFIG_DEBUG_VM)]
        if crate::mm::warn_on_once(!self.is_empty()) {
            return None;
        }
        // SAFETY: the table is empty (safety requirements), under its lock.
        unsafe { self.flush() }
    }

    /// Whether every entry of the table is none; the entries are read under
    /// the held PTE lock, so they stay so.
    #[inline]
    fn is_empty(&self) -> bool {
        let Some(ptes) = self.pml.pmd.map_nolock() else {
            return false;
        };
        // The lock held (type invariant) is this table's.
        ptes.ptl == self.ptl && (0..HPAGE_PMD_NR).all(|i| ptes.get(i).is_some_and(Pte::is_none))
    }

    /// `pmdp_collapse_flush()` and `pmdp_get_lockless_sync()`.
    ///
    /// # Safety
    ///
    /// The table must be empty, as for [`Self::collapse_flush_empty`].
    #[inline]
    unsafe fn flush(&self) -> Option<DetachedTable<'p>> {
        let pmd = self.pml.pmd;
        // SAFETY: both locks are held (type invariant), the VMA maps the
        // entry's range (`Pmd` invariant), and the table is empty (safety
        // requirements).
        let pgt_pmd =
            unsafe { bindings::pmdp_collapse_flush(pmd.vma.as_ptr(), pmd.haddr, pmd.as_ptr()) };
        // SAFETY: no requirement beyond holding the PMD lock.
        unsafe { bindings::pmdp_get_lockless_sync() };
        // INVARIANT: detached just now, not freed.
        Some(DetachedTable {
            pgt_pmd,
            mm: pmd.vma.mm(),
            haddr: pmd.haddr,
            _pmd: PhantomData,
        })
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
    pub(super) pgt_pmd: bindings::pmd_t,
    pub(super) mm: *mut bindings::mm_struct,
    pub(super) haddr: c_ulong,
    pub(super) _pmd: PhantomData<&'p ()>,
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
/// use kernel::{bindings, mm::HPAGE_PMD_NR, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm, mm::mmu_notifier::MmuNotifierRange, mm::pgtable::{DetachedEntry, PmdKind, Unmapped}};
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
/// assert!(ptes.get(0).ok_or(EINVAL)?.is_none());
/// assert!(ptes.get(1).ok_or(EINVAL)?.is_present());
/// // Checked, entry by entry: a hole, then a normal page, then holes.
/// let mut pages = 0;
/// let ptes = ptes.check_detached(EINVAL, |i, entry| match entry {
///     DetachedEntry::Hole(_) if i != 1 => Ok(()),
///     DetachedEntry::Page(..) if i == 1 => {
///         pages += 1;
///         Ok(())
///     }
///     _ => Err(EINVAL),
/// })?;
/// assert_eq!(pages, 1);
/// // Unlocked, still mapped; its entries can be unmapped under its lock.
/// let held = ptes.lock();
/// assert!(matches!(ptes.unmap(&held, 0), Unmapped::None));
/// assert!(matches!(ptes.unmap(&held, HPAGE_PMD_NR), Unmapped::Refused));
/// drop(held);
/// // The map borrows `detached`: it goes first.
/// drop(ptes);
/// // Dropped: the table is back, PTEs and all.
/// drop(detached);
/// assert!(PmdKind::of(pmd.get_lockless()) == PmdKind::Table);
/// // A map of a table in place is no detached one: nothing is checked.
/// let ptes = pmd.map_lock().ok_or(EINVAL)?;
/// assert!(ptes.check_detached(EINVAL, |_, _| Err(ENOMEM)).err() == Some(EINVAL));
/// let ptes = pmd.map_lock().ok_or(EINVAL)?;
/// assert!(ptes.get(1).ok_or(EINVAL)?.is_present());
/// # Ok::<(), Error>(())
/// ```
#[must_use = "dropping it puts the page table back"]
pub struct DetachedPtes<'p> {
    pub(super) pmdval: bindings::pmd_t,
    pub(super) pmd: &'p Pmd<'p>,
    // Whether GUP-fast was synchronised with since the detach.
    pub(super) synced: core::cell::Cell<bool>,
}

impl<'p> DetachedPtes<'p> {
    /// Maps and locks the detached table (`pte_offset_map_lock()` on the
    /// saved entry); `None` if that fails. The first call waits for
    /// GUP-fast walkers that may still see the table
    /// (`tlb_remove_table_sync_one()`, where page tables are freed by RCU),
    /// so that the PTEs and page references read under the lock are
    /// final.
    ///
    /// The map borrows `self`: while the table is detached, only maps of it
    /// reach it, so once checked ([`PteMapLock::check_detached`]) its
    /// entries can be copied and unmapped ([`CheckedPtes`]) without a TLB
    /// flush, which the detach did. Its lock must be released before the
    /// table is put back.
    #[inline]
    pub fn map_lock(&self) -> Option<PteMapLock<'_>> {
        if !self.synced.replace(true) {
            tlb_remove_table_sync_one();
        }
        let mut pmdval = self.pmdval;
        // SAFETY: `pmdval` is a PTE table entry of this mm for `haddr`, and
        // the table is not freed (type invariant); it is read only during
        // the call.
        let mut map = unsafe { PteMapLock::new(self.pmd, &mut pmdval) }?;
        // INVARIANT: a map of this detached table, borrowing `self`.
        map.detached = true;
        Some(map)
    }

    /// Replaces the table by a huge PMD mapping `folio` in the VMA, which
    /// is anonymous: under the PMD lock, `folio_add_new_anon_rmap()`
    /// (exclusive), `folio_add_lru_vma()`, the table deposited
    /// (`pgtable_trans_huge_deposit()`) for a later split, `set_pmd_at()` of
    /// a dirty entry (writable if the VMA is), `update_mmu_cache_pmd()`,
    /// and `deferred_split_folio()`. The folio is marked uptodate first,
    /// so its contents are visible before the entry is.
    ///
    /// Refused, giving `folio` back and the table back to the PMD, unless
    /// every entry of the table is none (unmapped with
    /// [`CheckedPtes::unmap`]), the folio is PMD-sized and the VMA
    /// anonymous with an anon_vma. That the folio holds the range's data is
    /// the caller's business.
    #[inline]
    pub fn map_anon_folio_pmd(self, folio: NewFolio) -> Result<(), NewFolio> {
        let vma = self.pmd.vma;
        let empty = self
            .map_lock()
            .is_some_and(|ptes| (0..HPAGE_PMD_NR).all(|i| ptes.get(i).is_some_and(Pte::is_none)));
        if !empty || folio.nr != HPAGE_PMD_NR || !vma.is_anonymous() || !vma.has_anon_vma() {
            return Err(folio);
        }
        let this = core::mem::ManuallyDrop::new(self);
        let pmd = this.pmd;
        let (vma, mm, haddr) = (vma.as_ptr(), pmd.vma.mm(), pmd.haddr);
        let folio = core::mem::ManuallyDrop::new(folio);
        // SAFETY: the folio is ours, not yet mapped; the VMA is valid.
        let entry = unsafe {
            bindings::__folio_mark_uptodate(folio.as_ptr());
            bindings::mk_huge_pmd_dirty(folio.page(0), vma)
        };
        let _pml = pmd.lock();
        // SAFETY: the PMD lock is held; the table is detached (type
        // invariant) and empty, the VMA anonymous with an anon_vma (checked
        // above) and write-locked (type invariant), the folio PMD-sized and
        // its reference becomes the mapping's.
        unsafe {
            if bindings::pmd_none(read_once(pmd.as_ptr())) == 0 {
                bindings::BUG();
            }
            bindings::folio_add_new_anon_rmap_exclusive(folio.as_ptr(), vma, haddr);
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
        Ok(())
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
            bindings::pmd_populate(
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
