// SPDX-License-Identifier: GPL-2.0

//! Folios: a locked page-cache folio found through a VMA
//! ([`LockedFolio`]) and a freshly allocated one ([`NewFolio`]).
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::virt::Vma;
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
