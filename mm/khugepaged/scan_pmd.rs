// SPDX-License-Identifier: GPL-2.0

//! `hpage_collapse_scan_pmd()`: decide whether the anonymous PMD range at
//! `address` can be collapsed, and collapse it with `collapse_huge_page()`
//! (through the C dispatcher, which counts the call and runs the selected
//! implementation: the Rust one is in `collapse_anon.rs`).
//!
//! Same rules, results, counters and tracepoint as the C reference in
//! `mm/khugepaged.c` (6.12). Under the caller's mmap read lock, the PTE
//! table is scanned under its lock ([`PteMapLock`]): swap entries against
//! `max_ptes_swap` (uffd-wp ones never allowed), none or zero-page entries
//! against `max_ptes_none` (none at all in a uffd-armed VMA), no uffd-wp
//! PTE, at least one writable PTE, only anonymous LRU folios, unlocked,
//! without extra references, of an allowed node, at most `max_ptes_shared`
//! shared ones, and (for khugepaged) enough young PTEs. Success hands over
//! to `collapse_huge_page()`, which returns with the mmap lock released.
//!
//! [`PteMapLock`]: kernel::mm::pgtable::PteMapLock

use kernel::bindings;
use kernel::ffi::{c_int, c_ulong};
use kernel::mm::virt::Vma;
use kernel::mm::{MmapLocked, MmapReadGuard, HPAGE_PMD_NR};

use crate::khugepaged_c;

use crate::collapse::find_pte_table;
use crate::scan::*;
use crate::scan_file::is_refcount_suitable;

/// What the PTE scan found, for `collapse_huge_page()` and the tracepoint.
struct Scan {
    result: ScanResult,
    referenced: c_int,
    unmapped: c_int,
    none_or_zero: c_int,
    writable: bool,
    /// The pfn of the last folio looked at, if any.
    pfn: Option<c_ulong>,
}

/// The PTE scan, under the PTE lock (released on return).
fn scan_ptes(vma: &Vma<'_>, address: c_ulong, cc: &mut CollapseControl) -> Scan {
    let mut s = Scan {
        result: Err(SCAN_FAIL),
        referenced: 0,
        unmapped: 0,
        none_or_zero: 0,
        writable: false,
        pfn: None,
    };
    let pmd = match find_pte_table(vma, address) {
        Ok(pmd) => pmd,
        Err(e) => {
            s.result = Err(e);
            return s;
        }
    };

    cc.node_load = [0; bindings::MAX_NUMNODES as usize];
    cc.alloc_nmask = Default::default();
    let Some(ptes) = pmd.map_lock() else {
        s.result = Err(SCAN_PMD_NULL);
        return s;
    };
    let max = MaxPtes::read();
    // Each counts entries of the table, at most `HPAGE_PMD_NR`: adding to
    // them cannot overflow.
    let (mut unmapped, mut none_or_zero, mut referenced, mut shared): (c_int, c_int, c_int, c_int) =
        (0, 0, 0, 0);
    let mut writable = false;
    // The last folio looked at, for the tracepoint.
    let mut last = None;

    let result = 'scan: {
        for i in 0..HPAGE_PMD_NR {
            let Some(entry) = ptes.entry(i) else { break };
            let pte = entry.pte();

            if pte.is_swap() {
                unmapped = unmapped.wrapping_add(1);
                if !cc.is_khugepaged || unmapped <= max.swap {
                    // Always strict with uffd-wp swap entries, see below.
                    if pte.uffd_wp() {
                        break 'scan Err(SCAN_PTE_UFFD_WP);
                    }
                    continue;
                }
                count_event(bindings::vm_event_item_THP_SCAN_EXCEED_SWAP_PTE);
                break 'scan Err(SCAN_EXCEED_SWAP_PTE);
            }
            if pte.is_none_or_zero() {
                none_or_zero = none_or_zero.wrapping_add(1);
                if !vma.userfaultfd_armed() && (!cc.is_khugepaged || none_or_zero <= max.none) {
                    continue;
                }
                count_event(bindings::vm_event_item_THP_SCAN_EXCEED_NONE_PTE);
                break 'scan Err(SCAN_EXCEED_NONE_PTE);
            }
            // A uffd-wp armed PTE: marking the huge PMD write-protected could
            // raise userfaults outside the registered range; keep it simple.
            if pte.uffd_wp() {
                break 'scan Err(SCAN_PTE_UFFD_WP);
            }
            writable |= pte.is_write();

            let folio = match entry.normal_folio() {
                Some(folio) if !folio.is_zone_device() => folio,
                _ => break 'scan Err(SCAN_PAGE_NULL),
            };
            // Mapped by the locked table, so live; these checks are racy,
            // as in C, and repeated by collapse_huge_page().
            last = Some(folio);

            if !folio.is_anon() {
                break 'scan Err(SCAN_PAGE_ANON);
            }
            // A single page counts as shared if any part of the THP is.
            if folio.likely_mapped_shared() {
                shared = shared.wrapping_add(1);
                if cc.is_khugepaged && shared > max.shared {
                    count_event(bindings::vm_event_item_THP_SCAN_EXCEED_SHARED_PTE);
                    break 'scan Err(SCAN_EXCEED_SHARED_PTE);
                }
            }
            // The node with the most pages gets the huge page.
            let node = folio.nid();
            if scan_abort(node, cc) {
                break 'scan Err(SCAN_SCAN_ABORT);
            }
            if let Some(load) = cc.node_load.get_mut(node as usize) {
                // At most `HPAGE_PMD_NR`, as above.
                *load = load.wrapping_add(1);
            }
            if !folio.is_lru() {
                break 'scan Err(SCAN_PAGE_LRU);
            }
            if folio.is_locked() {
                break 'scan Err(SCAN_PAGE_LOCK);
            }
            // GUP (or other external) pins; racy, retried later.
            if !is_refcount_suitable(folio) {
                break 'scan Err(SCAN_PAGE_COUNT);
            }
            // khugepaged wants enough young PTEs to justify a collapse.
            if cc.is_khugepaged
                && (pte.is_young()
                    || folio.is_young_or_referenced()
                    || vma.mmu_notifier_test_young(address + i as c_ulong * PAGE_SIZE))
            {
                referenced = referenced.wrapping_add(1);
            }
        }

        if !writable {
            Err(SCAN_PAGE_RO)
        } else if cc.is_khugepaged
            && (referenced == 0 || (unmapped != 0 && referenced < HPAGE_PMD_NR as c_int / 2))
        {
            Err(SCAN_LACK_REFERENCED_PAGE)
        } else {
            Ok(())
        }
    };
    s.pfn = last.map(|folio| folio.pfn());
    drop(ptes);
    s.result = result;
    s.referenced = referenced;
    s.unmapped = unmapped;
    s.none_or_zero = none_or_zero;
    s.writable = writable;
    s
}

/// Rust `hpage_collapse_scan_pmd()`: see the module documentation. The
/// caller lends its read lock and `vma` finds the VMA under it; the guard
/// comes back unless `collapse_huge_page()` released the lock.
pub(crate) fn hpage_collapse_scan_pmd<'a>(
    mmap: MmapReadGuard<'a>,
    vma: impl for<'b> FnOnce(&'b MmapLocked<'a>) -> Vma<'b>,
    address: c_ulong,
    cc: &mut CollapseControl,
) -> (ScanResult, Option<MmapReadGuard<'a>>) {
    let mm = mmap.mm();
    let scan = scan_ptes(&vma(&mmap), address, cc);
    let (result, back) = if scan.result.is_ok() {
        // Through the C dispatcher; returns with the lock released.
        let result =
            khugepaged_c::collapse_huge_page(mmap, address, scan.referenced, scan.unmapped, cc);
        (result, None)
    } else {
        (scan.result, Some(mmap))
    };
    khugepaged_c::trace_scan_pmd(
        mm,
        scan.pfn,
        scan.writable,
        scan.referenced,
        scan.none_or_zero,
        result,
        scan.unmapped,
    );
    (result, back)
}
