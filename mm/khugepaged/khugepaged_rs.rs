// SPDX-License-Identifier: GPL-2.0

//! khugepaged's collapse path in Rust.
//!
//! The C implementation in `mm/khugepaged.c` stays as the reference; which
//! one runs is chosen by `khugepaged_impl=` and
//! `/sys/kernel/mm/transparent_hugepage/khugepaged/impl`. C calls into this
//! crate through the `#[no_mangle]` functions below, declared in
//! `include/linux/khugepaged_scan.h`.
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

use core::ptr::NonNull;
use kernel::{
    bindings,
    ffi::{c_int, c_long, c_uint, c_ulong},
    mm::rmap::Mapping,
    mm::MmapLocked,
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
    let Some(mm) = NonNull::new(mm) else {
        return scan::SCAN_FAIL as c_int;
    };
    // SAFETY: the caller holds `mm`'s mmap lock for this call.
    let mmap = unsafe { MmapLocked::assert_held(mm) };
    collapse::collapse_pte_mapped_thp(&mmap, addr, install_pmd) as c_int
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
    let (Some(file), Some(mut cc)) = (NonNull::new(file), NonNull::new(cc)) else {
        return scan::SCAN_FAIL as c_int;
    };
    // SAFETY: `cc` is the caller's, not used elsewhere during the call.
    let cc = unsafe { cc.as_mut() };
    // SAFETY: by this function's safety requirements.
    unsafe { scan_file::hpage_collapse_scan_file(mm, addr, file, start, cc) as c_int }
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
    let mut res = scan::SCAN_FAIL;
    // SAFETY: `cc` is the caller's, not used elsewhere during the call.
    let (progress, held) =
        scan_slot::khugepaged_scan_mm_slot(pages, &mut res, unsafe { cc.as_mut() }, held);
    held.hand_back();
    // SAFETY: `result` points to the caller's int.
    unsafe { result.as_ptr().write(res as c_int) };
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
    let (Some(mm), Some(vma), Some(mut locked), Some(mut cc)) = (
        NonNull::new(mm),
        NonNull::new(vma),
        NonNull::new(mmap_locked),
        NonNull::new(cc),
    ) else {
        return scan::SCAN_FAIL as c_int;
    };
    // SAFETY: by this function's safety requirements; `locked` and `cc`
    // are the caller's, not used elsewhere during the call.
    unsafe {
        scan_pmd::hpage_collapse_scan_pmd(mm, vma, address, locked.as_mut(), cc.as_mut()) as c_int
    }
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
    let (Some(mm), Some(mut cc)) = (NonNull::new(mm), NonNull::new(cc)) else {
        return scan::SCAN_FAIL as c_int;
    };
    // SAFETY: by this function's safety requirements; `cc` is the caller's,
    // not used elsewhere during the call.
    unsafe {
        collapse_anon::collapse_huge_page(mm, address, referenced, unmapped, cc.as_mut()) as c_int
    }
}
