// SPDX-License-Identifier: GPL-2.0

//! khugepaged's collapse path in Rust.
//!
//! The C implementation in `mm/khugepaged.c` stays as the reference; which
//! one runs is chosen by `khugepaged_impl=` and
//! `/sys/kernel/mm/transparent_hugepage/khugepaged/impl`. C calls into this
//! crate through the `#[no_mangle]` functions below, declared in
//! `mm/khugepaged_scan.h`.
//!
//! This file is the C boundary, both ways: the entry points turn the raw
//! pointers C passes into the [`kernel::mm`] types their contracts stand
//! for, and [`khugepaged_c`] wraps the C functions of `mm/khugepaged.c`
//! that the Rust side calls (the allocation, revalidation, swap-in,
//! `collapse_file()`, the dispatchers, tracepoints and the scan cursor) in
//! safe functions whose argument types carry those functions' contracts.
//! The rest of the crate is written against these and `kernel::mm`.
//!
//! # Lock order
//!
//! mmap_lock -> folio lock -> i_mmap_rwsem -> (anon_vma ->) pmd lock ->
//! pte lock, as in `mm/rmap.c`. All locks are taken through the guards in
//! [`kernel::mm`], whose types encode this order; see that module.

mod collapse;
mod collapse_anon;
mod retract;
mod scan;
mod scan_file;
mod scan_pmd;
mod scan_slot;
mod unmap;

use core::ptr::NonNull;
use kernel::{
    bindings,
    ffi::{c_int, c_long, c_uint, c_ulong},
    mm::rmap::Mapping,
    mm::virt::File,
    mm::{Mm, MmapLocked, MmapReadGuard},
    sync::handoff::SpinlockHandoff,
};

/// Rust `collapse_pte_mapped_thp()`: same contract and results as the C
/// one (see `mm/khugepaged.c`).
///
/// # Safety
///
/// `mm` must point to a live `mm_struct` whose mmap lock the caller holds
/// (read or write) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn rust_collapse_pte_mapped_thp(
    mm: *mut bindings::mm_struct,
    addr: c_ulong,
    install_pmd: bool,
) -> c_int {
    if mm.is_null() {
        return scan::to_c(Err(scan::SCAN_FAIL)) as c_int;
    }
    // SAFETY: live, and its mmap lock held by the caller, for this call.
    let mmap = unsafe { MmapLocked::assert_held(Mm::from_raw(mm)) };
    scan::to_c(collapse::collapse_pte_mapped_thp(&mmap, addr, install_pmd)) as c_int
}

/// Rust `retract_page_tables()`: same contract as the C one (see
/// `mm/khugepaged.c`); returns the number of page tables removed.
///
/// # Safety
///
/// `mapping` must point to the `address_space` of a file the caller holds
/// a reference on, and the caller (`collapse_file()`) must hold the lock of
/// the PMD-sized folio at `pgoff` it has just added to it, and no lock
/// below the folio lock.
#[no_mangle]
pub unsafe extern "C" fn rust_retract_page_tables(
    mapping: *mut bindings::address_space,
    pgoff: c_ulong,
) -> c_long {
    let Some(mapping) = NonNull::new(mapping) else {
        return 0;
    };
    // SAFETY: the caller's file reference keeps the mapping live.
    let mapping = unsafe { Mapping::from_raw(mapping) };
    retract::retract_page_tables(&mapping, pgoff)
}

/// `collapse_file()`'s `unmap_file_range` (see `struct khugepaged_impl_ops`
/// in `mm/khugepaged.c`): unmaps the small folios of file pages `[start,
/// end)` of `mapping` from every VMA; returns how many entries it unmapped.
///
/// # Safety
///
/// `mapping` must point to the `address_space` of a file the caller holds
/// a reference on, and the caller must hold no spinlock, no RCU read-side
/// section and no lock below the folio lock.
#[no_mangle]
pub unsafe extern "C" fn rust_unmap_file_range(
    mapping: *mut bindings::address_space,
    start: c_ulong,
    end: c_ulong,
) -> c_long {
    let Some(mapping) = NonNull::new(mapping) else {
        return 0;
    };
    // SAFETY: the caller's file reference keeps the mapping live.
    let mapping = unsafe { Mapping::from_raw(mapping) };
    unmap::unmap_file_range(&mapping, start, end) as c_long
}

/// Rust `hpage_collapse_scan_file()`: same contract and results as the C
/// one (see `mm/khugepaged.c`).
///
/// # Safety
///
/// `file` must be referenced by the caller, who holds no mmap lock, `cc`
/// must point to the caller's collapse control, and `mm` must map `file`
/// at `addr`.
#[no_mangle]
pub unsafe extern "C" fn rust_hpage_collapse_scan_file(
    mm: *mut bindings::mm_struct,
    addr: c_ulong,
    file: *mut bindings::file,
    start: c_ulong,
    cc: *mut bindings::collapse_control,
) -> c_int {
    if mm.is_null() || file.is_null() || cc.is_null() {
        return scan::to_c(Err(scan::SCAN_FAIL)) as c_int;
    }
    // SAFETY: by this function's safety requirements; `cc` is the caller's,
    // not used elsewhere during the call.
    let (mm, file, cc) = unsafe { (Mm::from_raw(mm), File::from_raw(file), &mut *cc) };
    scan::to_c(scan_file::hpage_collapse_scan_file(
        mm, addr, file, start, cc,
    )) as c_int
}

/// Rust `khugepaged_scan_mm_slot()`: same contract as the C one (see
/// `mm/khugepaged.c`).
///
/// # Safety
///
/// Only for the khugepaged thread's `khugepaged_do_scan()`: called with
/// `khugepaged_mm_lock` held and a non-empty mm slot list, `result` and
/// `cc` pointing to the caller's; returns with the lock held again.
#[no_mangle]
pub unsafe extern "C" fn rust_khugepaged_scan_mm_slot(
    pages: c_uint,
    result: *mut c_int,
    cc: *mut bindings::collapse_control,
) -> c_uint {
    let (Some(result), Some(mut cc)) = (NonNull::new(result), NonNull::new(cc)) else {
        return 0;
    };
    // SAFETY: the caller holds khugepaged_mm_lock, a static spinlock.
    let held = unsafe {
        SpinlockHandoff::assert_held(NonNull::new_unchecked(core::ptr::addr_of_mut!(
            bindings::khugepaged_mm_lock
        )))
    };
    let mut res = Err(scan::SCAN_FAIL);
    let mut addr = 0;
    // SAFETY: khugepaged_mm_lock is held, the slot list is not empty.
    let mm = unsafe { bindings::khugepaged_scan_cursor(&mut addr) };
    let progress = if mm.is_null() {
        held.hand_back();
        0
    } else {
        // SAFETY: the cursor's slot keeps a reference on its mm (mm_count)
        // until khugepaged_scan_advance() moves on; this is the khugepaged
        // thread, under khugepaged_mm_lock.
        let cursor = unsafe { khugepaged_c::ScanCursor::new(Mm::from_raw(mm), addr) };
        // SAFETY: `cc` is the caller's, not used elsewhere during the call.
        let (progress, held) = scan_slot::khugepaged_scan_mm_slot(
            pages,
            &mut res,
            unsafe { cc.as_mut() },
            held,
            cursor,
        );
        held.hand_back();
        progress
    };
    // SAFETY: `result` points to the caller's int.
    unsafe { result.as_ptr().write(scan::to_c(res) as c_int) };
    progress
}

/// Rust `hpage_collapse_scan_pmd()`: same contract and results as the C
/// one (see `mm/khugepaged.c`).
///
/// # Safety
///
/// The caller holds `mm`'s mmap lock for reading; `vma` is a VMA of `mm`
/// covering the PMD-aligned `address`; `mmap_locked` and `cc` point to the
/// caller's. `*mmap_locked` says on return whether the lock is still held.
#[no_mangle]
pub unsafe extern "C" fn rust_hpage_collapse_scan_pmd(
    mm: *mut bindings::mm_struct,
    vma: *mut bindings::vm_area_struct,
    address: c_ulong,
    mmap_locked: *mut bool,
    cc: *mut bindings::collapse_control,
) -> c_int {
    if mm.is_null() || vma.is_null() || mmap_locked.is_null() || cc.is_null() {
        return scan::to_c(Err(scan::SCAN_FAIL)) as c_int;
    }
    // SAFETY: live, and read-locked by the caller, who lends us the lock:
    // it is handed back below or released by collapse_huge_page().
    let mmap = unsafe { MmapReadGuard::adopt(Mm::from_raw(mm)) };
    // SAFETY: `cc` is the caller's, not used elsewhere during the call.
    let cc = unsafe { &mut *cc };
    let (result, back) = scan_pmd::hpage_collapse_scan_pmd(
        mmap,
        // SAFETY: `vma` is a VMA of `mm` (safety requirements).
        |mmap| unsafe { mmap.vma_from_raw(NonNull::new_unchecked(vma)) },
        address,
        cc,
    );
    // The lock goes back to the caller if it was not released.
    let locked = back.map(core::mem::forget).is_some();
    // SAFETY: `mmap_locked` points to the caller's bool.
    unsafe { mmap_locked.write(locked) };
    scan::to_c(result) as c_int
}

/// Rust `collapse_huge_page()`: same contract and results as the C one
/// (see `mm/khugepaged.c`).
///
/// # Safety
///
/// The caller holds `mm`'s mmap lock for reading, which this function
/// releases, and keeps `mm` live; `address` is PMD-aligned; `cc` points
/// to the caller's collapse control.
#[no_mangle]
pub unsafe extern "C" fn rust_collapse_huge_page(
    mm: *mut bindings::mm_struct,
    address: c_ulong,
    referenced: c_int,
    unmapped: c_int,
    cc: *mut bindings::collapse_control,
) -> c_int {
    if mm.is_null() || cc.is_null() {
        return scan::to_c(Err(scan::SCAN_FAIL)) as c_int;
    }
    // SAFETY: live, and read-locked by the caller, who hands the lock over.
    let mmap = unsafe { MmapReadGuard::adopt(Mm::from_raw(mm)) };
    // SAFETY: `cc` is the caller's, not used elsewhere during the call.
    let cc = unsafe { &mut *cc };
    scan::to_c(collapse_anon::collapse_huge_page(
        mmap, address, referenced, unmapped, cc,
    )) as c_int
}

/// Safe wrappers of the C functions of `mm/khugepaged.c` that the Rust
/// side calls: each takes the types that prove its C contract (a held
/// mmap lock, a live mm or file, the caller's collapse control) and returns
/// typed results.
pub(crate) mod khugepaged_c {
    use crate::scan::{from_c, to_c, ScanResult, SCAN_ALLOC_HUGE_PAGE_FAIL, SCAN_VMA_NULL};
    use core::ptr::NonNull;
    use kernel::bindings;
    use kernel::ffi::{c_int, c_ulong};
    use kernel::mm::folio::NewFolio;
    use kernel::mm::pgtable::Pmd;
    use kernel::mm::virt::{File, Vma};
    use kernel::mm::{Mm, MmapLocked, MmapReadGuard};
    use kernel::sync::handoff::SpinlockHandoff;

    /// The collapse control of the caller (`struct collapse_control`).
    pub(crate) type CollapseControl = bindings::collapse_control;

    /// khugepaged's scan cursor (`khugepaged_scan`): the mm slot the
    /// thread works on and the address to go on from. Only the khugepaged
    /// thread has one (from `rust_khugepaged_scan_mm_slot()`).
    ///
    /// # Invariants
    ///
    /// `mm` is the cursor's, referenced by its slot until [`Self::advance`].
    pub(crate) struct ScanCursor<'a> {
        mm: &'a Mm,
        pub(crate) addr: c_ulong,
    }

    impl<'a> ScanCursor<'a> {
        /// The cursor of the slot `khugepaged_scan_cursor()` returned.
        ///
        /// # Safety
        ///
        /// Only for the khugepaged thread, with `khugepaged_mm_lock` held:
        /// `mm` and `addr` are what `khugepaged_scan_cursor()` returned.
        pub(crate) unsafe fn new(mm: &'a Mm, addr: c_ulong) -> Self {
            // INVARIANT: the cursor's mm (safety requirements).
            Self { mm, addr }
        }

        /// The cursor's mm.
        pub(crate) fn mm(&self) -> &'a Mm {
            self.mm
        }

        /// `khugepaged_scan_advance()`, under `khugepaged_mm_lock`
        /// (`held`): stores the address, and if `done`, moves on to the next
        /// slot (freeing this one if its mm exited).
        pub(crate) fn advance(self, _held: &SpinlockHandoff<'_>, done: bool) {
            // SAFETY: khugepaged_mm_lock is held (the only lock handed off
            // in this crate) and `mm` is the cursor's (type invariant).
            unsafe { bindings::khugepaged_scan_advance(self.mm.as_raw(), self.addr, done) };
        }

        /// `++khugepaged_pages_collapsed`, the thread's own counter.
        pub(crate) fn count_collapsed(&self) {
            // SAFETY: only the khugepaged thread has a cursor.
            unsafe { bindings::khugepaged_count_collapsed() };
        }
    }

    /// `hpage_collapse_test_exit_or_disable(mm)`.
    pub(crate) fn test_exit_or_disable(mm: &Mm) -> bool {
        // SAFETY: `mm` is live.
        unsafe { bindings::khugepaged_test_exit_or_disable(mm.as_raw()) }
    }

    /// `hpage_collapse_scan_abort()`: whether the scan should stop because
    /// a page of node `nid` is too far from those seen so far.
    pub(crate) fn scan_abort(nid: i32, cc: &mut CollapseControl) -> bool {
        // SAFETY: `cc` is a valid collapse control, borrowed for the call.
        unsafe { bindings::hpage_collapse_scan_abort(nid, cc) }
    }

    /// khugepaged's `max_ptes_*` sysfs knobs, as one scan reads them.
    #[derive(Clone, Copy)]
    pub(crate) struct MaxPtes {
        /// `khugepaged_max_ptes_none`: holes allowed in a range.
        pub(crate) none: i32,
        /// `khugepaged_max_ptes_swap`: swapped-out pages allowed.
        pub(crate) swap: i32,
        /// `khugepaged_max_ptes_shared`: pages shared with another process
        /// allowed.
        pub(crate) shared: i32,
    }

    impl MaxPtes {
        /// Reads the knobs, racily as C does (sysfs may change them).
        pub(crate) fn read() -> Self {
            // SAFETY: plain reads of `unsigned int`s that sysfs stores whole.
            unsafe {
                Self {
                    none: bindings::khugepaged_max_ptes_none as i32,
                    swap: bindings::khugepaged_max_ptes_swap as i32,
                    shared: bindings::khugepaged_max_ptes_shared as i32,
                }
            }
        }
    }

    /// `alloc_charge_folio()`: a PMD-sized folio for the collapse, charged
    /// to the memcg of `mm`. Call it without the mmap lock: it may compact.
    pub(crate) fn alloc_charge_folio(mm: &Mm, cc: &mut CollapseControl) -> ScanResult<NewFolio> {
        let mut raw = core::ptr::null_mut();
        // SAFETY: `mm` is live; `raw` and `cc` are ours.
        from_c(unsafe { bindings::alloc_charge_folio(&mut raw, mm.as_raw(), cc) } as _)?;
        let raw = NonNull::new(raw).ok_or(SCAN_ALLOC_HUGE_PAGE_FAIL)?;
        // SAFETY: alloc_charge_folio() hands over a new folio's reference.
        Ok(unsafe { NewFolio::from_raw(raw) })
    }

    /// `hugepage_vma_revalidate()`: after the mmap lock was retaken, the
    /// VMA at `address` if a PMD-sized THP is still allowed there (and it is
    /// anonymous with an anon_vma, if `expect_anon`).
    pub(crate) fn hugepage_vma_revalidate<'a>(
        mmap: &'a MmapLocked<'_>,
        address: c_ulong,
        expect_anon: bool,
        cc: &mut CollapseControl,
    ) -> ScanResult<Vma<'a>> {
        let mut vma = core::ptr::null_mut();
        // SAFETY: the mmap lock is held; `vma` and `cc` are ours.
        from_c(unsafe {
            bindings::hugepage_vma_revalidate(mmap.as_ptr(), address, expect_anon, &mut vma, cc)
        } as _)?;
        let vma = NonNull::new(vma).ok_or(SCAN_VMA_NULL)?;
        // SAFETY: found in the mm's tree under its mmap lock.
        Ok(unsafe { mmap.vma_from_raw(vma) })
    }

    /// `__collapse_huge_page_swapin()` of the PMD range that `find` finds
    /// under the lock: brings swapped-out pages back. It may release the
    /// lock: on success the guard comes back, still held.
    pub(crate) fn collapse_huge_page_swapin<'a>(
        mmap: MmapReadGuard<'a>,
        referenced: c_int,
        find: impl for<'b> FnOnce(&'b MmapLocked<'a>) -> ScanResult<Pmd<'b>>,
    ) -> ScanResult<MmapReadGuard<'a>> {
        let (vma, pmd, address) = {
            let pmd = find(&mmap)?;
            (pmd.vma().as_ptr(), pmd.as_ptr(), pmd.haddr())
        };
        let mut result = Ok(());
        // SAFETY: __collapse_huge_page_swapin() returns SCAN_SUCCEED with
        // the lock still held, anything else with it released; `vma` and
        // `pmd` were found under this lock, which is still held.
        let back = unsafe {
            mmap.lend(|mm| {
                result = from_c(bindings::__collapse_huge_page_swapin(
                    mm, vma, address, pmd, referenced,
                ) as _);
                result.is_ok()
            })
        };
        match back {
            Some(mmap) => Ok(mmap),
            None => result.and(Err(crate::scan::SCAN_FAIL)),
        }
    }

    /// `collapse_huge_page()` through its C dispatcher: takes over the
    /// read lock, which it releases.
    pub(crate) fn collapse_huge_page(
        mmap: MmapReadGuard<'_>,
        address: c_ulong,
        referenced: c_int,
        unmapped: c_int,
        cc: &mut CollapseControl,
    ) -> ScanResult {
        let mut result = Ok(());
        // SAFETY: the read lock is held; collapse_huge_page() returns with
        // it released, whatever the result.
        let back = unsafe {
            mmap.lend(|mm| {
                result = from_c(
                    bindings::collapse_huge_page(mm, address, referenced, unmapped, cc) as _,
                );
                false
            })
        };
        debug_assert!(back.is_none());
        result
    }

    /// `hpage_collapse_scan_pmd()` through its C dispatcher, on the VMA at
    /// `address`: `Err` gives the guard back if there is none; otherwise
    /// the result, and the guard if the lock was not released.
    #[allow(clippy::type_complexity)]
    pub(crate) fn hpage_collapse_scan_pmd<'a>(
        mmap: MmapReadGuard<'a>,
        address: c_ulong,
        cc: &mut CollapseControl,
    ) -> Result<(ScanResult, Option<MmapReadGuard<'a>>), MmapReadGuard<'a>> {
        let Some(vma) = mmap.vma_lookup(address).map(|vma| vma.as_ptr()) else {
            return Err(mmap);
        };
        let mut result = Ok(());
        // SAFETY: hpage_collapse_scan_pmd() reports in `locked` whether it
        // still holds the lock it was lent; `vma` was found under it.
        let back = unsafe {
            mmap.lend(|mm| {
                let mut locked = true;
                result = from_c(
                    bindings::hpage_collapse_scan_pmd(mm, vma, address, &mut locked, cc) as _,
                );
                locked
            })
        };
        Ok((result, back))
    }

    /// `collapse_pte_mapped_thp(mm, addr, install_pmd)` through its C
    /// dispatcher, under the mmap lock.
    pub(crate) fn collapse_pte_mapped_thp(
        mmap: &MmapLocked<'_>,
        addr: c_ulong,
        install_pmd: bool,
    ) -> ScanResult {
        // SAFETY: the mmap lock is held.
        from_c(unsafe { bindings::collapse_pte_mapped_thp(mmap.as_ptr(), addr, install_pmd) } as _)
    }

    /// `hpage_collapse_scan_file()` through its C dispatcher, with no mmap
    /// lock held (the caller's guard was dropped: lockdep checks).
    pub(crate) fn hpage_collapse_scan_file(
        mm: &Mm,
        addr: c_ulong,
        file: &File,
        pgoff: c_ulong,
        cc: &mut CollapseControl,
    ) -> ScanResult {
        // SAFETY: `file` is referenced and `mm` live for the call; `cc` is
        // the caller's.
        from_c(unsafe {
            bindings::hpage_collapse_scan_file(mm.as_raw(), addr, file.as_ptr(), pgoff, cc)
        } as _)
    }

    /// `collapse_file()`: collapses the page-cache range of `file` at page
    /// `start`, mapped by `mm` at `addr`, with no mmap lock held.
    pub(crate) fn collapse_file(
        mm: &Mm,
        addr: c_ulong,
        file: &File,
        start: c_ulong,
        cc: &mut CollapseControl,
    ) -> ScanResult {
        // SAFETY: `file` is referenced and `mm` live for the call; `cc` is
        // the caller's.
        from_c(unsafe { bindings::collapse_file(mm.as_raw(), addr, file.as_ptr(), start, cc) } as _)
    }

    /// The page a tracepoint reports (`page_to_pfn()` of it): that of
    /// `pfn`, or NULL. Only the pointer is computed: the page need not be
    /// live any more.
    fn trace_page(pfn: Option<c_ulong>) -> *mut bindings::page {
        // SAFETY: pointer arithmetic on the memory map, no access.
        pfn.map_or(core::ptr::null_mut(), |pfn| unsafe {
            bindings::pfn_to_page(pfn)
        })
    }

    /// The `mm_khugepaged_scan_pmd` tracepoint.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn trace_scan_pmd(
        mm: &Mm,
        pfn: Option<c_ulong>,
        writable: bool,
        referenced: c_int,
        none_or_zero: c_int,
        result: ScanResult,
        unmapped: c_int,
    ) {
        // SAFETY: the tracepoint only records the values.
        unsafe {
            bindings::khugepaged_trace_scan_pmd(
                mm.as_raw(),
                trace_page(pfn),
                writable,
                referenced,
                none_or_zero,
                to_c(result) as c_int,
                unmapped,
            )
        };
    }

    /// The `mm_collapse_huge_page` tracepoint.
    pub(crate) fn trace_collapse_huge_page(mm: &Mm, isolated: bool, result: ScanResult) {
        // SAFETY: the tracepoint only records the values.
        unsafe {
            bindings::khugepaged_trace_collapse_huge_page(
                mm.as_raw(),
                isolated,
                to_c(result) as c_int,
            )
        };
    }

    /// The `mm_collapse_huge_page_isolate` tracepoint.
    pub(crate) fn trace_collapse_isolate(
        pfn: Option<c_ulong>,
        none_or_zero: c_int,
        referenced: c_int,
        writable: bool,
        result: ScanResult,
    ) {
        // SAFETY: the tracepoint only records the values.
        unsafe {
            bindings::khugepaged_trace_collapse_isolate(
                trace_page(pfn),
                none_or_zero,
                referenced,
                writable,
                to_c(result) as c_int,
            )
        };
    }

    /// The `mm_khugepaged_scan_file` tracepoint.
    pub(crate) fn trace_scan_file(
        mm: &Mm,
        pfn: c_ulong,
        file: &File,
        present: c_int,
        swap: c_int,
        result: ScanResult,
    ) {
        // SAFETY: the tracepoint only records the values; `file` is live.
        unsafe {
            bindings::khugepaged_trace_scan_file(
                mm.as_raw(),
                pfn,
                file.as_ptr(),
                present,
                swap,
                to_c(result) as c_int,
            )
        };
    }
}
