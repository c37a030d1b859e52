// SPDX-License-Identifier: GPL-2.0

//! khugepaged scan results, from the C `enum scan_result` in
//! `mm/khugepaged_scan.h`, the one definition both
//! implementations use. The Rust code passes them as [`ScanResult`]
//! (`Ok` for `SCAN_SUCCEED`), converted to and from the C values only at
//! the C boundary ([`to_c`], [`from_c`]).

use kernel::bindings;

/// `PAGE_SIZE`, in the type addresses have.
pub(crate) const PAGE_SIZE: kernel::ffi::c_ulong = bindings::PAGE_SIZE as kernel::ffi::c_ulong;

pub(crate) use crate::khugepaged_c::{scan_abort, CollapseControl, MaxPtes};
pub(crate) use kernel::mm::{count_vm_event as count_event, warn_on_once};

/// Why a scan or a collapse did not succeed: a value of the C
/// `enum scan_result` other than `SCAN_SUCCEED`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ScanError(bindings::scan_result);

/// What a scan or a collapse step gives: `Ok` is `SCAN_SUCCEED`.
pub(crate) type ScanResult<T = ()> = Result<T, ScanError>;

/// Converts a result to the C `enum scan_result` value, for the C side
/// (the entry points, tracepoints, `impl_stats`).
pub(crate) fn to_c(result: ScanResult) -> bindings::scan_result {
    match result {
        Ok(()) => bindings::scan_result_SCAN_SUCCEED,
        Err(ScanError(value)) => value,
    }
}

/// Converts a C `enum scan_result` value (from a C function) to a result.
pub(crate) fn from_c(value: bindings::scan_result) -> ScanResult {
    if value == bindings::scan_result_SCAN_SUCCEED {
        Ok(())
    } else {
        Err(ScanError(value))
    }
}

macro_rules! scan_errors {
    ($($name:ident => $c:ident),* $(,)?) => {
        $(
            #[allow(dead_code)]
            pub(crate) const $name: ScanError = ScanError(bindings::$c);
        )*
    };
}

scan_errors! {
    SCAN_FAIL => scan_result_SCAN_FAIL,
    SCAN_PMD_NULL => scan_result_SCAN_PMD_NULL,
    SCAN_PMD_NONE => scan_result_SCAN_PMD_NONE,
    SCAN_PMD_MAPPED => scan_result_SCAN_PMD_MAPPED,
    SCAN_PTE_NON_PRESENT => scan_result_SCAN_PTE_NON_PRESENT,
    SCAN_PTE_UFFD_WP => scan_result_SCAN_PTE_UFFD_WP,
    SCAN_PAGE_NULL => scan_result_SCAN_PAGE_NULL,
    SCAN_PAGE_COMPOUND => scan_result_SCAN_PAGE_COMPOUND,
    SCAN_VMA_CHECK => scan_result_SCAN_VMA_CHECK,
    SCAN_PTE_ANON_COW => scan_result_SCAN_PTE_ANON_COW,
    SCAN_PTE_MAPPED_HUGEPAGE => scan_result_SCAN_PTE_MAPPED_HUGEPAGE,
    SCAN_EXCEED_NONE_PTE => scan_result_SCAN_EXCEED_NONE_PTE,
    SCAN_EXCEED_SWAP_PTE => scan_result_SCAN_EXCEED_SWAP_PTE,
    SCAN_SCAN_ABORT => scan_result_SCAN_SCAN_ABORT,
    SCAN_PAGE_LRU => scan_result_SCAN_PAGE_LRU,
    SCAN_PAGE_COUNT => scan_result_SCAN_PAGE_COUNT,
    SCAN_PAGE_ANON => scan_result_SCAN_PAGE_ANON,
    SCAN_PAGE_LOCK => scan_result_SCAN_PAGE_LOCK,
    SCAN_PAGE_RO => scan_result_SCAN_PAGE_RO,
    SCAN_EXCEED_SHARED_PTE => scan_result_SCAN_EXCEED_SHARED_PTE,
    SCAN_LACK_REFERENCED_PAGE => scan_result_SCAN_LACK_REFERENCED_PAGE,
    SCAN_DEL_PAGE_LRU => scan_result_SCAN_DEL_PAGE_LRU,
    SCAN_ALLOC_HUGE_PAGE_FAIL => scan_result_SCAN_ALLOC_HUGE_PAGE_FAIL,
    SCAN_VMA_NULL => scan_result_SCAN_VMA_NULL,
    SCAN_COPY_MC => scan_result_SCAN_COPY_MC,
}
