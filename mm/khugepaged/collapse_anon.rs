// SPDX-License-Identifier: GPL-2.0

//! `collapse_huge_page()`: replace the PTE table of an anonymous PMD range
//! by a huge page holding a copy of its pages.
//!
//! Same steps, results, counters and tracepoints as the C reference in
//! `mm/khugepaged.c` (6.12):
//!
//! 1. The caller's mmap read lock is released while the huge folio is
//!    allocated and charged (`alloc_charge_folio()`, C: it may compact).
//! 2. Under the read lock again: the VMA is revalidated
//!    (`hugepage_vma_revalidate()`, C), the PMD found, and swapped-out
//!    pages brought back (`__collapse_huge_page_swapin()`, C, lent the
//!    lock: it returns without it when it fails).
//! 3. Under the mmap write lock: revalidate, check the PMD is the same
//!    table, `vma_start_write()`, the anon_vma write lock, then, inside an
//!    mmu_notifier invalidation and under the PMD lock, the table is
//!    detached (`pmdp_collapse_flush()`) and GUP-fast synchronised with.
//! 4. Under the detached table's PTE lock each mapped folio is locked and
//!    isolated from the LRU (`isolate()`), with 6.12's checks.
//! 5. The anon_vma lock is dropped; the pages are copied into the huge
//!    folio with the machine-check safe `copy_mc_user_highpage()`, then the
//!    small pages are unmapped and freed (`copy_succeeded()`), or, after a
//!    memory error, the table is put back and the pages released.
//! 6. The huge PMD is installed, the emptied table deposited.
//!
//! Every failure after the detach puts the table back with all its PTEs:
//! that is the drop of [`DetachedPtes`]; every isolated folio goes back to
//! the LRU unlocked (`release_pte_pages()`).
//!
//! Lock order: mmap_lock (write) -> anon_vma -> pmd lock, then the PTE lock
//! of the detached table alone, folio locks taken with trylock under it.
//!
//! [`DetachedPtes`]: kernel::mm::pgtable::DetachedPtes

use core::pin::Pin;
use kernel::bindings;
use kernel::ffi::{c_int, c_ulong};
use kernel::mm::folio::{IsolatedList, NewFolio, PutBatch};
use kernel::mm::mmu_notifier::MmuNotifierRange;
use kernel::mm::pgtable::{CheckedPtes, DetachedEntry, Pmd, PmdId, PteMapLock, Unmapped};
use kernel::mm::virt::Vma;
use kernel::mm::{MmapLocked, MmapReadGuard, MmapWriteGuard, HPAGE_PMD_NR};

use crate::collapse::find_pte_table;
use crate::khugepaged_c;
use crate::scan::*;
use crate::scan_file::is_refcount_suitable;

/// `__collapse_huge_page_isolate()`: under the detached table's lock,
/// checks every entry and locks and isolates every folio it maps, onto
/// `isolated` in the order of their first entries (C keeps the small ones
/// in the table and the large ones on `compound_pagelist`; one list is
/// the same set). The table comes back checked, its lock released; on
/// failure the caller releases the list.
fn isolate<'p>(
    vma: &Vma<'_>,
    address: c_ulong,
    ptes: PteMapLock<'p>,
    cc: &CollapseControl,
    isolated: Pin<&IsolatedList>,
) -> ScanResult<CheckedPtes<'p>> {
    let max = MaxPtes::read();
    // Each counts entries of the table, at most `HPAGE_PMD_NR`: adding to
    // them cannot overflow.
    let (mut none_or_zero, mut shared, mut referenced): (c_int, c_int, c_int) = (0, 0, 0);
    let mut writable = false;
    let mut pfn = None;

    let checked = ptes.check_detached(SCAN_PAGE_NULL, |i, entry| {
        let (pte, folio) = match entry {
            DetachedEntry::Hole(_) => {
                none_or_zero = none_or_zero.wrapping_add(1);
                if !vma.userfaultfd_armed() && (!cc.is_khugepaged || none_or_zero <= max.none) {
                    return Ok(());
                }
                count_event(bindings::vm_event_item_THP_SCAN_EXCEED_NONE_PTE);
                return Err(SCAN_EXCEED_NONE_PTE);
            }
            DetachedEntry::Other(pte) if !pte.is_present() => return Err(SCAN_PTE_NON_PRESENT),
            DetachedEntry::Other(pte) | DetachedEntry::Page(pte, _) if pte.uffd_wp() => {
                return Err(SCAN_PTE_UFFD_WP)
            }
            DetachedEntry::Page(pte, folio) if !folio.is_zone_device() => (pte, folio),
            _ => return Err(SCAN_PAGE_NULL),
        };
        pfn = Some(folio.pfn());

        // See hpage_collapse_scan_pmd().
        if folio.likely_mapped_shared() {
            shared = shared.wrapping_add(1);
            if cc.is_khugepaged && shared > max.shared {
                count_event(bindings::vm_event_item_THP_SCAN_EXCEED_SHARED_PTE);
                return Err(SCAN_EXCEED_SHARED_PTE);
            }
        }

        // A large folio is isolated once, at its first entry.
        if !(folio.is_large() && isolated.contains(folio)) {
            // The folio cannot be freed under us (mapped by the locked
            // table); its lock serialises against split_huge_page().
            let locked = folio.trylock().ok_or(SCAN_PAGE_LOCK)?;
            // GUP (or other external) pins: this process cannot take new
            // ones, the table being detached; another one that shares the
            // page after fork can only trigger CoW.
            if !is_refcount_suitable(&locked) {
                return Err(SCAN_PAGE_COUNT);
            }
            // Off the LRU, so that the VM leaves it alone while collapsing.
            isolated.push(locked.isolate_lru().map_err(|_| SCAN_DEL_PAGE_LRU)?);
        }

        // khugepaged wants enough young PTEs to justify a collapse.
        if cc.is_khugepaged
            && (pte.is_young()
                || folio.is_young_or_referenced()
                || vma.mmu_notifier_test_young(address + i as c_ulong * PAGE_SIZE))
        {
            referenced = referenced.wrapping_add(1);
        }
        if pte.is_write() {
            writable = true;
        }
        Ok(())
    });

    let checked = checked.and_then(|checked| {
        if !writable {
            Err(SCAN_PAGE_RO)
        } else if cc.is_khugepaged && referenced == 0 {
            Err(SCAN_LACK_REFERENCED_PAGE)
        } else {
            Ok(checked)
        }
    });
    let result = checked.as_ref().map(|_| ()).map_err(|e| *e);
    khugepaged_c::trace_collapse_isolate(pfn, none_or_zero, referenced, writable, result);
    checked
}

/// `__collapse_huge_page_copy()`: copies the range into `folio`, each page
/// with `copy_mc_user_highpage()`, holes zeroed. Stops at a memory error
/// and returns `SCAN_COPY_MC`.
fn copy(ptes: &CheckedPtes<'_>, folio: &NewFolio) -> ScanResult {
    if (0..HPAGE_PMD_NR).all(|i| ptes.copy(i, folio)) {
        Ok(())
    } else {
        Err(SCAN_COPY_MC)
    }
}

/// `__collapse_huge_page_copy_succeeded()`: unmaps every entry of the
/// detached table and frees the pages that are now copied, ending the
/// isolation of their folios: a small folio's as its entry goes, a large
/// one's once all of its entries are gone. A small folio that nothing else
/// references is freed without the LRU putback that C does first (which
/// puts it on an LRU list for the free to take it off again), in batches
/// of `PAGEVEC_SIZE` put with the lock released; any other goes back to
/// the LRU as in C. The entries of a large folio go a run at a time, one
/// rmap and reference update per run, as in 6.17; the holes are counted
/// in `MM_ANONPAGES` at once. `isolate()` succeeded on this table with
/// `isolated`.
///
/// The PTE lock is taken once for the table, where C takes it around each
/// entry: nothing else can reach a detached table, so nobody waits for
/// it; it is held for the per-cpu stats of `folio_remove_rmap_ptes()`,
/// which need preemption off, and what is done under it (an LRU putback,
/// a folio put) does not sleep, as under `__collapse_huge_page_isolate()`'s
/// lock. It is released to put each full batch of frees.
fn copy_succeeded(ptes: &CheckedPtes<'_>, vma: &Vma<'_>, isolated: Pin<&IsolatedList>) {
    let mut holes = 0;
    let mut i = 0;
    let mut freed = PutBatch::new();
    let mut held = ptes.lock();
    while i < HPAGE_PMD_NR {
        let pages = match ptes.unmap(&held, i) {
            // A hole becomes a page of the THP.
            Unmapped::None | Unmapped::ZeroPage => {
                holes += 1;
                i += 1;
                continue;
            }
            Unmapped::Pages(pages) => pages,
            // Cannot be: the table is checked, `i` in range.
            Unmapped::Refused => {
                warn_on_once(true);
                i += 1;
                continue;
            }
        };
        i += pages.nr();
        // The list is in the order of first entries: a folio met for the
        // first time is at its head.
        let first = isolated.first_pfn() == Some(pages.folio().pfn());
        match first.then(|| isolated.pop()).flatten() {
            // Released below, once every entry is gone.
            Some(folio) if folio.is_large() => {
                isolated.push(folio);
                drop(pages);
            }
            // Its one entry is gone: freed, off the LRU.
            Some(folio) => {
                pages.free_isolated(folio, &mut freed);
                if freed.is_full() {
                    // Freed outside the lock, as C frees each page.
                    drop(held);
                    freed.flush();
                    held = ptes.lock();
                }
            }
            None => drop(pages),
        }
    }
    drop(held);
    drop(freed);
    if holes != 0 {
        vma.add_mm_counter(bindings::MM_ANONPAGES as i32, holes);
    }
    // What is left is the large folios, every entry of which is gone.
    while let Some(folio) = isolated.pop() {
        folio.putback_free_swap_cache();
    }
}

/// `hugepage_vma_revalidate(.., expect_anon = true, ..)`: after the mmap
/// lock was retaken, the VMA at `address` if it is still an anonymous one
/// with an anon_vma where a PMD-sized THP is allowed.
fn revalidate<'a>(
    mmap: &'a MmapLocked<'_>,
    address: c_ulong,
    cc: &mut CollapseControl,
) -> ScanResult<Vma<'a>> {
    khugepaged_c::hugepage_vma_revalidate(mmap, address, true, cc)
}

/// The PMD of the PTE table at `address` under a retaken mmap lock, its
/// identity saved in `id` for step 3 to find it again.
fn find_pmd<'b>(
    mmap: &'b MmapLocked<'_>,
    address: c_ulong,
    cc: &mut CollapseControl,
    id: &mut Option<PmdId>,
) -> ScanResult<Pmd<'b>> {
    let vma = revalidate(mmap, address, cc)?;
    let pmd = find_pte_table(&vma, address)?;
    *id = Some(pmd.id());
    Ok(pmd)
}

/// Steps 1 and 2 (see the module documentation): the allocated folio and
/// the PMD entry that step 3 must find again, with no lock held.
fn prepare(
    mmap: MmapReadGuard<'_>,
    address: c_ulong,
    referenced: c_int,
    unmapped: c_int,
    cc: &mut CollapseControl,
) -> ScanResult<(NewFolio, PmdId)> {
    let mm = mmap.mm();
    // Allocation may compact: no mmap lock meanwhile; the VMA is
    // revalidated under the write lock anyway.
    drop(mmap);
    let folio = khugepaged_c::alloc_charge_folio(mm, cc)?;

    let mmap = mm.mmap_read_lock();
    let mut pmd = None;
    if unmapped != 0 {
        // Returns without the lock when it fails.
        let mmap = khugepaged_c::collapse_huge_page_swapin(mmap, referenced, |mmap| {
            find_pmd(mmap, address, cc, &mut pmd)
        })?;
        drop(mmap);
    } else {
        find_pmd(&mmap, address, cc, &mut pmd)?;
    }
    let pmd = pmd.ok_or(SCAN_FAIL)?;
    Ok((folio, pmd))
}

/// Steps 3 to 6 (see the module documentation), under the mmap write lock.
/// `folio` is taken when it is mapped; otherwise the caller puts it after
/// releasing the lock, as C does.
fn collapse_locked(
    mmap: &MmapWriteGuard<'_>,
    address: c_ulong,
    folio: &mut Option<NewFolio>,
    old_pmd: PmdId,
    cc: &mut CollapseControl,
) -> ScanResult {
    let vma = revalidate(mmap, address, cc)?;
    // Still the table that step 2 found (check_pmd_still_valid()).
    let pmd = find_pte_table(&vma, address)?;
    if pmd.id() != old_pmd {
        return Err(SCAN_FAIL);
    }
    let Some(vma) = mmap.vma_start_write(vma) else {
        return Err(SCAN_FAIL);
    };
    // revalidate() checked for an anon_vma.
    let Some(anon_vma) = vma.anon_vma() else {
        return Err(SCAN_PAGE_ANON);
    };
    let av = anon_vma.lock_write();

    let detached = {
        let mut range = MmuNotifierRange::pmd_clear(&pmd);
        let invalidation = range.start();
        let pml = pmd.lock();
        // Removes any huge TLB entry too: no huge and small TLB entries
        // for one address. GUP-fast backs off when it sees the entry
        // change.
        pml.detach_populated(&vma, &av, &invalidation)
    };
    let Some(detached) = detached else {
        return Err(SCAN_FAIL);
    };
    IsolatedList::with(|isolated| {
        // On a failure, what is left goes in the reverse order of these
        // bindings: the table back before the anon_vma lock is released,
        // and both before the isolated folios are (when `with` returns).
        let av = av;
        let detached = detached;
        // Waits for GUP-fast walkers that saw the table before the flush.
        let ptes = detached.map_lock().ok_or(SCAN_PMD_NULL)?;
        let ptes = isolate(&vma, address, ptes, cc, isolated)?;
        // Every folio is isolated and locked: anon rmap walks skip them.
        drop(av);

        let copied = match folio.as_ref() {
            Some(new) => copy(&ptes, new),
            None => Err(SCAN_FAIL),
        };
        if copied.is_err() {
            drop(ptes);
            // The table goes back before the folios (still isolated and
            // locked) are released; the caller puts the unused folio.
            drop(detached);
            return copied;
        }
        copy_succeeded(&ptes, &vma, isolated);
        drop(ptes);
        let Some(new) = folio.take() else {
            return Err(SCAN_FAIL);
        };
        match detached.map_anon_folio_pmd(new) {
            Ok(()) => Ok(()),
            Err(new) => {
                // Cannot be: every entry was unmapped above, the folio is
                // PMD-sized and revalidate() checked the VMA. The table is
                // back (empty), the range faults in again.
                warn_on_once(true);
                *folio = Some(new);
                Err(SCAN_FAIL)
            }
        }
    })
}

/// Rust `collapse_huge_page()`: see the module documentation. Takes over
/// the caller's read lock on `mm` and releases it; `address` is
/// PMD-aligned.
pub(crate) fn collapse_huge_page(
    mmap: MmapReadGuard<'_>,
    address: c_ulong,
    referenced: c_int,
    unmapped: c_int,
    cc: &mut CollapseControl,
) -> ScanResult {
    let mm = mmap.mm();
    let result = match prepare(mmap, address, referenced, unmapped, cc) {
        Ok((folio, pmd)) => {
            let mut folio = Some(folio);
            let mmap = mm.mmap_write_lock();
            let result = collapse_locked(&mmap, address, &mut folio, pmd, cc);
            // An unused folio is put once the lock is released.
            drop(mmap);
            drop(folio);
            result
        }
        Err(e) => Err(e),
    };
    khugepaged_c::trace_collapse_huge_page(mm, result.is_ok(), result);
    result
}
