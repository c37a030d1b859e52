// SPDX-License-Identifier: GPL-2.0

//! `hpage_collapse_scan_file()`: decide whether the PMD-sized range of a
//! file or shmem mapping that starts at page `start` can be collapsed, and
//! collapse it with the C `collapse_file()`.
//!
//! Same checks, results, counters and tracepoint as the C reference in
//! `mm/khugepaged.c` (6.12). The page cache is walked under RCU, without
//! the mmap lock (the caller dropped it and holds a file reference): swap
//! entries are counted against `max_ptes_swap` (khugepaged only), a
//! PMD-sized folio at `start` means the range is already a THP
//! (`SCAN_PTE_MAPPED_HUGEPAGE`, for `collapse_pte_mapped_thp()`), and
//! every other folio must be on the LRU with no reference beyond its
//! mappings and the page cache, from a node the NUMA policy lets us use.

use kernel::bindings;
use kernel::ffi::{c_int, c_ulong};
use kernel::mm::folio::Folio;
use kernel::mm::rmap::PageCacheEntry;
use kernel::mm::virt::File;
use kernel::mm::{Mm, HPAGE_PMD_NR, HPAGE_PMD_ORDER};

use crate::khugepaged_c;

use crate::scan::*;

/// `is_refcount_suitable()`: the folio has no reference beyond its
/// mappings, the page (or swap) cache and its private data. Racy, as in
/// C: the collapse repeats it.
#[inline]
pub(crate) fn is_refcount_suitable(folio: &Folio) -> bool {
    let mut expected = folio.mapcount();
    if !folio.is_anon() || folio.is_swapcache() {
        expected += folio.nr_pages() as c_int;
    }
    if folio.has_private() {
        expected += 1;
    }
    folio.ref_count() == expected
}

/// Rust `hpage_collapse_scan_file()`: see the module documentation.
/// As the C function: the caller holds a reference on `file` and no mmap
/// lock; `mm` maps `file` at `addr` (for `collapse_file()` and the
/// tracepoint).
pub(crate) fn hpage_collapse_scan_file(
    mm: &Mm,
    addr: c_ulong,
    file: &File,
    start: c_ulong,
    cc: &mut CollapseControl,
) -> ScanResult {
    let Some(mapping) = file.mapping() else {
        return Err(SCAN_FAIL);
    };
    let last = start + HPAGE_PMD_NR as c_ulong - 1;
    let mut present: c_int = 0;
    let mut swap: c_int = 0;
    let mut result = Ok(());
    let mut failed_pfn: c_ulong = !0;

    cc.node_load = [0; bindings::MAX_NUMNODES as usize];
    cc.alloc_nmask = Default::default();

    let mut xas = mapping.walk(start);
    while let Some(entry) = xas.next(last) {
        let folio = match entry {
            PageCacheEntry::Value { order } => {
                swap += 1 << order;
                if cc.is_khugepaged && swap > MaxPtes::read().swap {
                    result = Err(SCAN_EXCEED_SWAP_PTE);
                    count_event(bindings::vm_event_item_THP_SCAN_EXCEED_SWAP_PTE);
                    break;
                }
                continue;
            }
            PageCacheEntry::Folio(folio) => folio,
        };
        if folio.order() == HPAGE_PMD_ORDER && folio.index() == start {
            // Maybe PMD-mapped: the caller's collapse_pte_mapped_thp()
            // does not touch the page cache, so the LRU and refcount
            // checks can be skipped.
            result = Err(SCAN_PTE_MAPPED_HUGEPAGE);
            failed_pfn = folio.pfn();
            break;
        }

        let node = folio.nid();
        if scan_abort(node, cc) {
            result = Err(SCAN_SCAN_ABORT);
            failed_pfn = folio.pfn();
            break;
        }
        cc.node_load[node as usize] += 1;

        if !folio.is_lru() {
            result = Err(SCAN_PAGE_LRU);
            failed_pfn = folio.pfn();
            break;
        }
        if !is_refcount_suitable(folio) {
            result = Err(SCAN_PAGE_COUNT);
            failed_pfn = folio.pfn();
            break;
        }
        // Whether the folio is referenced is not checked: nobody
        // transfers pte_young() to it, and an rmap walk is too costly.
        present += folio.nr_pages() as c_int;

        // SAFETY: the walk's section is the only one open: the C callers
        // of hpage_collapse_scan_file() hold none, and the scan maps no PTE
        // table.
        unsafe { xas.pause_resched() };
    }
    // rcu_read_unlock().
    drop(xas);

    if result.is_ok() {
        if cc.is_khugepaged && present < HPAGE_PMD_NR as c_int - MaxPtes::read().none {
            result = Err(SCAN_EXCEED_NONE_PTE);
            count_event(bindings::vm_event_item_THP_SCAN_EXCEED_NONE_PTE);
        } else {
            result = khugepaged_c::collapse_file(mm, addr, file, start, cc);
        }
    }

    khugepaged_c::trace_scan_file(mm, failed_pfn, file, present, swap, result);
    result
}
