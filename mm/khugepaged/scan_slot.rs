// SPDX-License-Identifier: GPL-2.0

//! `khugepaged_scan_mm_slot()`: the khugepaged thread's work on one mm.
//!
//! Same steps as the C reference in `mm/khugepaged.c` (6.12). Called with
//! `khugepaged_mm_lock` held, which it drops while it works on the mm and
//! takes again to move the cursor ([`SpinlockHandoff`]). Under
//! `mmap_read_trylock()` (never waiting for the mmap lock), it walks the
//! mm's VMAs from the cursor's address, skips those THPs are not allowed
//! in (sysfs settings obeyed), and scans each PMD range until `pages` is
//! reached:
//!
//! - file and shmem VMAs: the mmap lock is dropped for the page-cache scan
//!   (`hpage_collapse_scan_file()`), with a file reference; on
//!   `SCAN_PTE_MAPPED_HUGEPAGE` the lock is taken again for
//!   `collapse_pte_mapped_thp(mm, addr, false)`. Either way the walk ends
//!   there, as the mmap lock was dropped. Both are called through their C
//!   dispatchers, as the C loop calls them: the selected implementation
//!   runs (Rust, unless it was switched meanwhile) and `impl_stats` counts
//!   it.
//! - anonymous VMAs: the C `hpage_collapse_scan_pmd()` (and its
//!   `collapse_huge_page()`), which is lent the mmap lock and may release
//!   it.
//!
//! The slot list stays in C: `khugepaged_scan_cursor()` and
//! `khugepaged_scan_advance()` read and move the cursor under
//! `khugepaged_mm_lock`, count full scans and free the slot of an exiting
//! mm.

use core::ptr::NonNull;
use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::mm::virt::Vma;
use kernel::mm::{MmapReadGuard, HPAGE_PMD_NR};
use kernel::sync::handoff::SpinlockHandoff;

use crate::scan::*;

const HPAGE_PMD_SIZE: c_ulong = bindings::RUST_HPAGE_PMD_SIZE;

/// A file reference (`get_file()`), dropped with `fput()`.
///
/// # Invariants
///
/// This owns one reference on `file`.
struct FileRef(NonNull<bindings::file>);

impl FileRef {
    /// Takes a reference on the file `vma` maps, if any.
    fn of(vma: &Vma<'_>) -> Option<Self> {
        // SAFETY: the VMA is valid; `vm_file` is set for its life.
        let file = NonNull::new(unsafe { (*vma.as_ptr()).vm_file })?;
        // SAFETY: the VMA's own reference keeps the file live here.
        unsafe { bindings::get_file(file.as_ptr()) };
        // INVARIANT: referenced just now.
        Some(Self(file))
    }
}

impl Drop for FileRef {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}

/// `hpage_collapse_test_exit_or_disable(mm)`.
fn exit_or_disable(mm: NonNull<bindings::mm_struct>) -> bool {
    // SAFETY: the mm slot keeps a reference on the mm (mm_count).
    unsafe { bindings::khugepaged_test_exit_or_disable(mm.as_ptr()) }
}

/// `cond_resched()`.
fn cond_resched() {
    // SAFETY: called with no spinlock or RCU section held.
    unsafe { bindings::cond_resched() };
}

/// How the walk of one mm ended.
struct Walk {
    /// Pages (or VMAs, mm) accounted against `pages`.
    progress: u32,
    /// Every VMA was walked, or the mm could not be locked: go on with the
    /// next mm (C's `vma == NULL`).
    done: bool,
}

/// The walk of `mm`'s VMAs from `*addr`, without `khugepaged_mm_lock`.
fn walk_mm(
    mm: NonNull<bindings::mm_struct>,
    pages: u32,
    addr: &mut c_ulong,
    result: &mut ScanResult,
    cc: &mut bindings::collapse_control,
) -> Walk {
    let mut progress = 0u32;
    // Do not wait for the lock (to avoid long waits): go on with the next
    // mm instead.
    // SAFETY: the mm slot keeps a reference on the mm.
    let Some(mut mmap) = (unsafe { MmapReadGuard::try_lock(mm) }) else {
        return Walk {
            progress,
            done: true,
        };
    };
    progress += 1;
    if exit_or_disable(mm) {
        return Walk {
            progress,
            done: true,
        };
    }

    let mut next = *addr;
    loop {
        let Some(vma) = mmap.find_vma(next) else {
            // Every VMA walked.
            return Walk {
                progress,
                done: true,
            };
        };
        next = vma.end();
        cond_resched();
        if exit_or_disable(mm) {
            progress += 1;
            return Walk {
                progress,
                done: false,
            };
        }
        if !vma.thp_pmd_allowed(true) {
            progress += 1;
            continue;
        }
        let hstart = vma.start().next_multiple_of(HPAGE_PMD_SIZE);
        let hend = vma.end() & !(HPAGE_PMD_SIZE - 1);
        if *addr > hend {
            progress += 1;
            continue;
        }
        if *addr < hstart {
            *addr = hstart;
        }
        let is_file = !vma.is_anonymous();

        while *addr < hend {
            cond_resched();
            if exit_or_disable(mm) {
                return Walk {
                    progress,
                    done: false,
                };
            }
            // The same VMA: the lock has been held since it was found.
            let Some(vma) = mmap.vma_lookup(*addr) else {
                break;
            };
            if is_file {
                let Some(file) = FileRef::of(&vma) else {
                    break;
                };
                let pgoff = vma.linear_page_index(*addr);
                drop(mmap);
                // Through the C dispatcher, as the C loop does: the
                // selected implementation (Rust here) runs and is counted.
                // SAFETY: `file` is referenced, no mmap lock is held, `cc`
                // is the caller's and `mm` maps `file` at `*addr`.
                *result = unsafe {
                    bindings::hpage_collapse_scan_file(
                        mm.as_ptr(),
                        *addr,
                        file.0.as_ptr(),
                        pgoff,
                        cc,
                    )
                } as ScanResult;
                drop(file);
                if *result == SCAN_PTE_MAPPED_HUGEPAGE {
                    // SAFETY: the mm slot keeps a reference on the mm, and
                    // no lock is held.
                    let mmap = unsafe { MmapReadGuard::lock(mm) };
                    if exit_or_disable(mm) {
                        return Walk {
                            progress,
                            done: false,
                        };
                    }
                    // Also through the dispatcher.
                    // SAFETY: the mmap lock is held (`mmap`).
                    *result =
                        unsafe { bindings::collapse_pte_mapped_thp(mmap.as_ptr(), *addr, false) }
                            as ScanResult;
                    if *result == SCAN_PMD_MAPPED {
                        *result = SCAN_SUCCEED;
                    }
                }
                account(*result, addr, &mut progress);
                // The mmap lock was dropped: the walk ends here.
                return Walk {
                    progress,
                    done: false,
                };
            }

            let vma_ptr = vma.as_ptr();
            let haddr = *addr;
            let mut res = SCAN_FAIL;
            // SAFETY: hpage_collapse_scan_pmd() reports in `locked` whether
            // it still holds the lock it was lent.
            let back = unsafe {
                mmap.lend(|mm_ptr| {
                    let mut locked = true;
                    res = bindings::hpage_collapse_scan_pmd(mm_ptr, vma_ptr, haddr, &mut locked, cc)
                        as ScanResult;
                    locked
                })
            };
            *result = res;
            account(*result, addr, &mut progress);
            // The mmap lock is dropped before every hugepage allocation, so
            // a failed allocation ends the walk here with its result.
            let Some(guard) = back else {
                return Walk {
                    progress,
                    done: false,
                };
            };
            mmap = guard;
            if progress >= pages {
                return Walk {
                    progress,
                    done: false,
                };
            }
        }
    }
}

/// The accounting after one PMD range: a collapse counted, the cursor
/// moved on, `HPAGE_PMD_NR` pages of progress.
fn account(result: ScanResult, addr: &mut c_ulong, progress: &mut u32) {
    if result == SCAN_SUCCEED {
        // SAFETY: only the khugepaged thread calls this.
        unsafe { bindings::khugepaged_count_collapsed() };
    }
    *addr += HPAGE_PMD_SIZE;
    *progress += HPAGE_PMD_NR as u32;
}

/// Rust `khugepaged_scan_mm_slot()`: see the module documentation.
/// Returns the progress and the lock, held again.
pub(crate) fn khugepaged_scan_mm_slot<'a>(
    pages: u32,
    result: &mut ScanResult,
    cc: &mut bindings::collapse_control,
    held: SpinlockHandoff<'a>,
) -> (u32, SpinlockHandoff<'a>) {
    *result = SCAN_FAIL;
    let mut addr: c_ulong = 0;
    // SAFETY: khugepaged_mm_lock is held (`held`); the khugepaged thread
    // only calls this with a non-empty slot list.
    let mm = unsafe { bindings::khugepaged_scan_cursor(&mut addr) };
    let Some(mm) = NonNull::new(mm) else {
        return (0, held);
    };
    let released = held.unlock();

    let walk = walk_mm(mm, pages, &mut addr, result, cc);

    let held = released.relock();
    // SAFETY: khugepaged_mm_lock is held again and `mm` is the cursor's.
    unsafe { bindings::khugepaged_scan_advance(mm.as_ptr(), addr, walk.done) };
    (walk.progress, held)
}
