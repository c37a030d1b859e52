// SPDX-License-Identifier: GPL-2.0

//! khugepaged scan results, from the C `enum scan_result` in
//! `include/linux/khugepaged_scan.h`, the one definition both
//! implementations use.

use kernel::bindings;

/// `PAGE_SIZE`, in the type addresses have.
pub(crate) const PAGE_SIZE: kernel::ffi::c_ulong = bindings::PAGE_SIZE as kernel::ffi::c_ulong;

/// `count_vm_event(item)`.
pub(crate) fn count_event(item: bindings::vm_event_item) {
    // SAFETY: no requirements.
    unsafe { bindings::count_vm_event(item) };
}

/// A khugepaged scan result (`enum scan_result`).
pub(crate) type ScanResult = bindings::scan_result;

macro_rules! scan_results {
    ($($name:ident => $c:ident),* $(,)?) => {
        $(
            #[allow(dead_code)]
            pub(crate) const $name: ScanResult = bindings::$c;
        )*
    };
}

scan_results! {
    SCAN_FAIL => scan_result_SCAN_FAIL,
    SCAN_SUCCEED => scan_result_SCAN_SUCCEED,
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

/// What khugepaged's checks need to know of one PTE value (C `enum
/// khugepaged_pte_flags`), read with one helper call instead of one per
/// static inline.
#[derive(Clone, Copy)]
pub(crate) struct PteFlags(u32);

impl PteFlags {
    /// Classifies `pte`.
    #[inline]
    pub(crate) fn of(pte: bindings::pte_t) -> Self {
        // SAFETY: only looks at the value.
        Self(unsafe { bindings::khugepaged_pte_flags(pte) })
    }

    #[inline]
    fn has(self, flag: bindings::khugepaged_pte_flags) -> bool {
        self.0 & flag != 0
    }

    /// `pte_none()`.
    #[inline]
    pub(crate) fn none(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_NONE)
    }

    /// `pte_present()`.
    #[inline]
    pub(crate) fn present(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_PRESENT)
    }

    /// `is_swap_pte()`: neither none nor present.
    #[inline]
    pub(crate) fn swap(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_SWAP)
    }

    /// Present and mapping the zero page.
    #[inline]
    pub(crate) fn zero(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_ZERO)
    }

    /// `pte_none_or_zero()`: empty, or a present entry of the zero page
    /// (a swap entry is neither, whatever `pte_pfn()` makes of it).
    #[inline]
    pub(crate) fn none_or_zero(self) -> bool {
        self.none() || self.zero()
    }

    /// `pte_uffd_wp()` of a present entry, `pte_swp_uffd_wp_any()` of a
    /// swap entry.
    #[inline]
    pub(crate) fn uffd_wp(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_UFFD_WP)
    }

    /// `pte_write()` of a present entry.
    #[inline]
    pub(crate) fn write(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_WRITE)
    }

    /// `pte_young()` of a present entry.
    #[inline]
    pub(crate) fn young(self) -> bool {
        self.has(bindings::khugepaged_pte_flags_KHUGEPAGED_PTE_YOUNG)
    }
}
