// SPDX-License-Identifier: GPL-2.0

//! `retract_page_tables()`: after `collapse_file()` has put a PMD-sized
//! folio in the page cache, remove the PTE tables that map its range in
//! every VMA that can then map it by PMD (at the next fault, or through
//! `collapse_pte_mapped_thp()`).
//!
//! Same semantics as the C reference in `mm/khugepaged.c` (6.12): no mmap
//! lock, so the VMAs are found under `i_mmap_rwsem` (read) in the file's
//! interval tree; per VMA, skip one with an `anon_vma` (written MAP_PRIVATE
//! mappings, likely split again), a misaligned or short one, a PMD that is
//! not a PTE table, an exiting mm and a uffd-wp registered VMA (its PTE
//! markers live in the table); detach the table under the PMD lock with
//! the PTE lock nested, inside an mmu_notifier invalidation, re-checking
//! `anon_vma` and uffd-wp under the PTE lock (a racing `UFFDIO_COPY` or a
//! uffd-wp registration may have populated it without the mmap lock this
//! path does not hold); free it after an RCU grace period.
//!
//! The caller holds the lock of the new folio, the only one that can be
//! mapped in the range: the tables are empty, except where an anon_vma or
//! uffd-wp, rechecked under the lock, says otherwise.

use kernel::bindings;
use kernel::ffi::{c_long, c_ulong};
use kernel::mm::mmu_notifier::MmuNotifierRange;
use kernel::mm::rmap::Mapping;

use crate::collapse::find_pmd_or_thp_or_none;

/// Removes the page tables that map file page `pgoff` (the first of a
/// PMD-sized folio) of `mapping`; returns how many it removed.
pub(crate) fn retract_page_tables(mapping: &Mapping<'_>, pgoff: c_ulong) -> c_long {
    let mut retracted = 0;
    let i_mmap = mapping.i_mmap_read();
    for vma in i_mmap.vmas(pgoff, pgoff) {
        // Check anon_vma to exclude MAP_PRIVATE mappings that got written
        // to: not worth removing page tables from, as PMD-mapping is likely
        // to be split later.
        if vma.has_anon_vma() {
            continue;
        }

        // The tree only yields VMAs whose range holds `pgoff`.
        let addr = vma
            .start()
            .wrapping_add(pgoff.wrapping_sub(vma.pgoff()) << bindings::PAGE_SHIFT);
        // Misaligned or short VMAs have no `Pmd`.
        let pmd = match find_pmd_or_thp_or_none(&vma, addr) {
            (Ok(()), Some(pmd)) => pmd,
            _ => continue,
        };

        // hpage_collapse_test_exit(): the mm is exiting.
        if vma.mm_users() == 0 {
            continue;
        }
        // A uffd-wp registered VMA may have PTE markers in the table: keep
        // it. Other VMAs can still map the file by PMD; this one is always
        // mapped by small pages in uffd-wp registered ranges.
        if vma.userfaultfd_wp() {
            continue;
        }

        // PTEs were notified when unmapped; but now for the PMD.
        let mut range = MmuNotifierRange::pmd_clear(&pmd);
        let invalidation = range.start();

        let Some(both) = pmd.lock().nest_table_lock() else {
            // No longer a PTE table: nothing to retract.
            continue;
        };
        // The folio lock normally keeps the table empty, and anon_vma and
        // uffd-wp VMAs were skipped; but without the mmap lock a racing
        // userfaultfd_ioctl() may have inserted PTEs or markers. Under the
        // PTE lock, repeating the anon_vma check protects from one
        // category, and repeating the uffd-wp check from the other.
        if vma.has_anon_vma() || vma.userfaultfd_wp() {
            continue;
        }
        // SAFETY: the table is empty, and stays so under the held PTE
        // lock: the caller holds the lock of the only folio that can be
        // mapped in the range, which collapse_file() unmapped everywhere,
        // and the VMA has neither an anon_vma nor uffd-wp (checked under
        // the PTE lock), so no racing UFFDIO_COPY or marker has filled it.
        // (With CONFIG_DEBUG_VM, collapse_flush_empty() checks.)
        let Some(table) = (unsafe { both.collapse_flush_empty() }) else {
            continue;
        };
        drop(both);
        drop(invalidation);
        table.free();
        retracted += 1;
    }
    retracted
}
