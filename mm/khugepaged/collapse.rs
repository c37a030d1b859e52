// SPDX-License-Identifier: GPL-2.0

//! `collapse_pte_mapped_thp()`: re-map a PTE-mapped file/shmem THP by PMD.
//!
//! Same contract and result codes as the C reference in `mm/khugepaged.c`
//! (6.12): the caller holds the mmap lock (read is enough); the folio lock
//! keeps more PTEs of the folio from being faulted in; the PTE table is
//! checked under its lock (step 1), then cleared with rmap removal (step 2)
//! inside an mmu_notifier invalidation, refcount and rss are adjusted
//! (step 3), the table is detached under the PMD lock with the PTE lock
//! nested (step 4) and freed after an RCU grace period, and a huge PMD is
//! installed if asked (step 5).
//!
//! A VMA with an `anon_vma` is allowed ("mm/khugepaged: fix
//! collapse_pte_mapped_thp() to allow anon_vma"): a CoWed subpage makes the
//! PTE check fail instead, with `SCAN_PTE_ANON_COW` so that MADV_COLLAPSE
//! goes on with the next extent. This is the one intended difference from
//! the C reference, which returns `SCAN_FAIL` there unless
//! `khugepaged_skip_cow_extents` is set.

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::mm::folio::LockedFolio;
use kernel::mm::mmu_notifier::MmuNotifierRange;
use kernel::mm::pgtable::{Pmd, PmdKind, Pte, PtlHeld};
use kernel::mm::virt::Vma;
use kernel::mm::{MmapLocked, HPAGE_PMD_NR, HPAGE_PMD_ORDER};

use crate::scan::*;

const HPAGE_PMD_SIZE: c_ulong = bindings::RUST_HPAGE_PMD_SIZE;
const HPAGE_PMD_MASK: c_ulong = bindings::RUST_HPAGE_PMD_MASK;
/// `find_pmd_or_thp_or_none()`: classifies the PMD entry that maps the
/// PMD range of `vma` at `haddr`, returning it when one exists.
pub(crate) fn find_pmd_or_thp_or_none<'a>(
    vma: &Vma<'a>,
    haddr: c_ulong,
) -> (ScanResult, Option<Pmd<'a>>) {
    let Some(pmd) = vma.find_pmd(haddr) else {
        return (SCAN_PMD_NULL, None);
    };
    // A lockless read is what the checks expect: they are repeated under
    // the locks.
    let result = match PmdKind::of(pmd.get_lockless()) {
        PmdKind::None => SCAN_PMD_NONE,
        PmdKind::Huge => SCAN_PMD_MAPPED,
        PmdKind::NotPresent | PmdKind::Bad => SCAN_PMD_NULL,
        PmdKind::Table => SCAN_SUCCEED,
    };
    (result, Some(pmd))
}

/// The PMD entry of `vma` at `haddr` when it points to a PTE table, or
/// why it does not (`find_pmd_or_thp_or_none()`'s result).
pub(crate) fn find_pte_table<'a>(vma: &Vma<'a>, haddr: c_ulong) -> Result<Pmd<'a>, ScanResult> {
    match find_pmd_or_thp_or_none(vma, haddr) {
        (SCAN_SUCCEED, Some(pmd)) => Ok(pmd),
        (SCAN_SUCCEED, None) => Err(SCAN_PMD_NULL),
        (result, _) => Err(result),
    }
}

/// `set_huge_pmd()`: maps the locked PMD-order `folio` by a huge PMD at
/// `pmd` through `do_set_pmd()`.
fn set_huge_pmd(pmd: &Pmd<'_>, folio: &LockedFolio<'_>) -> ScanResult {
    // SAFETY: collapse_pte_mapped_thp() runs under the mmap lock, found
    // `pmd` through a VMA of it, and `folio` in the VMA's page cache.
    if unsafe { pmd.map_file_folio(folio) } {
        SCAN_SUCCEED
    } else {
        SCAN_FAIL
    }
}

/// The page that PTE `ptent` at `addr` of `vma` maps, as step 1 and 2 see
/// it: `vm_normal_page()`, a zone-device page counted as none (with a
/// one-time warning, as in C).
fn mapped_page(vma: &Vma<'_>, addr: c_ulong, ptent: Pte) -> *mut bindings::page {
    // SAFETY: the VMA is valid and `ptent` a value read from its table.
    let page = unsafe { bindings::vm_normal_page(vma.as_ptr(), addr, ptent.as_raw()) };
    // Without ZONE_DEVICE there are no zone-device pages to warn about.
    #[cfg(CONFIG_ZONE_DEVICE)]
    // SAFETY: `page` is NULL or a valid page.
    if unsafe { bindings::khugepaged_warn_zone_device(page) } {
        return core::ptr::null_mut();
    }
    page
}

/// The result when a PTE maps `page` instead of the folio's subpage: a
/// CoWed anonymous copy gives `SCAN_PTE_ANON_COW`, which lets MADV_COLLAPSE
/// go on with the next extent (C 6.12 stops there with `SCAN_FAIL` unless
/// `khugepaged_skip_cow_extents` is set); anything else `SCAN_FAIL`.
fn mismatch(page: *mut bindings::page) -> ScanResult {
    // SAFETY: `page` is a valid page when non-NULL.
    if !page.is_null() && unsafe { bindings::page_is_anon(page) } {
        SCAN_PTE_ANON_COW
    } else {
        SCAN_FAIL
    }
}

/// Undoes step 3's accounting for the `nr_ptes` entries step 2 cleared
/// before it had to abort; the TLB is flushed since no PMD flush follows.
fn abort_cleared(mmap: &MmapLocked<'_>, folio: &LockedFolio<'_>, nr_ptes: i32) {
    if nr_ptes == 0 {
        return;
    }
    mmap.flush_tlb();
    // SAFETY: step 2 removed `nr_ptes` mappings of the folio.
    unsafe { folio.ref_sub_mappings(nr_ptes) };
    mmap.add_mm_counter(folio.mm_counter(), -(nr_ptes as i64));
}

/// Tries to collapse the PTE-mapped THP at `addr` of the mm that `mmap`
/// proves locked: see the module documentation.
pub(crate) fn collapse_pte_mapped_thp(
    mmap: &MmapLocked<'_>,
    addr: c_ulong,
    install_pmd: bool,
) -> ScanResult {
    let haddr = addr & HPAGE_PMD_MASK;

    // First check VMA found, in case page tables are being torn down.
    let Some(vma) = mmap.vma_lookup(haddr) else {
        return SCAN_VMA_CHECK;
    };
    if !vma.has_file() || !vma.contains_range(haddr, haddr + HPAGE_PMD_SIZE) {
        return SCAN_VMA_CHECK;
    }

    // Fast check before locking the folio if already PMD-mapped.
    let (result, _) = find_pmd_or_thp_or_none(&vma, haddr);
    if result == SCAN_PMD_MAPPED {
        return result;
    }

    // The page cache already holds a PMD-sized folio that a fault would map
    // by PMD regardless of the sysfs THP settings: elide them here too.
    if !vma.thp_pmd_allowed(false) {
        return SCAN_VMA_CHECK;
    }

    // Keep the PMD page table for uffd-wp (see retract_page_tables()).
    if vma.userfaultfd_wp() {
        return SCAN_PTE_UFFD_WP;
    }

    let Some(folio) = LockedFolio::lock_in_vma(&vma, haddr) else {
        return SCAN_PAGE_NULL;
    };
    if folio.order() != HPAGE_PMD_ORDER {
        return SCAN_PAGE_COMPOUND;
    }

    let pmd = match find_pmd_or_thp_or_none(&vma, haddr) {
        (SCAN_SUCCEED, Some(pmd)) => pmd,
        // All PTEs were removed and the PMD cleared: just map the folio.
        (SCAN_PMD_NONE, Some(pmd)) => return maybe_install_pmd(&pmd, &folio, install_pmd),
        (SCAN_SUCCEED | SCAN_PMD_NONE, None) => return SCAN_PMD_NULL,
        (result, _) => return result,
    };

    // Step 1: check that every mapped PTE maps the right page of the folio.
    {
        let Some(ptes) = pmd.map_lock() else {
            // mmap_lock + folio lock should prevent this.
            return SCAN_FAIL;
        };
        for i in 0..HPAGE_PMD_NR {
            let Some(ptent) = ptes.get(i) else { break };
            if ptent.is_none() {
                continue;
            }
            // Swapped out or migrating: abort.
            if !ptent.is_present() {
                return SCAN_PTE_NON_PRESENT;
            }
            // A uprobe, a debugger or MAP_PRIVATE CoW may have replaced the
            // page, but the new page is never a subpage of the folio.
            let page = mapped_page(&vma, haddr + i as c_ulong * PAGE_SIZE, ptent);
            if folio.page(i) != page {
                return mismatch(page);
            }
        }
        // `ptes` unmapped and unlocked here.
    }

    let mut range = MmuNotifierRange::pmd_clear(&pmd);
    let invalidation = range.start();

    // pmd_lock covers a wider range than ptl, and (if split from mm's
    // page_table_lock) ptl nests inside pml. The less time pml is held the
    // better; but userfaultfd's mfill_atomic_pte() on a private VMA inserts
    // an as-if-CoWed PTE without looking at the page cache, so the folio
    // lock does not stop it, so ptl must not be dropped before the table is
    // detached: uffd-armed private VMAs take pml now.
    let both = if vma.userfaultfd_armed() && !vma.is_shared() {
        // mmap_lock + folio lock should prevent the table going away.
        let Some(both) = pmd.lock().nest_table_lock() else {
            return SCAN_FAIL;
        };
        Some(both)
    } else {
        None
    };
    let Some(map) = pmd.map_nolock() else {
        return SCAN_FAIL;
    };
    // The PTE lock alone, unless it is held nested in the PMD lock.
    let mut ptl = None;
    let lock: &dyn PtlHeld = match &both {
        Some(both) => both,
        None => ptl.insert(map.lock()),
    };

    // Step 2: clear the page table and adjust the rmap.
    let mut nr_ptes: i32 = 0;
    for i in 0..HPAGE_PMD_NR {
        let Some(ptent) = map.get(i) else { break };
        let addr = haddr + i as c_ulong * PAGE_SIZE;
        if ptent.is_none() {
            continue;
        }
        // ptl was dropped after step 1 for the mmu_notifier: the folio lock
        // stops more PTEs of the folio being faulted in, but not write
        // faults CoWing anon copies from existing PTEs, nor swap-out or
        // migration of those.
        //
        // On abort, the guards release ptl (and pml), the mapping, the
        // notifier range, then the folio, as C's abort path does.
        if !ptent.is_present() {
            abort_cleared(mmap, &folio, nr_ptes);
            return SCAN_PTE_NON_PRESENT;
        }
        // SAFETY: the VMA is valid and `ptent` read under its lock.
        let page = unsafe { bindings::vm_normal_page(vma.as_ptr(), addr, ptent.as_raw()) };
        if folio.page(i) != page {
            abort_cleared(mmap, &folio, nr_ptes);
            return mismatch(page);
        }
        // Must clear the entry, or a racing truncate may remove it again.
        // The TLB flush is left to pmdp_collapse_flush(). Dirty PTE? A shmem
        // folio is already dirty; a file THP is read-only.
        if !map.clear(lock, i) {
            abort_cleared(mmap, &folio, nr_ptes);
            return SCAN_FAIL;
        }
        // SAFETY: `page` belongs to the locked folio and its PTE in `vma`
        // was just cleared under the PTE lock.
        unsafe { bindings::folio_remove_rmap_ptes(folio.as_ptr(), page, 1, vma.as_ptr()) };
        nr_ptes += 1;
    }

    // pte_unmap_unlock(); a PMD lock (with the PTE lock nested) stays held
    // for step 4.
    drop(ptl);
    drop(map);
    let held = both;

    // Step 3: set the refcount and the mm counters right.
    if nr_ptes > 0 {
        // SAFETY: step 2 removed `nr_ptes` mappings of the folio.
        unsafe { folio.ref_sub_mappings(nr_ptes) };
        mmap.add_mm_counter(folio.mm_counter(), -(nr_ptes as i64));
    }

    // Step 4: remove the empty page table.
    let Some(both) = held.or_else(|| pmd.lock().nest_table_lock()) else {
        // Unreachable: the mmap and folio locks keep the (now empty) table
        // attached. If it were not, leave it alone, but the entries step 2
        // cleared may still be in TLBs, for pages whose references step 3
        // dropped: flush them before anything can free those pages.
        warn_on_once(true);
        if nr_ptes > 0 {
            mmap.flush_tlb();
        }
        return SCAN_FAIL;
    };
    // SAFETY: step 2 cleared every PTE under this table's lock, dropped
    // their rmap, and step 3 their references.
    let table = unsafe { both.collapse_flush() };
    drop(both);
    drop(invalidation);
    table.free();

    maybe_install_pmd(&pmd, &folio, install_pmd)
}

/// Step 5: install the huge PMD if asked to.
fn maybe_install_pmd(pmd: &Pmd<'_>, folio: &LockedFolio<'_>, install_pmd: bool) -> ScanResult {
    if install_pmd {
        set_huge_pmd(pmd, folio)
    } else {
        SCAN_SUCCEED
    }
}
