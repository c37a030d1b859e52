// SPDX-License-Identifier: GPL-2.0

//! `collapse_file()`'s unmapping of the small folios it is about to copy,
//! for the Rust implementation: 32 pages at a time, per VMA, instead of
//! 6.12's `try_to_unmap()` of each folio as it is locked.
//!
//! `try_to_unmap(folio)` walks the file's VMAs for each folio, and in each
//! one opens an mmu_notifier invalidation of one page, walks the page
//! tables down to its PTE, takes the PTE lock and clears one entry: about
//! 900 instructions per (folio, VMA), the whole cost of collapsing a file
//! mapped by many processes. Here the interval tree is walked once per
//! batch under `i_mmap_rwsem` (read); per VMA, one invalidation covers its
//! part of the batch, each PTE table is locked once, and the entries are
//! cleared with one TLB flush ([`PteRange::unmap_file_pages`]).
//!
//! `collapse_file()` calls this for each batch of the small folios it has
//! locked (and isolated) but left mapped, at most 32 (the range from the
//! first of them to the loop's index, longer where it holds holes or large
//! folios), and checks those folios' references afterwards: the folio
//! locks keep new mappings out in between, so what is unmapped here stays
//! unmapped; batches rather than the whole range at the end, so that
//! GUP-fast users stop at the locked folios behind the loop, as they do
//! behind `try_to_unmap()`, instead of holding references on some page of
//! the range at every moment until the end. A folio this walk leaves mapped
//! (a device-exclusive entry, a PTE of a `VM_MIXEDMAP` driver's VMA) is
//! then unmapped by `try_to_unmap()`, as in 6.12, before its references
//! are checked; only the folios the loop deferred are rechecked.
//!
//! [`PteRange::unmap_file_pages`]: kernel::mm::pgtable::PteRange::unmap_file_pages

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::mm::mmu_notifier::MmuNotifierRange;
use kernel::mm::rmap::Mapping;
use kernel::mm::{HPAGE_PMD_MASK, HPAGE_PMD_SIZE};

/// Unmaps the small folios of file pages `[start, end)` of `mapping` from
/// every VMA that maps them; returns how many entries it unmapped.
pub(crate) fn unmap_file_range(mapping: &Mapping<'_>, start: c_ulong, end: c_ulong) -> usize {
    if start >= end {
        return 0;
    }
    let mut unmapped = 0;
    let i_mmap = mapping.i_mmap_read();
    for vma in i_mmap.vmas(start, end - 1) {
        // The VMA's part of the range, in file pages then in addresses: the
        // tree only yields VMAs that map some of it.
        let pages = (vma.end() - vma.start()) >> bindings::PAGE_SHIFT;
        let (first, last) = (start.max(vma.pgoff()), end.min(vma.pgoff() + pages));
        if first >= last {
            continue;
        }
        let addr = vma.start() + ((first - vma.pgoff()) << bindings::PAGE_SHIFT);
        let addr_end = vma.start() + ((last - vma.pgoff()) << bindings::PAGE_SHIFT);

        let Some(mut range) = MmuNotifierRange::vma_clear(&vma, addr, addr_end) else {
            continue;
        };
        let invalidation = range.start();
        // One PTE table at a time: a range of PMD size that the VMA does
        // not map PMD-aligned spans two.
        let mut at = addr;
        while at < addr_end {
            let next = (at & HPAGE_PMD_MASK)
                .saturating_add(HPAGE_PMD_SIZE)
                .min(addr_end);
            if let Some(ptes) = vma.find_pte_range(at, next) {
                unmapped += ptes.unmap_file_pages(&invalidation);
            }
            at = next;
        }
        drop(invalidation);
        // As rmap_walk_file() between VMAs.
        // SAFETY: only `i_mmap_rwsem`, a sleeping lock, is held here.
        unsafe { bindings::cond_resched() };
    }
    unmapped
}
