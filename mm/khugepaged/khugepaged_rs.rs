// SPDX-License-Identifier: GPL-2.0

//! stub
use kernel::bindings;

/// stub
#[no_mangle]
pub unsafe extern "C" fn rust_collapse_pte_mapped_thp(
    _mm: *mut bindings::mm_struct,
    _addr: core::ffi::c_ulong,
    _install_pmd: bool,
) -> core::ffi::c_int {
    bindings::scan_result_SCAN_FAIL as _
}
