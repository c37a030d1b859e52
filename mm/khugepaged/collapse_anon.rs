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

use core::marker::PhantomPinned;
use core::pin::{pin, Pin};
use core::ptr::NonNull;
use kernel::bindings;
use kernel::ffi::{c_int, c_ulong};
use kernel::mm::folio::{Folio, NewFolio};
use kernel::mm::mmu_notifier::MmuNotifierRange;
use kernel::mm::pgtable::{Pte, PteLock, PteMap, PteMapLock};
use kernel::mm::virt::Vma;
use kernel::mm::{MmapLocked, MmapReadGuard, MmapWriteGuard, HPAGE_PMD_NR};
use kernel::types::Opaque;

use crate::collapse::find_pte_table;
use crate::scan::*;
use crate::scan_file::is_refcount_suitable;

/// The large folios isolated by a collapse (C's `compound_pagelist`): a
/// list through each folio's `lru`, which is free while the folio is
/// isolated from the LRU.
///
/// # Invariants
///
/// `head` is an initialised list head at a fixed address (the value is
/// only reached pinned), and every folio on it is isolated and locked.
struct CompoundList {
    head: Opaque<bindings::list_head>,
    _pin: PhantomPinned,
}

impl CompoundList {
    /// Runs `f` with a new empty list, which `f` must leave empty.
    fn with<R>(f: impl FnOnce(Pin<&Self>) -> R) -> R {
        let list = pin!(Self {
            head: Opaque::uninit(),
            _pin: PhantomPinned,
        });
        // SAFETY: the head is pinned on this stack frame for `f`.
        unsafe { bindings::khugepaged_folio_list_init(list.head.get()) };
        // INVARIANT: initialised and pinned; empty.
        f(list.as_ref())
    }

    /// Whether `folio` is on the list.
    fn contains(self: Pin<&Self>, folio: *mut bindings::folio) -> bool {
        let mut f = core::ptr::null_mut();
        loop {
            // SAFETY: the list is initialised and its folios live (type
            // invariant).
            f = unsafe { bindings::khugepaged_folio_list_next(self.head.get(), f) };
            if f.is_null() {
                return false;
            }
            if f == folio {
                return true;
            }
        }
    }

    /// Adds an isolated, locked folio.
    ///
    /// # Safety
    ///
    /// `folio` must be isolated from the LRU and locked by the caller, who
    /// hands both over to the list.
    unsafe fn push(self: Pin<&Self>, folio: *mut bindings::folio) {
        // SAFETY: `lru` is unused while the folio is isolated.
        unsafe { bindings::khugepaged_folio_list_add(folio, self.head.get()) };
    }

    /// Takes the first folio off the list, handing its isolation and lock
    /// to the caller.
    fn pop(self: Pin<&Self>) -> Option<NonNull<bindings::folio>> {
        // SAFETY: the list is initialised (type invariant).
        let f =
            unsafe { bindings::khugepaged_folio_list_next(self.head.get(), core::ptr::null_mut()) };
        let f = NonNull::new(f)?;
        // SAFETY: `f` is on the list.
        unsafe { bindings::khugepaged_folio_list_del(f.as_ptr()) };
        Some(f)
    }
}

/// `NR_ISOLATED_ANON` or `NR_ISOLATED_FILE`, the counter of `folio`.
///
/// # Safety
///
/// `folio` must be live.
unsafe fn isolated_item(folio: *mut bindings::folio) -> bindings::node_stat_item {
    // SAFETY: by the function's safety requirements.
    let file = unsafe { bindings::folio_is_file_lru(folio) };
    bindings::node_stat_item_NR_ISOLATED_ANON + file as bindings::node_stat_item
}

/// `release_pte_folio()`: undoes the isolation of `folio`: uncounts it,
/// unlocks it and puts it back on the LRU.
///
/// # Safety
///
/// `folio` must be isolated and locked by the caller, who gives both up.
unsafe fn release_pte_folio(folio: *mut bindings::folio) {
    // SAFETY: isolated and locked by the caller, so live.
    unsafe {
        let nr = bindings::folio_nr_pages(folio) as c_int;
        bindings::node_stat_mod_folio(folio, isolated_item(folio), -nr);
        bindings::folio_unlock(folio);
        Folio::from_raw(folio).putback_lru();
    }
}

/// `release_pte_pages()`: releases the small folios mapped by entries
/// `0..end` (read by `get`) and every folio of `compound`.
///
/// # Safety
///
/// Every small folio mapped by those entries and every folio on
/// `compound` must be isolated and locked by the caller, who gives them
/// up; the table must not change meanwhile.
unsafe fn release_pte_pages(
    get: impl Fn(usize) -> Option<Pte>,
    end: usize,
    compound: Pin<&CompoundList>,
) {
    for i in (0..end).rev() {
        // isolate() stopped at the first non-present entry.
        let Some(pfn) = get(i).filter(|pte| !pte.is_zero_page()).and_then(Pte::pfn) else {
            continue;
        };
        // SAFETY: a present entry of a table nobody else changes maps a
        // live page.
        let folio = unsafe { bindings::pfn_folio(pfn) };
        // SAFETY: as above; large folios are released from `compound`.
        if unsafe { bindings::folio_test_large(folio) } {
            continue;
        }
        // SAFETY: isolated and locked (safety requirements).
        unsafe { release_pte_folio(folio) };
    }
    while let Some(folio) = compound.pop() {
        // SAFETY: isolated and locked (safety requirements).
        unsafe { release_pte_folio(folio.as_ptr()) };
    }
}

/// `__collapse_huge_page_isolate()`: under the detached table's lock,
/// checks every entry and locks and isolates every folio it maps. On
/// failure everything isolated so far is released again.
fn isolate(
    vma: &Vma<'_>,
    address: c_ulong,
    ptes: &PteMapLock<'_>,
    cc: &bindings::collapse_control,
    compound: Pin<&CompoundList>,
) -> ScanResult {
    let max = MaxPtes::read();
    let (mut none_or_zero, mut shared, mut referenced) = (0, 0, 0);
    let mut writable = false;
    let mut folio: *mut bindings::folio = core::ptr::null_mut();
    let mut result = SCAN_SUCCEED;
    let mut end = HPAGE_PMD_NR;

    for i in 0..HPAGE_PMD_NR {
        let Some(pte) = ptes.get(i) else { break };
        let addr = address + i as c_ulong * PAGE_SIZE;
        if pte.is_none_or_zero() {
            none_or_zero += 1;
            if !vma.userfaultfd_armed() && (!cc.is_khugepaged || none_or_zero <= max.none) {
                continue;
            }
            result = SCAN_EXCEED_NONE_PTE;
            count_event(bindings::vm_event_item_THP_SCAN_EXCEED_NONE_PTE);
            end = i;
            break;
        }
        if !pte.is_present() {
            result = SCAN_PTE_NON_PRESENT;
            end = i;
            break;
        }
        if pte.uffd_wp() {
            result = SCAN_PTE_UFFD_WP;
            end = i;
            break;
        }
        let f = match ptes.normal_folio(i) {
            Some((f, _)) if !f.is_zone_device() => f,
            _ => {
                result = SCAN_PAGE_NULL;
                end = i;
                break;
            }
        };
        folio = f.as_ptr();
        let large = f.is_large();

        // See hpage_collapse_scan_pmd().
        if f.likely_mapped_shared() {
            shared += 1;
            if cc.is_khugepaged && shared > max.shared {
                result = SCAN_EXCEED_SHARED_PTE;
                count_event(bindings::vm_event_item_THP_SCAN_EXCEED_SHARED_PTE);
                end = i;
                break;
            }
        }

        // A large folio is isolated once, at its first entry.
        if !(large && compound.contains(folio)) {
            // The folio cannot be freed under us (mapped by the locked
            // table); its lock serialises against split_huge_page().
            // SAFETY: as above.
            if !unsafe { bindings::folio_trylock(folio) } {
                result = SCAN_PAGE_LOCK;
                end = i;
                break;
            }
            // GUP (or other external) pins: this process cannot take new
            // ones, the table being detached; another one that shares the
            // page after fork can only trigger CoW.
            if !is_refcount_suitable(f) {
                // SAFETY: locked by us just now.
                unsafe { bindings::folio_unlock(folio) };
                result = SCAN_PAGE_COUNT;
                end = i;
                break;
            }
            // Off the LRU, so that the VM leaves it alone while collapsing.
            // SAFETY: mapped, so referenced; accounted just below, and put
            // back by release_pte_folio() or copy_succeeded().
            if !unsafe { f.isolate_lru() } {
                // SAFETY: locked by us just now.
                unsafe { bindings::folio_unlock(folio) };
                result = SCAN_DEL_PAGE_LRU;
                end = i;
                break;
            }
            // SAFETY: isolated and locked by us.
            unsafe {
                bindings::node_stat_mod_folio(folio, isolated_item(folio), f.nr_pages() as c_int);
                if large {
                    compound.push(folio);
                }
            }
        }

        // khugepaged wants enough young PTEs to justify a collapse.
        if cc.is_khugepaged
            && (pte.is_young() || f.is_young_or_referenced() || vma.mmu_notifier_test_young(addr))
        {
            referenced += 1;
        }
        if pte.is_write() {
            writable = true;
        }
    }

    if result == SCAN_SUCCEED {
        if !writable {
            result = SCAN_PAGE_RO;
        } else if cc.is_khugepaged && referenced == 0 {
            result = SCAN_LACK_REFERENCED_PAGE;
        }
    }
    if result != SCAN_SUCCEED {
        // SAFETY: the small folios of entries `0..end` and those on
        // `compound` were isolated and locked above; the table is locked.
        unsafe { release_pte_pages(|i| ptes.get(i), end, compound) };
    }
    // SAFETY: the arguments are what the C tracepoint takes; a folio starts
    // with its first page (NULL if none was seen).
    unsafe {
        bindings::khugepaged_trace_collapse_isolate(
            folio.cast(),
            none_or_zero,
            referenced,
            writable,
            result as c_int,
        )
    };
    result
}

/// `__collapse_huge_page_copy()`: copies the range into `folio`, each page
/// with `copy_mc_user_highpage()`, holes zeroed. Stops at a memory error
/// and returns `SCAN_COPY_MC`.
fn copy(ptes: &PteMap<'_>, folio: &NewFolio, vma: &Vma<'_>, address: c_ulong) -> ScanResult {
    for i in 0..HPAGE_PMD_NR {
        let Some(pte) = ptes.get(i) else { break };
        let dst = folio.page(i);
        let addr = address + i as c_ulong * PAGE_SIZE;
        if pte.is_none_or_zero() {
            // SAFETY: `dst` is a page of our unmapped folio.
            unsafe { bindings::clear_user_highpage(dst, addr) };
            continue;
        }
        // SAFETY: a present entry of the detached table, whose folio is
        // isolated and locked; `dst` is ours.
        if unsafe {
            bindings::copy_mc_user_highpage(
                dst,
                bindings::pte_page(pte.as_raw()),
                addr,
                vma.as_ptr(),
            )
        } > 0
        {
            return SCAN_COPY_MC;
        }
    }
    SCAN_SUCCEED
}

/// Clears entry `i` of the detached table under `held`, its lock. That
/// cannot fail (the table's own lock, an entry of the range); if it did,
/// the entry would still map a page about to be freed, so it is fatal.
fn clear_detached(ptes: &PteMap<'_>, held: &PteLock<'_>, i: usize) {
    assert!(
        ptes.clear(held, i),
        "PTE {i} of a detached table not cleared"
    );
}

/// `__collapse_huge_page_copy_succeeded()`: clears every entry of the
/// detached table and frees the pages that are now copied.
///
/// # Safety
///
/// [`isolate()`] succeeded on `ptes` with `compound`, and the data was
/// copied: the caller gives up the isolated folios.
unsafe fn copy_succeeded(ptes: &PteMap<'_>, vma: &Vma<'_>, compound: Pin<&CompoundList>) {
    let mm = vma.mm();
    for i in 0..HPAGE_PMD_NR {
        let Some(pte) = ptes.get(i) else { break };
        if pte.is_none_or_zero() {
            // A hole becomes a page of the THP.
            vma.add_mm_counter(bindings::MM_ANONPAGES as i32, 1);
            if pte.is_none() {
                continue;
            }
            {
                // The PTE lock is mostly unnecessary here.
                let held = ptes.lock();
                clear_detached(ptes, &held, i);
            }
            // SAFETY: the zero-page entry was just cleared.
            unsafe { bindings::ksm_might_unmap_zero_page(mm, pte.as_raw()) };
        } else {
            // SAFETY: a present entry of the detached table maps a page of
            // an isolated, locked folio.
            let (page, src) = unsafe {
                let page = bindings::pte_page(pte.as_raw());
                (page, bindings::page_folio(page))
            };
            // SAFETY: small folios are released here, large ones below
            // (safety requirements).
            if !unsafe { bindings::folio_test_large(src) } {
                // SAFETY: isolated and locked by isolate().
                unsafe { release_pte_folio(src) };
            }
            {
                // Under the PTE lock, which also disables preemption for
                // the per-cpu stats of folio_remove_rmap_pte().
                let held = ptes.lock();
                clear_detached(ptes, &held, i);
                // SAFETY: the entry mapping `page` of `vma` was cleared.
                unsafe { bindings::folio_remove_rmap_pte(src, page, vma.as_ptr()) };
            }
            // SAFETY: drops the reference the cleared entry held.
            unsafe { bindings::khugepaged_free_page_and_swap_cache(page) };
        }
    }
    while let Some(src) = compound.pop() {
        let src = src.as_ptr();
        // SAFETY: isolated and locked by isolate(), handed to us.
        unsafe {
            bindings::node_stat_sub_folio(src, isolated_item(src));
            bindings::folio_unlock(src);
            bindings::khugepaged_free_swap_cache(src);
            Folio::from_raw(src).putback_lru();
        }
    }
}

/// `hugepage_vma_revalidate(.., expect_anon = true, ..)`: after the mmap
/// lock was retaken, the VMA at `address` if it is still an anonymous one
/// with an anon_vma where a PMD-sized THP is allowed.
fn revalidate<'a>(
    mmap: &'a MmapLocked<'_>,
    address: c_ulong,
    cc: &mut bindings::collapse_control,
) -> Result<Vma<'a>, ScanResult> {
    let mut vma = core::ptr::null_mut();
    // SAFETY: the mmap lock is held; `vma` and `cc` are ours.
    let result =
        unsafe { bindings::hugepage_vma_revalidate(mmap.as_ptr(), address, true, &mut vma, cc) }
            as ScanResult;
    match NonNull::new(vma) {
        // SAFETY: found in the mm's tree under its mmap lock.
        Some(vma) if result == SCAN_SUCCEED => Ok(unsafe { mmap.vma_from_raw(vma) }),
        _ if result == SCAN_SUCCEED => Err(SCAN_VMA_NULL),
        _ => Err(result),
    }
}

/// Steps 1 and 2 (see the module documentation): the allocated folio and
/// the PMD entry pointer that step 3 must find again, with no lock held.
fn prepare(
    mmap: MmapReadGuard<'_>,
    address: c_ulong,
    referenced: c_int,
    unmapped: c_int,
    cc: &mut bindings::collapse_control,
) -> Result<(NewFolio, *mut bindings::pmd_t), ScanResult> {
    let mm = NonNull::new(mmap.as_ptr()).ok_or(SCAN_FAIL)?;
    // Allocation may compact: no mmap lock meanwhile; the VMA is
    // revalidated under the write lock anyway.
    drop(mmap);

    let mut raw = core::ptr::null_mut();
    // SAFETY: `raw` and `cc` are ours; no lock is held.
    let result = unsafe { bindings::alloc_charge_folio(&mut raw, mm.as_ptr(), cc) } as ScanResult;
    if result != SCAN_SUCCEED {
        return Err(result);
    }
    let raw = NonNull::new(raw).ok_or(SCAN_ALLOC_HUGE_PAGE_FAIL)?;
    // SAFETY: alloc_charge_folio() hands us a new folio with a reference.
    let folio = unsafe { NewFolio::from_raw(raw) };

    // SAFETY: the caller keeps the mm live (khugepaged's mm slot, or
    // MADV_COLLAPSE's own mm) and holds no lock.
    let mmap = unsafe { MmapReadGuard::lock(mm) };
    let (vma, pmd) = {
        let vma = revalidate(&mmap, address, cc)?;
        let pmd = find_pte_table(&vma, address)?;
        (vma.as_ptr(), pmd.as_ptr())
    };
    if unmapped != 0 {
        let mut result = SCAN_SUCCEED;
        // SAFETY: __collapse_huge_page_swapin() returns SCAN_SUCCEED with
        // the lock still held, anything else with it released; `vma` and
        // `pmd` were found under this lock.
        let back = unsafe {
            mmap.lend(|mm| {
                result = bindings::__collapse_huge_page_swapin(mm, vma, address, pmd, referenced)
                    as ScanResult;
                result == SCAN_SUCCEED
            })
        };
        if back.is_none() {
            return Err(result);
        }
    }
    Ok((folio, pmd))
}

/// Steps 3 to 6 (see the module documentation), under the mmap write lock.
/// `folio` is taken when it is mapped; otherwise the caller puts it after
/// releasing the lock, as C does.
fn collapse_locked(
    mmap: &MmapWriteGuard<'_>,
    address: c_ulong,
    folio: &mut Option<NewFolio>,
    old_pmd: *mut bindings::pmd_t,
    cc: &mut bindings::collapse_control,
) -> ScanResult {
    let vma = match revalidate(mmap, address, cc) {
        Ok(vma) => vma,
        Err(result) => return result,
    };
    // Still the table that step 2 found (check_pmd_still_valid()).
    let pmd = match find_pte_table(&vma, address) {
        Ok(pmd) if pmd.as_ptr() == old_pmd => pmd,
        Ok(_) => return SCAN_FAIL,
        Err(result) => return result,
    };
    let Some(vma) = mmap.vma_start_write(vma) else {
        return SCAN_FAIL;
    };
    // revalidate() checked for an anon_vma.
    let Some(anon_vma) = vma.anon_vma() else {
        return SCAN_PAGE_ANON;
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
        return SCAN_FAIL;
    };
    CompoundList::with(|compound| {
        // Waits for GUP-fast walkers that saw the table before the flush.
        let Some(ptes) = detached.map_lock() else {
            // The table goes back before the anon_vma lock is released.
            drop(detached);
            drop(av);
            return SCAN_PMD_NULL;
        };
        let result = isolate(&vma, address, &ptes, cc, compound);
        let ptes = ptes.unlock();
        if result != SCAN_SUCCEED {
            drop(ptes);
            // The table goes back before the anon_vma lock is released.
            drop(detached);
            drop(av);
            return result;
        }
        // Every folio is isolated and locked: anon rmap walks skip them.
        drop(av);

        let new = folio.take();
        let copied = match &new {
            Some(new) => copy(&ptes, new, &vma, address),
            None => SCAN_FAIL,
        };
        match new {
            Some(new) if copied == SCAN_SUCCEED => {
                // SAFETY: isolate() succeeded and the data is copied.
                unsafe { copy_succeeded(&ptes, &vma, compound) };
                drop(ptes);
                // SAFETY: every entry was cleared by copy_succeeded(),
                // `new` holds the range's data, and the VMA is anonymous
                // with an anon_vma (revalidate()).
                unsafe { detached.map_anon_folio_pmd(new) };
                SCAN_SUCCEED
            }
            new => {
                // Unused: the caller puts it after unlocking.
                *folio = new;
                // The table goes back before the folios (still isolated
                // and locked) are released.
                drop(detached);
                // SAFETY: isolate() succeeded: every folio mapped by the
                // table and every one on `compound` is isolated and locked.
                unsafe { release_pte_pages(|i| ptes.get(i), HPAGE_PMD_NR, compound) };
                copied
            }
        }
    })
}

/// Rust `collapse_huge_page()`: see the module documentation.
///
/// # Safety
///
/// As the C function: `mm` is live while the caller runs, the caller
/// holds its mmap lock for reading and this function releases it;
/// `address` is PMD-aligned and `cc` the caller's collapse control.
pub(crate) unsafe fn collapse_huge_page(
    mm: NonNull<bindings::mm_struct>,
    address: c_ulong,
    referenced: c_int,
    unmapped: c_int,
    cc: &mut bindings::collapse_control,
) -> ScanResult {
    // SAFETY: the caller holds the read lock and hands it over.
    let mmap = unsafe { MmapReadGuard::adopt(mm) };
    let result = match prepare(mmap, address, referenced, unmapped, cc) {
        Ok((folio, pmd)) => {
            let mut folio = Some(folio);
            // SAFETY: live (safety requirements); no lock held.
            let mmap = unsafe { MmapWriteGuard::lock(mm) };
            let result = collapse_locked(&mmap, address, &mut folio, pmd, cc);
            // An unused folio is put once the lock is released.
            drop(mmap);
            drop(folio);
            result
        }
        Err(result) => result,
    };
    // SAFETY: the arguments are what the C tracepoint takes.
    unsafe {
        bindings::khugepaged_trace_collapse_huge_page(
            mm.as_ptr(),
            result == SCAN_SUCCEED,
            result as c_int,
        )
    };
    result
}
