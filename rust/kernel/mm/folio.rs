// SPDX-License-Identifier: GPL-2.0

//! Folios: a locked page-cache folio found through a VMA
//! ([`LockedFolio`]) and a freshly allocated one ([`NewFolio`]).
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::virt::Vma;
use crate::types::Opaque;
use crate::{bindings, ffi::c_ulong};
use core::{marker::PhantomData, ptr::NonNull};

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
    pub(super) _vma: PhantomData<&'a ()>,
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

    /// `folio_isolate_lru()`: takes the folio off its LRU list, with a new
    /// reference, so that reclaim and compaction leave it alone; `false` if
    /// it was not on one.
    ///
    /// # Safety
    ///
    /// The caller must hold a reference (a mapping counts) and, on
    /// success, account for the isolation (`NR_ISOLATED_*`) and end it
    /// with [`Folio::putback_lru`].
    #[inline]
    pub unsafe fn isolate_lru(&self) -> bool {
        // SAFETY: live and referenced (safety requirements).
        unsafe { folio_isolate_lru(self.as_ptr()) }
    }

    /// `folio_putback_lru()`: puts an isolated folio back on an LRU list
    /// and drops the reference the isolation took.
    ///
    /// # Safety
    ///
    /// The folio must have been isolated by [`Folio::isolate_lru`], whose
    /// reference the caller gives up; the isolation must be unaccounted.
    #[inline]
    pub unsafe fn putback_lru(&self) {
        // SAFETY: isolated (safety requirements).
        unsafe { folio_putback_lru(self.as_ptr()) }
    }

    /// `folio_likely_mapped_shared()`: probably mapped by more than one
    /// process (a heuristic, as in C).
    #[inline]
    pub fn likely_mapped_shared(&self) -> bool {
        // SAFETY: live (type invariant); reads atomics.
        unsafe { bindings::folio_likely_mapped_shared(self.as_ptr()) }
    }
}
