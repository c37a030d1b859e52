// SPDX-License-Identifier: GPL-2.0

//! Folios: a locked page-cache folio found through a VMA
//! ([`LockedFolio`]) and a freshly allocated one ([`NewFolio`]).
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::virt::Vma;
use crate::types::Opaque;
use crate::{bindings, ffi, ffi::c_ulong};
use core::marker::{PhantomData, PhantomPinned};
use core::pin::{pin, Pin};
use core::ptr::NonNull;

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
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::folio::LockedFolio, mm::kunit::KthreadMm};
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
    pub(super) folio: NonNull<bindings::folio>,
    // Stable while the folio is locked (no split).
    pub(super) nr: usize,
    // Where it was found: it stays there while it is locked.
    pub(super) mapping: *mut bindings::address_space,
    pub(super) index: c_ulong,
    pub(super) _vma: PhantomData<&'a ()>,
}

impl<'a> LockedFolio<'a> {
    /// Looks up and locks the page-cache folio backing `addr` of the file
    /// VMA `vma`, as `filemap_lock_folio(mapping, linear_page_index())`.
    ///
    /// Returns `None` if the VMA has no file or the folio is not cached.
    pub fn lock_in_vma(vma: &Vma<'a>, addr: c_ulong) -> Option<Self> {
        let mapping = vma.mapping()?;
        let index = vma.linear_page_index(addr);
        // SAFETY: the VMA is valid and pins the mapping.
        let folio = unsafe { bindings::filemap_lock_folio(mapping.as_ptr(), index) };
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
            mapping: mapping.as_ptr(),
            index,
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

    /// `folio_pfn(folio)`: the pfn of its first page.
    #[inline]
    pub fn pfn(&self) -> c_ulong {
        // SAFETY: we hold a reference (type invariant).
        unsafe { bindings::folio_pfn(self.as_ptr()) }
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

/// A folio that nothing maps yet, with a reference owned by this object
/// (a freshly allocated huge page, say); dropping it puts the reference.
///
/// # Invariants
///
/// `folio` points to a folio on which this object owns one reference, of
/// `nr` pages.
pub struct NewFolio {
    pub(super) folio: NonNull<bindings::folio>,
    pub(super) nr: usize,
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
    // SAFETY: `n` is within the folio (safety requirements).
    unsafe { bindings::folio_page(folio.as_ptr(), n as c_ulong) }
}

// `mm/vmscan.c` and `mm/swap.c`, declared in `mm/internal.h`, which the
// bindings do not include. `folio` embeds structs that are empty in some
// configurations, which the lint flags; the pointer is passed through.
#[allow(improper_ctypes)]
extern "C" {
    fn folio_isolate_lru(folio: *mut bindings::folio) -> bool;
    fn folio_putback_lru(folio: *mut bindings::folio);
}

/// A folio, borrowed: something the borrow stands for keeps it from being
/// freed (a page table entry that maps it, read under the table's lock, as
/// [`PteMapLock::normal_folio`] hands it out; a reference the caller
/// holds). Its flags and counts can change meanwhile: what these methods
/// return is a snapshot, as in C.
///
/// [`PteMapLock::normal_folio`]: crate::mm::pgtable::PteMapLock::normal_folio
///
/// # Invariants
///
/// The wrapped `struct folio` is live for as long as the `&Folio` is.
#[repr(transparent)]
pub struct Folio(Opaque<bindings::folio>);

impl Folio {
    /// Borrows the folio at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a folio that stays live for `'a`.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::folio) -> &'a Self {
        // SAFETY: `Folio` is a transparent wrapper of a live `struct folio`
        // (safety requirements).
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw folio pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// `folio_test_anon()`: mapped anonymous memory (or KSM).
    #[inline]
    pub fn is_anon(&self) -> bool {
        // SAFETY: live (type invariant); reads the mapping pointer's flags.
        unsafe { bindings::folio_test_anon(self.as_ptr()) }
    }

    /// `folio_test_large()`: more than one page.
    #[inline]
    pub fn is_large(&self) -> bool {
        // SAFETY: live (type invariant); reads a flag.
        unsafe { bindings::folio_test_large(self.as_ptr()) }
    }

    /// `folio_test_lru()`: on an LRU list.
    #[inline]
    pub fn is_lru(&self) -> bool {
        // SAFETY: live (type invariant); reads a flag.
        unsafe { bindings::folio_test_lru(self.as_ptr()) }
    }

    /// `folio_test_locked()`.
    #[inline]
    pub fn is_locked(&self) -> bool {
        // SAFETY: live (type invariant); reads a flag.
        unsafe { bindings::folio_test_locked(self.as_ptr()) }
    }

    /// `folio_test_young() || folio_test_referenced()`: used lately, as
    /// page idle tracking and reclaim record it.
    #[inline]
    pub fn is_young_or_referenced(&self) -> bool {
        // SAFETY: live (type invariant); reads flags.
        unsafe {
            bindings::folio_test_young(self.as_ptr())
                || bindings::folio_test_referenced(self.as_ptr())
        }
    }

    /// `folio_test_swapcache()`.
    #[inline]
    pub fn is_swapcache(&self) -> bool {
        // SAFETY: live (type invariant); reads flags.
        unsafe { bindings::folio_test_swapcache(self.as_ptr()) }
    }

    /// `folio_test_private()`: has private data (buffer heads, ...).
    #[inline]
    pub fn has_private(&self) -> bool {
        // SAFETY: live (type invariant); reads a flag.
        unsafe { bindings::folio_test_private(self.as_ptr()) }
    }

    /// `folio_is_zone_device()`: device memory (no LRU, no copy).
    #[inline]
    pub fn is_zone_device(&self) -> bool {
        // SAFETY: live (type invariant); reads the zone bits.
        unsafe { bindings::folio_is_zone_device(self.as_ptr()) }
    }

    /// `folio_is_file_lru()`: on the file LRU lists when on one.
    #[inline]
    pub fn is_file_lru(&self) -> bool {
        // SAFETY: live (type invariant); reads a flag.
        unsafe { bindings::folio_is_file_lru(self.as_ptr()) != 0 }
    }

    /// `folio_nid()`: the NUMA node of its memory.
    #[inline]
    pub fn nid(&self) -> i32 {
        // SAFETY: live (type invariant); reads the node bits.
        unsafe { bindings::folio_nid(self.as_ptr()) }
    }

    /// `folio_order()`.
    #[inline]
    pub fn order(&self) -> u32 {
        // SAFETY: live (type invariant).
        unsafe { bindings::folio_order(self.as_ptr()) as u32 }
    }

    /// `folio_pfn()`: the page frame of its first page.
    #[inline]
    pub fn pfn(&self) -> c_ulong {
        // SAFETY: live (type invariant).
        unsafe { bindings::folio_pfn(self.as_ptr()) }
    }

    /// `folio->index`: its offset in its file, in pages (for a page-cache
    /// folio; a swap-cache one keeps its swap entry there).
    #[inline]
    pub fn index(&self) -> c_ulong {
        // SAFETY: live (type invariant); a plain read of a word, as C's.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.index }
    }

    /// `folio_nr_pages()`.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        // SAFETY: live (type invariant).
        unsafe { bindings::folio_nr_pages(self.as_ptr()) as usize }
    }

    /// `folio_mapcount()`: the number of page table entries mapping it.
    #[inline]
    pub fn mapcount(&self) -> i32 {
        // SAFETY: live (type invariant); reads atomics.
        unsafe { bindings::folio_mapcount(self.as_ptr()) }
    }

    /// `folio_ref_count()`.
    #[inline]
    pub fn ref_count(&self) -> i32 {
        // SAFETY: live (type invariant); reads an atomic.
        unsafe { bindings::folio_ref_count(self.as_ptr()) }
    }

    /// `folio_trylock()`: locks the folio if nobody holds its lock.
    #[inline]
    pub fn trylock(&self) -> Option<FolioLockGuard<'_>> {
        // SAFETY: live (type invariant).
        if !unsafe { bindings::folio_trylock(self.as_ptr()) } {
            return None;
        }
        // INVARIANT: locked just now.
        Some(FolioLockGuard { folio: self })
    }

    /// `folio_likely_mapped_shared()`: probably mapped by more than one
    /// process (a heuristic, as in C).
    #[inline]
    pub fn likely_mapped_shared(&self) -> bool {
        // SAFETY: live (type invariant); reads atomics.
        unsafe { bindings::folio_likely_mapped_shared(self.as_ptr()) }
    }
}

/// A folio locked with [`Folio::trylock`], borrowed; the drop unlocks it.
///
/// # Invariants
///
/// The guard holds the lock of `folio`.
#[must_use = "the folio is unlocked when the guard is dropped"]
pub struct FolioLockGuard<'a> {
    folio: &'a Folio,
}

impl<'a> FolioLockGuard<'a> {
    /// `folio_isolate_lru()` of the locked folio: takes it off its LRU list
    /// with a reference of its own, so that reclaim, compaction and
    /// migration leave it alone, and counts it in `NR_ISOLATED_ANON` or
    /// `NR_ISOLATED_FILE`. Gives the guard back if it was on no LRU.
    #[inline]
    pub fn isolate_lru(self) -> Result<IsolatedFolio, Self> {
        let folio = self.folio;
        // SAFETY: live, and referenced by what the borrow stands for (the
        // `Folio` invariant): folio_isolate_lru()'s requirement.
        if !unsafe { folio_isolate_lru(folio.as_ptr()) } {
            return Err(self);
        }
        let nr = folio.nr_pages() as i32;
        // SAFETY: isolated just now; a per-node counter.
        unsafe { bindings::node_stat_mod_folio(folio.as_ptr(), isolated_item(folio), nr) };
        core::mem::forget(self);
        // INVARIANT: locked (the guard's lock, handed over), isolated with
        // its own reference, counted.
        Ok(IsolatedFolio {
            // SAFETY: a reference is never NULL.
            folio: unsafe { NonNull::new_unchecked(folio.as_ptr()) },
        })
    }
}

impl core::ops::Deref for FolioLockGuard<'_> {
    type Target = Folio;

    #[inline]
    fn deref(&self) -> &Folio {
        self.folio
    }
}

impl Drop for FolioLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: locked by this guard (type invariant).
        unsafe { bindings::folio_unlock(self.folio.as_ptr()) };
    }
}

/// `NR_ISOLATED_ANON` or `NR_ISOLATED_FILE`, the counter of `folio`.
#[inline]
fn isolated_item(folio: &Folio) -> bindings::node_stat_item {
    bindings::node_stat_item_NR_ISOLATED_ANON + folio.is_file_lru() as bindings::node_stat_item
}

/// A folio that is locked, isolated from the LRU and counted as isolated,
/// as the folios a collapse or a migration works on are: reclaim,
/// compaction and rmap walks that lock folios leave it alone. Dropping it
/// ends all three (`release_pte_folio()` in khugepaged): it is uncounted,
/// unlocked and put back on an LRU list.
///
/// # Invariants
///
/// `folio` is locked by this object, isolated from the LRU with a
/// reference this object owns, and counted in `NR_ISOLATED_*`; its `lru`
/// field is this object's (an [`IsolatedList`] links it).
#[must_use = "the folio goes back to the LRU when dropped"]
pub struct IsolatedFolio {
    folio: NonNull<bindings::folio>,
}

impl IsolatedFolio {
    /// Ends the isolation of a folio whose mappings were all removed: as the
    /// drop, with `free_swap_cache()` in between, so that the last put
    /// frees it (`__collapse_huge_page_copy_succeeded()`).
    #[inline]
    pub fn putback_free_swap_cache(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: not dropped: `this` is given up here.
        unsafe { this.release(true) };
    }

    /// Ends the isolation of a small folio that only this object and the
    /// caller reference, and hands the references to `batch`, whose last
    /// put frees the folio without putting it back on an LRU list first, as
    /// migration frees the folios it moved: C's putback would add it to an
    /// LRU list only for the put to take it off again.
    ///
    /// Gives the object back untouched when the folio is large, mlocked or
    /// unevictable (what the LRU putback sorts out), a KSM folio (the
    /// stable tree finds it, and may map it again, without a reference),
    /// or when anything but this object and the caller's `refs` references
    /// it (another page table, the swap or page cache, a per-cpu batch, a
    /// lookup).
    ///
    /// The batch may free the folio at once (see [`PutBatch::add`]).
    ///
    /// # Safety
    ///
    /// The caller must own `refs` references on the folio that nothing else
    /// stands for (no page table entry maps the folio through them). They
    /// are handed to `batch` when this returns `Ok`.
    #[inline]
    pub unsafe fn free_unreferenced(self, refs: u32, batch: &mut PutBatch) -> Result<(), Self> {
        let folio = self.folio.as_ptr();
        let count = refs.checked_add(1).and_then(|n| i32::try_from(n).ok());
        if self.is_large() || Some(self.ref_count()) != count {
            return Err(self);
        }
        // SAFETY: live (isolated, type invariant); reads flags and the
        // mapping pointer's.
        let keep = unsafe {
            bindings::folio_test_mlocked(folio)
                || bindings::folio_test_unevictable(folio)
                || bindings::folio_test_ksm(folio)
        };
        if keep {
            return Err(self);
        }
        // Nobody else references the folio, so no page table maps it, no
        // cache or LRU list holds it, and, not being KSM, nothing can map
        // it again (the mapping needs an existing one, or the swap cache);
        // the isolation keeps reclaim and compaction away: only lookups
        // that take a reference speculatively, see no LRU flag and put it.
        // The gen bits of the multi-gen LRU went at the isolation; the
        // active bit, which the LRU clears, must not reach the allocator.
        // SAFETY: locked, isolated and counted by this object (type
        // invariant), which gives all three up here.
        unsafe {
            bindings::folio_clear_active(folio);
            bindings::node_stat_mod_folio(folio, isolated_item(&self), -1);
            bindings::folio_unlock(folio);
        }
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the isolation's reference (type invariant) and the
        // caller's `refs` (safety requirements), `count` in all, on a small
        // folio (so not the huge zero folio).
        unsafe { batch.add(this.folio, refs + 1) };
        Ok(())
    }

    /// Uncounts, unlocks and puts the folio back on an LRU list, with
    /// `free_swap_cache()` after the unlock if `free_swap_cache`.
    ///
    /// # Safety
    ///
    /// Once only: the object gives up its lock, isolation and count, and
    /// must not be used (nor dropped) after.
    #[inline]
    unsafe fn release(&self, free_swap_cache: bool) {
        let folio = self.folio.as_ptr();
        // SAFETY: locked, isolated and counted by this object (type
        // invariant), which gives all three up here (safety requirements).
        unsafe {
            bindings::node_stat_mod_folio(folio, isolated_item(self), -(self.nr_pages() as i32));
            bindings::folio_unlock(folio);
            if free_swap_cache {
                bindings::mm_free_swap_cache(folio);
            }
            folio_putback_lru(folio);
        }
    }
}

impl core::ops::Deref for IsolatedFolio {
    type Target = Folio;

    #[inline]
    fn deref(&self) -> &Folio {
        // SAFETY: the isolation's reference keeps it live (type invariant).
        unsafe { Folio::from_raw(self.folio.as_ptr()) }
    }
}

impl Drop for IsolatedFolio {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the object is being dropped.
        unsafe { self.release(false) };
    }
}

/// References on folios, put together when the batch is full or dropped
/// (`folios_put_refs()`): the folios whose last reference goes are freed
/// with one memcg uncharge and one pass through the page allocator per
/// batch.
///
/// The caller flushes a full batch ([`PutBatch::is_full`]) where it is
/// best done, outside a spinlock say; [`PutBatch::add`] flushes one
/// itself before it adds to it.
///
/// # Invariants
///
/// `batch` is an initialised `folio_batch`; the object owns `refs[i]`
/// references on `batch.folios[i]` for each `i < batch.nr`.
pub struct PutBatch {
    batch: bindings::folio_batch,
    refs: [ffi::c_uint; bindings::PAGEVEC_SIZE as usize],
}

impl PutBatch {
    /// An empty batch (`folio_batch_init()`).
    #[inline]
    pub fn new() -> Self {
        // INVARIANT: a zeroed `folio_batch` is an empty one.
        Self {
            batch: bindings::folio_batch::default(),
            refs: [0; bindings::PAGEVEC_SIZE as usize],
        }
    }

    /// Adds `refs` references on `folio`, after putting the batch if it is
    /// full. A put may free folios: not under an lruvec or zone lock.
    ///
    /// # Safety
    ///
    /// The caller must own `refs` references on `folio`, which it hands
    /// over; `folio` must not be the huge zero folio, whose references
    /// `folios_put_refs()` skips.
    #[inline]
    pub unsafe fn add(&mut self, folio: NonNull<bindings::folio>, refs: ffi::c_uint) {
        if self.is_full() {
            self.flush();
        }
        let n = self.batch.nr as usize;
        if let (Some(f), Some(r)) = (self.batch.folios.get_mut(n), self.refs.get_mut(n)) {
            *f = folio.as_ptr();
            *r = refs;
            // INVARIANT: owned (safety requirements).
            self.batch.nr += 1;
        }
    }

    /// Whether the batch is full: the next [`PutBatch::add`] puts it first.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.batch.nr as usize >= self.batch.folios.len()
    }

    /// Puts every reference in the batch, which is left empty.
    #[inline]
    pub fn flush(&mut self) {
        if self.batch.nr != 0 {
            // SAFETY: the batch is initialised and owns `refs[i]` references
            // on its `i`th folio (type invariant); `folios_put_refs()` puts
            // them and empties it.
            unsafe { bindings::folios_put_refs(&mut self.batch, self.refs.as_mut_ptr()) };
        }
    }
}

impl Default for PutBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PutBatch {
    #[inline]
    fn drop(&mut self) {
        self.flush();
    }
}

/// Isolated folios, listed through their `lru` field (free while they are
/// isolated) in the order they were added, as khugepaged's
/// `compound_pagelist`. Only lent out by [`IsolatedList::with`], which
/// releases what is left on it at the end.
///
/// # Invariants
///
/// `head` is an initialised list head at a fixed address; every entry is
/// the `lru` of a folio whose [`IsolatedFolio`] the list owns.
///
/// # Examples
///
/// ```
/// use kernel::{mm::HPAGE_PMD_SIZE, mm::folio::{lru_add_drain_all, IsolatedList}};
/// use kernel::mm::kunit::KthreadMm;
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// mm.write(ADDR, &[1])?;
/// mm.write(ADDR + 4096, &[2])?;
/// // Fresh folios may sit in a per-cpu batch, off the LRU: drain them
/// // (every CPU's: the test may have moved since the fault).
/// lru_add_drain_all();
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let pmd = vma.find_pmd(ADDR as _).ok_or(EINVAL)?;
/// let ptes = pmd.map_lock().ok_or(EINVAL)?;
/// let (a, _) = ptes.normal_folio(0).ok_or(EINVAL)?;
/// let (b, _) = ptes.normal_folio(1).ok_or(EINVAL)?;
/// // Under the PTE lock; checked once it is released.
/// let mut seen = [false; 6];
/// IsolatedList::with(|list| {
///     let Some(ia) = a.trylock().and_then(|l| l.isolate_lru().ok()) else {
///         return;
///     };
///     seen[0] = !a.is_lru() && a.is_locked();
///     // Locked already: no second lock, so no second isolation.
///     seen[1] = a.trylock().is_none();
///     list.push(ia);
///     if let Some(ib) = b.trylock().and_then(|l| l.isolate_lru().ok()) {
///         list.push(ib);
///     }
///     seen[2] = list.contains(a) && list.contains(b);
///     // In the order they were added; dropped, unlocked.
///     seen[3] = list.pop().is_some_and(|first| first.pfn() == a.pfn());
///     seen[4] = !a.is_locked() && !list.contains(a) && list.contains(b);
/// });
/// // What the list held is released at the end.
/// seen[5] = !b.is_locked();
/// // No lock held at the assertion: a failed one ends the thread.
/// drop(ptes);
/// drop(mmap);
/// assert_eq!(seen, [true; 6]);
/// # Ok::<(), Error>(())
/// ```
pub struct IsolatedList {
    head: Opaque<bindings::list_head>,
    _pin: PhantomPinned,
}

impl IsolatedList {
    /// Runs `f` with a new, empty list; what `f` leaves on it is released
    /// (dropped) after.
    #[inline]
    pub fn with<R>(f: impl FnOnce(Pin<&Self>) -> R) -> R {
        let list = pin!(Self {
            head: Opaque::uninit(),
            _pin: PhantomPinned,
        });
        // SAFETY: the head is pinned on this stack frame until the end.
        unsafe { bindings::folio_list_init(list.head.get()) };
        // INVARIANT: initialised, pinned, empty.
        let list = list.into_ref();
        let r = f(list);
        while let Some(folio) = list.pop() {
            drop(folio);
        }
        r
    }

    /// Adds `folio` at the end.
    #[inline]
    pub fn push(self: Pin<&Self>, folio: IsolatedFolio) {
        let folio = core::mem::ManuallyDrop::new(folio);
        // SAFETY: the list is initialised (type invariant) and the folio's
        // `lru` is its isolation's, now the list's.
        unsafe { bindings::folio_list_add_tail(folio.folio.as_ptr(), self.head.get()) };
    }

    /// The first folio, without taking it off.
    #[inline]
    fn first_raw(self: Pin<&Self>) -> Option<NonNull<bindings::folio>> {
        // SAFETY: the list is initialised (type invariant).
        NonNull::new(unsafe { bindings::folio_list_next(self.head.get(), core::ptr::null_mut()) })
    }

    /// The pfn of the first folio, without taking it off. (Not a `&Folio`:
    /// a [`pop`](Self::pop) through another borrow of the list could end
    /// its isolation, and free it, while the borrow lives.)
    #[inline]
    pub fn first_pfn(self: Pin<&Self>) -> Option<c_ulong> {
        let f = self.first_raw()?;
        // SAFETY: on the list, so isolated with a reference the list owns;
        // only read during the call.
        Some(unsafe { Folio::from_raw(f.as_ptr()) }.pfn())
    }

    /// Takes the first folio off the list.
    #[inline]
    pub fn pop(self: Pin<&Self>) -> Option<IsolatedFolio> {
        let f = self.first_raw()?;
        // SAFETY: `f` is on the list (initialised: type invariant).
        unsafe { bindings::folio_list_del(f.as_ptr()) };
        // INVARIANT: the list's isolated folio, handed back.
        Some(IsolatedFolio { folio: f })
    }

    /// Whether `folio` is on the list; looks from the end, where the folio
    /// added last is.
    #[inline]
    pub fn contains(self: Pin<&Self>, folio: &Folio) -> bool {
        let mut f = core::ptr::null_mut();
        loop {
            // SAFETY: the list is initialised and its folios live (type
            // invariant).
            f = unsafe { bindings::folio_list_prev(self.head.get(), f) };
            if f.is_null() {
                return false;
            }
            if f == folio.as_ptr() {
                return true;
            }
        }
    }
}

/// `lru_add_drain_all()`: moves every CPU's batched folios onto the LRU
/// lists, and waits for that. May sleep.
#[inline]
pub fn lru_add_drain_all() {
    // SAFETY: no requirements.
    unsafe { bindings::lru_add_drain_all() };
}
