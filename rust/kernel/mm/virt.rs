// SPDX-License-Identifier: GPL-2.0

//! Virtual memory areas.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).
//!
//! A [`Vma`] is a VMA kept alive by a lock above it (the mmap lock of its
//! mm, or the i_mmap lock of its file); a [`WriteLockedVma`] one that
//! `vma_start_write()` locked under the mmap write lock. See the
//! [lock order](crate::mm#lock-order).

use crate::mm::folio::LockedFolio;
use crate::mm::pgtable::{Pmd, PteRange};
use crate::mm::read_once;
use crate::mm::rmap::{AnonVma, Mapping};
use crate::mm::{HPAGE_PMD_MASK, HPAGE_PMD_ORDER, HPAGE_PMD_SIZE};
use crate::types::Opaque;
use crate::{bindings, ffi::c_ulong};
use core::{marker::PhantomData, ptr::NonNull};

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
    pub(super) vma: Vma<'a>,
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

/// What keeps a [`Vma`] alive, which decides what it can reach: one type
/// per access level, as mainline's `VmaRef` (mmap or VMA read lock) and
/// `VmaNew` are. Sealed: only the two levels below exist.
pub trait VmaAccess: private::Sealed + Copy {}

/// Found under the mmap lock of its mm ([`MmapLocked::vma_lookup`]): in
/// the mm's VMA tree for the borrow, so nothing tears it down; its
/// `anon_vma` can be reached ([`MmapLocked::anon_vma`]) and its page tables
/// changed as a fault would ([`Vma::map_file_folio`]). Mainline's `VmaRef`.
///
/// [`MmapLocked::vma_lookup`]: crate::mm::MmapLocked::vma_lookup
/// [`MmapLocked::anon_vma`]: crate::mm::MmapLocked::anon_vma
#[derive(Clone, Copy)]
pub enum Mmap {}

/// Found in a file's interval tree under `i_mmap_rwsem`
/// ([`IMmapReadGuard::vmas`]) or reached through a [`Pmd`]: valid, and its
/// upper page-table levels stay, but the VMA may be unmapped meanwhile:
/// its `anon_vma` can be freed under it, so only `has_anon_vma()` is
/// offered, and its flags and bounds are read racily, as C does.
///
/// [`IMmapReadGuard::vmas`]: crate::mm::rmap::IMmapReadGuard::vmas
#[derive(Clone, Copy)]
pub enum Rmap {}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Mmap {}
    impl Sealed for super::Rmap {}
}

impl VmaAccess for Mmap {}
impl VmaAccess for Rmap {}

/// A VMA kept alive by a lock: the mmap lock of its mm ([`Mmap`], the
/// default), or the i_mmap lock of the file it maps, while it is in that
/// file's interval tree ([`Rmap`]).
///
/// # Invariants
///
/// `vma` points to a VMA that stays valid, and in its mm's VMA tree (for
/// [`Mmap`]) or its mm's or its file's tree (for [`Rmap`]), for `'a`.
#[derive(Clone, Copy)]
pub struct Vma<'a, A: VmaAccess = Mmap> {
    pub(super) vma: NonNull<bindings::vm_area_struct>,
    pub(super) _lock: PhantomData<(&'a (), A)>,
}

impl<'a> Vma<'a> {
    /// The VMA at the weaker [`Rmap`] level (what a [`Pmd`] keeps).
    #[inline]
    pub fn as_rmap(&self) -> Vma<'a, Rmap> {
        // INVARIANT: in the mm's tree, so in one of the trees.
        Vma {
            vma: self.vma,
            _lock: PhantomData,
        }
    }

    /// `do_set_pmd()`: maps the locked, PMD-sized page-cache `folio` by a
    /// huge entry at `pmd`, taking a reference for the mapping; `false`
    /// (and nothing done) unless `pmd` is this VMA's and `folio` the page
    /// cache's folio for its range, or if the entry is not empty, the folio
    /// not PMD-sized or the VMA unsuitable (which `do_set_pmd()` checks
    /// under the PMD lock).
    #[inline]
    pub fn map_file_folio(&self, pmd: &Pmd<'_>, folio: &LockedFolio<'_>) -> bool {
        if pmd.vma.vma != self.vma
            || self.mapping().map(|m| m.as_ptr()) != Some(folio.mapping)
            || folio.index != self.linear_page_index(pmd.haddr)
        {
            return false;
        }
        let mut vmf = bindings::vm_fault::default();
        vmf.__bindgen_anon_1.vma = self.as_ptr();
        vmf.__bindgen_anon_1.address = pmd.haddr;
        vmf.pmd = pmd.as_ptr();
        // SAFETY: the folio is locked and referenced, and the page cache's
        // for the range (checked above), `pmd` is the entry for `haddr` in
        // this VMA's mm, and the mmap lock is held (type invariant):
        // do_set_pmd()'s contract. It checks the entry and the folio's order
        // under the PMD lock.
        if unsafe { bindings::do_set_pmd(&mut vmf, folio.page(0)) } != 0 {
            return false;
        }
        folio.get_for_mapping();
        true
    }
}

impl<'a, A: VmaAccess> Vma<'a, A> {
    /// Returns the raw VMA pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.vma.as_ptr()
    }

    /// `READ_ONCE(vma->anon_vma)`, not to be dereferenced: a VMA reached
    /// without its mmap lock (from an i_mmap walk) can be unmapped, and its
    /// anon_vma freed, at any time. [`MmapLocked::anon_vma`] hands out the
    /// anon_vma itself.
    ///
    /// [`MmapLocked::anon_vma`]: crate::mm::MmapLocked::anon_vma
    #[inline]
    pub(super) fn raw_anon_vma(&self) -> *mut bindings::anon_vma {
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
    pub(super) unsafe fn anon_vma_pinned<'b>(&self) -> Option<AnonVma<'b>> {
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

    /// `thp_vma_allowable_order(vma, vma->vm_flags, tva_flags, PMD_ORDER)`:
    /// whether a PMD-sized THP may map this VMA, obeying the sysfs THP
    /// settings (`TVA_ENFORCE_SYSFS`) if `enforce_sysfs`.
    #[inline]
    pub fn thp_pmd_allowed(&self, enforce_sysfs: bool) -> bool {
        let tva_flags = if enforce_sysfs {
            bindings::TVA_ENFORCE_SYSFS as c_ulong
        } else {
            0
        };
        // SAFETY: the VMA is valid (type invariant).
        unsafe {
            bindings::thp_vma_allowable_order(
                self.as_ptr(),
                self.flags(),
                tva_flags,
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

    /// `linear_page_index(vma, addr)`: the file offset, in pages, that
    /// `addr` maps.
    #[inline]
    pub fn linear_page_index(&self, addr: c_ulong) -> c_ulong {
        // SAFETY: the VMA is valid (type invariant).
        unsafe { bindings::linear_page_index(self.as_ptr(), addr) }
    }

    /// `add_mm_counter(vma->vm_mm, member, value)`: adjusts an rss counter
    /// of the VMA's mm.
    #[inline]
    pub fn add_mm_counter(&self, member: i32, value: i64) {
        // SAFETY: a VMA's mm outlives it; a per-cpu counter.
        unsafe { bindings::add_mm_counter(self.mm(), member, value as _) };
    }

    /// `mmu_notifier_test_young(vma->vm_mm, addr)`: whether a secondary
    /// MMU (KVM, ...) used the page at `addr` lately.
    #[inline]
    pub fn mmu_notifier_test_young(&self, addr: c_ulong) -> bool {
        // SAFETY: a VMA's mm outlives it.
        unsafe { bindings::mmu_notifier_test_young(self.mm(), addr) != 0 }
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

    /// Takes a reference on the file the VMA maps (`get_file()`), if any.
    #[inline]
    pub fn get_file(&self) -> Option<FileRef> {
        // SAFETY: the VMA is valid (type invariant); `vm_file` is set for
        // the VMA's life.
        let file = NonNull::new(unsafe { (*self.as_ptr()).vm_file })?;
        // SAFETY: the VMA's own reference keeps the file live meanwhile.
        unsafe { bindings::get_file(file.as_ptr()) };
        // INVARIANT: referenced just now.
        Some(FileRef(file))
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

    /// `atomic_read(&vma->vm_mm->mm_users)`: the users of the VMA's mm,
    /// 0 once it is exiting (the mm itself stays while the VMA does).
    #[inline]
    pub fn mm_users(&self) -> i32 {
        // SAFETY: a VMA's mm outlives it; `mm_users` is an `atomic_t`.
        unsafe { read_once(&(*self.mm()).__bindgen_anon_1.mm_users.counter) }
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
    /// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm};
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
        {
            return None;
        }
        let (pmd, vma) = self.pmd_entry(haddr)?;
        // INVARIANT: the entry maps `haddr` and stays in place for `'a`
        // (`pmd_entry`); the PMD range was checked above.
        Some(Pmd { pmd, vma, haddr })
    }

    /// The PMD entry for `addr`, an address of the VMA, and the VMA at the
    /// [`Rmap`] level, for [`Vma::find_pmd`] and [`Vma::find_pte_range`]:
    /// `None` for a VMA that can have PUD-level leaves or where the upper
    /// levels are not tables.
    ///
    /// The entry stays in place for `'a`, in a PMD table (the PUD entry
    /// above is a table, not a leaf), in a VMA that has no PUD-level
    /// leaves.
    #[inline]
    fn pmd_entry(&self, addr: c_ulong) -> Option<(NonNull<bindings::pmd_t>, Vma<'a, Rmap>)> {
        if self.may_have_pud_leaves() {
            return None;
        }
        // SAFETY: the mm is live; its upper page-table levels for the VMA's
        // range stay while the VMA is in its trees (type invariant), which
        // is all the walk reads.
        let pmd = NonNull::new(unsafe { bindings::mm_find_pmd_table(self.mm(), addr) })?;
        let vma = Vma {
            vma: self.vma,
            // INVARIANT: in one of the trees (type invariant).
            _lock: PhantomData,
        };
        Some((pmd, vma))
    }

    /// The entries of one PTE table that map `[start, end)`: `start` and
    /// `end` page-aligned, `start < end`, the range inside the VMA and
    /// within one PMD range (a whole one, or the part of one that a VMA not
    /// aligned to PMDs covers). As [`Vma::find_pmd`], `None` for a VMA that
    /// can have PUD-level leaves or where the upper levels are not tables.
    #[inline]
    pub fn find_pte_range(&self, start: c_ulong, end: c_ulong) -> Option<PteRange<'a>> {
        let page_mask = bindings::PAGE_SIZE as c_ulong - 1;
        if (start | end) & page_mask != 0
            || !self.contains_range(start, end)
            || start & HPAGE_PMD_MASK != (end - 1) & HPAGE_PMD_MASK
        {
            return None;
        }
        let (pmd, vma) = self.pmd_entry(start)?;
        // INVARIANT: the entry maps `start` and stays in place for `'a`
        // (`pmd_entry`); the range was checked above.
        Some(PteRange {
            pmd,
            vma,
            start,
            end,
        })
    }
}

/// A `struct file`, borrowed: the borrow stands for a reference someone
/// holds (the 6.12 kernel crate has no file abstraction yet; mainline's is
/// `kernel::fs::File`).
///
/// # Invariants
///
/// The wrapped file is live, with its `f_mapping`, for as long as the
/// `&File` is.
#[repr(transparent)]
pub struct File(Opaque<bindings::file>);

impl File {
    /// Borrows the file at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a file on which a reference is held for `'a`.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::file) -> &'a Self {
        // SAFETY: a transparent wrapper of a file live for `'a` (safety
        // requirements).
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw file pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// The file's page cache (`f_mapping`).
    #[inline]
    pub fn mapping(&self) -> Option<Mapping<'_>> {
        // SAFETY: the file is live (type invariant); `f_mapping` is set
        // when it is opened.
        let mapping = NonNull::new(unsafe { (*self.as_ptr()).f_mapping })?;
        // INVARIANT: the file, and so its mapping, is pinned by the borrow.
        Some(Mapping {
            mapping,
            _pin: PhantomData,
        })
    }
}

/// A reference on a file (`get_file()`), dropped with `fput()`.
///
/// # Invariants
///
/// This owns one reference on the file it points to.
#[must_use = "the reference is dropped at once otherwise"]
pub struct FileRef(NonNull<bindings::file>);

impl core::ops::Deref for FileRef {
    type Target = File;

    #[inline]
    fn deref(&self) -> &File {
        // SAFETY: referenced by this object (type invariant).
        unsafe { File::from_raw(self.0.as_ptr()) }
    }
}

impl Drop for FileRef {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}
