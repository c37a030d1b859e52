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

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::mm::{Mm, HPAGE_PMD_NR};
use kernel::sync::handoff::SpinlockHandoff;

use crate::khugepaged_c::{self, test_exit_or_disable as exit_or_disable, ScanCursor};
use crate::scan::*;

const HPAGE_PMD_SIZE: c_ulong = bindings::RUST_HPAGE_PMD_SIZE;

/// `cond_resched()`, between VMAs and PMD ranges of the walk.
fn resched() {
    // SAFETY: the walk holds no spinlock and opens no RCU read-side
    // section: only the mmap lock (a sleeping lock) is held around this.
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
    cursor: &ScanCursor<'_>,
    mm: &Mm,
    pages: u32,
    addr: &mut c_ulong,
    result: &mut ScanResult,
    cc: &mut CollapseControl,
) -> Walk {
    let mut progress = 0u32;
    // Do not wait for the lock (to avoid long waits): go on with the next
    // mm instead.
    let Some(mut mmap) = mm.mmap_read_trylock() else {
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
        resched();
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
            resched();
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
                let Some(file) = vma.get_file() else {
                    break;
                };
                let pgoff = vma.linear_page_index(*addr);
                drop(mmap);
                // Through the C dispatcher, as the C loop does: the
                // selected implementation (Rust here) runs and is counted.
                *result = khugepaged_c::hpage_collapse_scan_file(mm, *addr, &file, pgoff, cc);
                drop(file);
                if *result == Err(SCAN_PTE_MAPPED_HUGEPAGE) {
                    let mmap = mm.mmap_read_lock();
                    if exit_or_disable(mm) {
                        return Walk {
                            progress,
                            done: false,
                        };
                    }
                    // Also through the dispatcher.
                    *result = khugepaged_c::collapse_pte_mapped_thp(&mmap, *addr, false);
                    if *result == Err(SCAN_PMD_MAPPED) {
                        *result = Ok(());
                    }
                }
                account(cursor, *result, addr, &mut progress);
                // The mmap lock was dropped: the walk ends here.
                return Walk {
                    progress,
                    done: false,
                };
            }

            let (res, back) = match khugepaged_c::hpage_collapse_scan_pmd(mmap, *addr, cc) {
                Ok(scanned) => scanned,
                // Unreachable: the VMA was found under this lock just now.
                Err(guard) => {
                    mmap = guard;
                    break;
                }
            };
            *result = res;
            account(cursor, *result, addr, &mut progress);
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
fn account(cursor: &ScanCursor<'_>, result: ScanResult, addr: &mut c_ulong, progress: &mut u32) {
    if result.is_ok() {
        cursor.count_collapsed();
    }
    *addr += HPAGE_PMD_SIZE;
    *progress += HPAGE_PMD_NR as u32;
}

/// Rust `khugepaged_scan_mm_slot()`: see the module documentation.
/// `cursor` is the slot to work on, read under `held`; returns the
/// progress and the lock, held again.
pub(crate) fn khugepaged_scan_mm_slot<'a>(
    pages: u32,
    result: &mut ScanResult,
    cc: &mut CollapseControl,
    held: SpinlockHandoff<'a>,
    mut cursor: ScanCursor<'_>,
) -> (u32, SpinlockHandoff<'a>) {
    *result = Err(SCAN_FAIL);
    let released = held.unlock();

    let mut addr = cursor.addr;
    let walk = walk_mm(&cursor, cursor.mm(), pages, &mut addr, result, cc);
    cursor.addr = addr;

    let held = released.relock();
    cursor.advance(&held, walk.done);
    (walk.progress, held)
}
