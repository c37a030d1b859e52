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
use kernel::mm::pgtable::{Pmd, PmdKind, PtlHeld, UnmapFileError};
use kernel::mm::virt::{Vma, VmaAccess};
use kernel::mm::{MmapLocked, HPAGE_PMD_ORDER};

use crate::scan::*;

const HPAGE_PMD_SIZE: c_ulong = bindings::RUST_HPAGE_PMD_SIZE;
const HPAGE_PMD_MASK: c_ulong = bindings::RUST_HPAGE_PMD_MASK;
/// `find_pmd_or_thp_or_none()`: classifies the PMD entry that maps the
/// PMD range of `vma` at `haddr`, returning it when one exists.
pub(crate) fn find_pmd_or_thp_or_none<'a, A: VmaAccess>(
    vma: &Vma<'a, A>,
    haddr: c_ulong,
) -> (ScanResult, Option<Pmd<'a>>) {
    let Some(pmd) = vma.find_pmd(haddr) else {
        return (Err(SCAN_PMD_NULL), None);
    };
    // A lockless read is what the checks expect: they are repeated under
    // the locks.
    let result = match PmdKind::of(pmd.get_lockless()) {
        PmdKind::None => Err(SCAN_PMD_NONE),
        PmdKind::Huge => Err(SCAN_PMD_MAPPED),
        PmdKind::NotPresent | PmdKind::Bad => Err(SCAN_PMD_NULL),
        PmdKind::Table => Ok(()),
    };
    (result, Some(pmd))
}

/// The PMD entry of `vma` at `haddr` when it points to a PTE table, or
/// why it does not (`find_pmd_or_thp_or_none()`'s result).
pub(crate) fn find_pte_table<'a>(vma: &Vma<'a>, haddr: c_ulong) -> ScanResult<Pmd<'a>> {
    match find_pmd_or_thp_or_none(vma, haddr) {
        (Ok(()), Some(pmd)) => Ok(pmd),
        (Ok(()), None) => Err(SCAN_PMD_NULL),
        (Err(e), _) => Err(e),
    }
}

/// `set_huge_pmd()`: maps the locked PMD-order `folio` by a huge PMD at
/// `pmd` of `vma` through `do_set_pmd()`.
fn set_huge_pmd(vma: &Vma<'_>, pmd: &Pmd<'_>, folio: &LockedFolio<'_>) -> ScanResult {
    if vma.map_file_folio(pmd, folio) {
        Ok(())
    } else {
        Err(SCAN_FAIL)
    }
}

/// The result when an entry does not map its page of the folio: not
/// present (`SCAN_PTE_NON_PRESENT`); a CoWed anonymous copy
/// (`SCAN_PTE_ANON_COW`, which lets MADV_COLLAPSE go on with the next
/// extent: C 6.12 stops there with `SCAN_FAIL` unless
/// `khugepaged_skip_cow_extents` is set); anything else `SCAN_FAIL`.
fn unmap_error(e: UnmapFileError) -> ScanError {
    match e {
        UnmapFileError::NotPresent => SCAN_PTE_NON_PRESENT,
        UnmapFileError::Mismatch { anon: true } => SCAN_PTE_ANON_COW,
        UnmapFileError::Mismatch { anon: false } | UnmapFileError::Refused => SCAN_FAIL,
    }
}

/// Step 3: drops the references and rss of the `nr_ptes` entries that
/// step 2 unmapped. Only once no TLB entry can map their pages: the
/// folio's own reference keeps it live until then, and the PMD flush of
/// step 4 (or the mm flush of an abort) follows before it is unlocked.
fn put_unmapped(mmap: &MmapLocked<'_>, folio: &LockedFolio<'_>, nr_ptes: i32) {
    if nr_ptes == 0 {
        return;
    }
    // SAFETY: step 2 unmapped `nr_ptes` entries of the folio, each holding
    // a reference, and the caller flushes the TLB before the folio goes.
    unsafe { folio.ref_sub_mappings(nr_ptes) };
    mmap.add_mm_counter(folio.mm_counter(), -(nr_ptes as i64));
}

/// Undoes step 3's accounting for the `nr_ptes` entries step 2 cleared
/// before it had to abort; the TLB is flushed since no PMD flush follows.
fn abort_cleared(mmap: &MmapLocked<'_>, folio: &LockedFolio<'_>, nr_ptes: i32) {
    if nr_ptes == 0 {
        return;
    }
    mmap.flush_tlb();
    put_unmapped(mmap, folio, nr_ptes);
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
        return Err(SCAN_VMA_CHECK);
    };
    if !vma.has_file() || !vma.contains_range(haddr, haddr + HPAGE_PMD_SIZE) {
        return Err(SCAN_VMA_CHECK);
    }

    // Fast check before locking the folio if already PMD-mapped.
    let (result, _) = find_pmd_or_thp_or_none(&vma, haddr);
    if result == Err(SCAN_PMD_MAPPED) {
        return result;
    }

    // The page cache already holds a PMD-sized folio that a fault would map
    // by PMD regardless of the sysfs THP settings: elide them here too.
    if !vma.thp_pmd_allowed(false) {
        return Err(SCAN_VMA_CHECK);
    }

    // Keep the PMD page table for uffd-wp (see retract_page_tables()).
    if vma.userfaultfd_wp() {
        return Err(SCAN_PTE_UFFD_WP);
    }

    let Some(folio) = LockedFolio::lock_in_vma(&vma, haddr) else {
        return Err(SCAN_PAGE_NULL);
    };
    if folio.order() != HPAGE_PMD_ORDER {
        return Err(SCAN_PAGE_COMPOUND);
    }

    let pmd = match find_pmd_or_thp_or_none(&vma, haddr) {
        (Ok(()), Some(pmd)) => pmd,
        // All PTEs were removed and the PMD cleared: just map the folio.
        (Err(SCAN_PMD_NONE), Some(pmd)) => {
            return maybe_install_pmd(&vma, &pmd, &folio, install_pmd)
        }
        (Ok(()) | Err(SCAN_PMD_NONE), None) => return Err(SCAN_PMD_NULL),
        (result, _) => return result,
    };

    // Step 1: check that every mapped PTE maps the right page of the folio.
    // Swapped out or migrating: abort. A uprobe, a debugger or MAP_PRIVATE
    // CoW may have replaced a page, but the new page is never a subpage of
    // the folio. A zone-device page counts as none, with a warning (as in
    // C). Runs of entries are checked at once (folio_pte_batch()).
    {
        let Some(ptes) = pmd.map_lock() else {
            // mmap_lock + folio lock should prevent this.
            return Err(SCAN_FAIL);
        };
        ptes.check_file_folio(&folio).map_err(unmap_error)?;
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
            return Err(SCAN_FAIL);
        };
        Some(both)
    } else {
        None
    };
    let Some(map) = pmd.map_nolock() else {
        return Err(SCAN_FAIL);
    };
    // The PTE lock alone, unless it is held nested in the PMD lock.
    let mut ptl = None;
    let lock: &dyn PtlHeld = match &both {
        Some(both) => both,
        None => ptl.insert(map.lock()),
    };

    // Step 2: clear the page table and adjust the rmap, one rmap update per
    // run of entries (6.17's batching; 6.12's C does one per entry).
    //
    // ptl was dropped after step 1 for the mmu_notifier: the folio lock
    // stops more PTEs of the folio being faulted in, but not write faults
    // CoWing anon copies from existing PTEs, nor swap-out or migration of
    // those.
    //
    // Must clear the entries, or a racing truncate may remove them again.
    // The TLB flush is left to pmdp_collapse_flush(). Dirty PTE? A shmem
    // folio is already dirty; a file THP is read-only.
    //
    // On abort, the guards release ptl (and pml), the mapping, the notifier
    // range, then the folio, as C's abort path does.
    let (unmapped, result) = map.unmap_file_folio(lock, &folio);
    let nr_ptes = unmapped as i32;
    if let Err(e) = result {
        abort_cleared(mmap, &folio, nr_ptes);
        return Err(unmap_error(e));
    }

    // pte_unmap_unlock(); a PMD lock (with the PTE lock nested) stays held
    // for step 4.
    drop(ptl);
    drop(map);
    let held = both;

    // Step 3: set the refcount and the mm counters right.
    put_unmapped(mmap, &folio, nr_ptes);

    // Step 4: remove the empty page table, under the PMD lock with the PTE
    // lock nested (held since step 2, or taken again).
    let Some(table) = held
        .or_else(|| pmd.lock().nest_table_lock())
        .and_then(|both| both.collapse_flush())
    else {
        // Unreachable: the mmap and folio locks keep the (now empty) table
        // attached, and step 2 unmapped every entry under its lock. If it
        // were not so, leave the table alone, but the entries step 2
        // cleared may still be in TLBs, for pages whose references step 3
        // dropped: flush them before anything can free those pages.
        warn_on_once(true);
        if nr_ptes > 0 {
            mmap.flush_tlb();
        }
        return Err(SCAN_FAIL);
    };
    drop(invalidation);
    table.free();

    maybe_install_pmd(&vma, &pmd, &folio, install_pmd)
}

/// Step 5: install the huge PMD if asked to.
fn maybe_install_pmd(
    vma: &Vma<'_>,
    pmd: &Pmd<'_>,
    folio: &LockedFolio<'_>,
    install_pmd: bool,
) -> ScanResult {
    if install_pmd {
        set_huge_pmd(vma, pmd, folio)
    } else {
        Ok(())
    }
}
