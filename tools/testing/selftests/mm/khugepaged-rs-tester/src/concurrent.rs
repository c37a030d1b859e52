// SPDX-License-Identifier: GPL-2.0

//! The concurrent mode: threads racing random operations on shared regions,
//! with khugepaged scanning them (no sleep between scans), compared between
//! C and Rust by invariants, not by step order.
//!
//! Every thread runs its own seeded sequence, so what it does is the same in
//! both runs; only the interleaving differs. Each page has an owner thread,
//! the only one that changes its data (writes, `MADV_DONTNEED`, hole
//! punching), and that keeps the page's expected byte in a model. The other
//! operations must keep every byte: MADV_COLLAPSE of a region or an extent,
//! `mprotect()` of a page to split the VMA and the PMD (toggling PROT_EXEC
//! keeps a racing writer writing), `MADV_PAGEOUT`, read faults of never
//! written anonymous pages (the zero page), fork + exit, and `mremap()` of
//! a region between two slots.
//!
//! Two regions have one owner thread for all their pages: a shared memfd
//! its owner truncates (and extends again: the pages past the cut read 0),
//! so that no other thread touches a page past the end of the file; and an
//! anonymous region registered for asynchronous uffd-wp, whose owner
//! write-protects pages (a write takes the protection away again). A page
//! protected and not written or dropped since must keep its uffd-wp bit
//! (pagemap bit 57) through every collapse: checked after the threads,
//! before the region is unregistered for the final collapse.
//!
//! After the threads, every byte of every region is checked against the
//! model, each region is collapsed once more (retrying transient EAGAIN),
//! and its huge and resident kB are recorded. The two runs must give the
//! same record, no wrong byte, and MADV_COLLAPSE errnos inside what 6.12
//! can return for these races; the sets of errnos each run saw are printed.

use super::*;
use std::collections::BTreeSet;
use std::os::raw::c_ulong;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Barrier, Mutex};

const MADV_DONTNEED: c_int = 4;
const MADV_PAGEOUT: c_int = 21;
const PROT_EXEC: c_int = 4;
const MREMAP_MAYMOVE: c_int = 1;
const MREMAP_FIXED: c_int = 2;
const FALLOC_FL_KEEP_SIZE: c_int = 1;
const FALLOC_FL_PUNCH_HOLE: c_int = 2;
const EAGAIN: i64 = 11;
const ENOMEM: i64 = 12;
const EBUSY: i64 = 16;
const EINVAL: i64 = 22;
const O_NONBLOCK: c_int = 0o4000;
const O_CLOEXEC: c_int = 0o2000000;
#[cfg(target_arch = "x86_64")]
const SYS_USERFAULTFD: c_long = 323;
#[cfg(target_arch = "aarch64")]
const SYS_USERFAULTFD: c_long = 282;
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
// _IOWR/_IOR(0xaa, nr, the struct): the same on x86_64 and arm64.
const UFFDIO_API: c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: c_ulong = 0xc020_aa00;
const UFFDIO_UNREGISTER: c_ulong = 0x8010_aa01;
const UFFDIO_WRITEPROTECT: c_ulong = 0xc018_aa06;
const PM_UFFD_WP: u64 = 1 << 57;
/// What a racing MADV_COLLAPSE may fail with (madvise_collapse_errno(),
/// and ENOMEM for a range mremap() just moved away).
const COLLAPSE_ERRNOS: [i64; 4] = [EAGAIN, EINVAL, ENOMEM, EBUSY];

extern "C" {
    fn mremap(old: *mut c_void, old_len: usize, new_len: usize, flags: c_int, ...) -> *mut c_void;
    fn fallocate(fd: c_int, mode: c_int, off: c_long, len: c_long) -> c_int;
    fn pwrite(fd: c_int, buf: *const c_void, n: usize, off: c_long) -> isize;
    fn pread(fd: c_int, buf: *mut c_void, n: usize, off: c_long) -> isize;
    fn syscall(nr: c_long, ...) -> c_long;
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// A userfaultfd registering `[base, base+len)` for asynchronous uffd-wp
/// (a write to a protected page resolves itself), or -1.
fn uffd_wp_register(base: *mut u8, len: usize) -> c_int {
    // SAFETY: the syscall takes flags only.
    let uffd = unsafe { syscall(SYS_USERFAULTFD, O_CLOEXEC | O_NONBLOCK) } as c_int;
    if uffd < 0 {
        return -1;
    }
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    let mut reg = UffdioRegister {
        range: UffdioRange {
            start: base as u64,
            len: len as u64,
        },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: the ioctls read and write the structs passed, which live
    // across the calls.
    let ok = unsafe {
        ioctl(uffd, UFFDIO_API, &mut api as *mut UffdioApi) == 0
            && ioctl(uffd, UFFDIO_REGISTER, &mut reg as *mut UffdioRegister) == 0
    };
    if !ok {
        // SAFETY: our own fd.
        unsafe { close(uffd) };
        return -1;
    }
    uffd
}

/// Is page `p` of `r` uffd-wp protected (pagemap bit 57, read from
/// `pagemap`, this process's)? None if unknown.
fn uffd_wp_bit(pagemap: &fs::File, r: &Shared, p: usize) -> Option<bool> {
    let mut ent = 0u64;
    let off = (r.addr() as usize + p * PAGE) / PAGE * 8;
    // SAFETY: an 8-byte read into `ent`.
    let n = unsafe {
        pread(
            std::os::fd::AsRawFd::as_raw_fd(pagemap),
            (&mut ent as *mut u64).cast(),
            8,
            off as c_long,
        )
    };
    (n == 8).then_some(ent & PM_UFFD_WP != 0)
}

/// One region of the run: where it is, what backs it, the model.
struct Shared {
    kind: Kind,
    /// The current address (`mremap()` moves the last region).
    base: AtomicUsize,
    len: usize,
    prot: c_int,
    fd: c_int,
    /// Per page, the byte every byte of it must hold.
    model: Vec<AtomicU8>,
    /// Per page, the byte a private mapping falls back to (its file's).
    backing: Vec<u8>,
    /// The thread that owns every page, if one does.
    sole: Option<usize>,
    /// The userfaultfd of a region registered for uffd-wp, or -1.
    uffd: c_int,
    /// Per page of such a region: protected, and neither written nor
    /// dropped since (its uffd-wp bit must be set).
    wp: Vec<AtomicBool>,
}

impl Shared {
    fn addr(&self) -> *mut u8 {
        self.base.load(Relaxed) as *mut u8
    }
    fn pages(&self) -> usize {
        self.len / PAGE
    }
}

fn page_byte(seed: u64, region: usize, page: usize) -> u8 {
    // Never 0: that is what a dropped anonymous page reads.
    pattern(seed ^ (region as u64 * 0x51), page * PAGE) | 1
}

/// Maps region `id` of kind `kind`, `extents` 2 MiB long, fills it (small
/// pages: THP is "madvise" and the region has no MADV_HUGEPAGE yet), then
/// MADV_HUGEPAGE so that khugepaged scans it.
fn map_shared(
    dir: &Option<String>,
    seed: u64,
    id: usize,
    kind: Kind,
    extents: usize,
) -> Option<Shared> {
    let len = extents * PMD;
    let base = reserve(len, 0);
    if base.is_null() {
        return None;
    }
    let backing: Vec<u8> = (0..len / PAGE).map(|p| page_byte(seed, id, p)).collect();
    let mut fd = -1;
    let (prot, flags) = match kind {
        Kind::Anon => (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS),
        Kind::ShmemShared | Kind::ShmemPrivate => {
            fd = shmem_file("tester-concurrent", len);
            for (p, &b) in backing.iter().enumerate() {
                let buf = [b; PAGE];
                // SAFETY: a write of our own buffer to our own memfd.
                unsafe { pwrite(fd, buf.as_ptr().cast(), PAGE, (p * PAGE) as c_long) };
            }
            let flags = if kind == Kind::ShmemShared {
                MAP_SHARED
            } else {
                MAP_PRIVATE
            };
            (PROT_READ | PROT_WRITE, flags)
        }
        Kind::FilePrivate => {
            let path = format!("{}/tester-c.{}.{}", dir.as_ref()?, std::process::id(), id);
            let data: Vec<u8> = (0..len).map(|o| backing[o / PAGE]).collect();
            fd = read_only_file(&path, &data)?;
            // The name is not needed once the file is open.
            let _ = fs::remove_file(&path);
            (PROT_READ, MAP_PRIVATE)
        }
    };
    // SAFETY: `base` is an address range we reserved and released.
    let p = unsafe { mmap(base.cast(), len, prot, flags | MAP_FIXED, fd, 0) };
    if p == MAP_FAILED {
        return None;
    }
    if kind == Kind::Anon {
        for (o, b) in (0..len).map(|o| (o, backing[o / PAGE])) {
            // SAFETY: writable and mapped.
            unsafe { *base.add(o) = b };
        }
    }
    // SAFETY: our own range.
    unsafe { madvise(base.cast(), len, MADV_HUGEPAGE) };
    let model = backing.iter().map(|&b| AtomicU8::new(b)).collect();
    Some(Shared {
        kind,
        base: AtomicUsize::new(base as usize),
        len,
        prot,
        fd,
        model,
        wp: (0..len / PAGE).map(|_| AtomicBool::new(false)).collect(),
        backing,
        sole: None,
        uffd: -1,
    })
}

/// Wrong bytes of page `p` of `r` against the model, read through the
/// mapping (the caller owns the page, or the threads are done).
fn bad_bytes(r: &Shared, p: usize) -> usize {
    let want = r.model[p].load(Relaxed);
    // SAFETY: a mapped, readable page of the region, which no other thread
    // unmaps or moves (the moved region is read by its mover only).
    let page = unsafe { std::slice::from_raw_parts(r.addr().add(p * PAGE), PAGE) };
    page.iter().filter(|&&b| b != want).count()
}

/// What the threads saw: wrong bytes, and the errnos per operation.
#[derive(Default)]
struct Seen {
    bad: Vec<String>,
    errnos: std::collections::BTreeMap<&'static str, BTreeSet<i64>>,
}

fn note(seen: &Mutex<Seen>, op: &'static str, ret: i64) {
    if ret < 0 {
        seen.lock()
            .unwrap()
            .errnos
            .entry(op)
            .or_default()
            .insert(-ret);
    }
}

/// One thread's `steps` operations.
fn worker(
    seed: u64,
    t: usize,
    threads: usize,
    steps: usize,
    regions: &[Shared],
    slots: (usize, usize),
    seen: &Mutex<Seen>,
    start: &Barrier,
) {
    let mut rng = Rng::new(seed.wrapping_mul(1000).wrapping_add(t as u64));
    // Each thread's first allocation maps its malloc arena: all of them
    // before the first mremap() leaves a slot free for a moment.
    std::hint::black_box(Box::new(t));
    start.wait();
    let moved = regions.len() - 1;
    for _ in 0..steps {
        let i = rng.below(regions.len());
        let r = &regions[i];
        let p = rng.below(r.pages());
        // A page this thread owns, near `p`.
        let (own, owns) = match r.sole {
            Some(o) => (p, o == t),
            None => {
                let own = (p - p % threads + t).min(r.pages() - 1);
                (own, own % threads == t)
            }
        };
        // The moved region: only its mover (thread 0) touches its pages.
        let touch_ok = i != moved || t == 0;
        match rng.below(16) {
            0..=2 => {
                // SAFETY: MADV_COLLAPSE checks the range itself.
                let ret = ret_of(unsafe { madvise(r.addr().cast(), r.len, MADV_COLLAPSE) });
                note(seen, "collapse", ret);
            }
            3 => {
                let a = (r.addr() as usize + p * PAGE) & !(PMD - 1);
                // SAFETY: as above.
                let ret = ret_of(unsafe { madvise(a as *mut c_void, PMD, MADV_COLLAPSE) });
                note(seen, "collapse", ret);
            }
            4 | 5 if owns && touch_ok && r.prot & PROT_WRITE != 0 => {
                let v = (rng.next() as u8) | 1;
                r.model[own].store(v, Relaxed);
                // A write to a protected page takes the protection away.
                r.wp[own].store(false, Relaxed);
                // SAFETY: a writable page this thread owns.
                unsafe { std::ptr::write_bytes(r.addr().add(own * PAGE), v, PAGE) };
            }
            6 | 7 if owns && touch_ok => {
                let bad = bad_bytes(r, own);
                if bad > 0 {
                    seen.lock().unwrap().bad.push(format!(
                        "thread {t}: region {i} ({:?}) page {own}: {bad} bytes wrong",
                        r.kind
                    ));
                }
            }
            8 if i != moved => {
                let a = r.addr().wrapping_add(p * PAGE);
                // SAFETY: one page of our own range; PROT_EXEC added and
                // taken away again, so that a racing writer never faults.
                let ret = unsafe {
                    ret_of(mprotect(a.cast(), PAGE, r.prot | PROT_EXEC))
                        + ret_of(mprotect(a.cast(), PAGE, r.prot))
                };
                note(seen, "mprotect", ret);
            }
            9 if i != moved => {
                let a = (r.addr() as usize + p * PAGE) & !(PMD - 1);
                // SAFETY: our own range; reclaim keeps the data.
                let ret = ret_of(unsafe { madvise(a as *mut c_void, PMD, MADV_PAGEOUT) });
                note(seen, "pageout", ret);
            }
            10 if owns && touch_ok && r.kind != Kind::FilePrivate => {
                // Anonymous: zero; a private mapping: its file's byte again;
                // shared shmem: the page cache keeps it.
                match r.kind {
                    Kind::Anon => r.model[own].store(0, Relaxed),
                    Kind::ShmemPrivate => r.model[own].store(r.backing[own], Relaxed),
                    _ => {}
                }
                r.wp[own].store(false, Relaxed);
                // SAFETY: a page this thread owns.
                let ret = ret_of(unsafe {
                    madvise(r.addr().add(own * PAGE).cast(), PAGE, MADV_DONTNEED)
                });
                note(seen, "dontneed", ret);
            }
            11 if owns && touch_ok && r.kind == Kind::ShmemShared => {
                r.model[own].store(0, Relaxed);
                // SAFETY: a hole in our own memfd, at a page this thread owns.
                let ret = ret_of(unsafe {
                    fallocate(
                        r.fd,
                        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (own * PAGE) as c_long,
                        PAGE as c_long,
                    )
                });
                note(seen, "punch", ret);
            }
            12 if t == 0 => {
                let r = &regions[moved];
                let from = r.base.load(Relaxed);
                let to = if from == slots.0 { slots.1 } else { slots.0 };
                // SAFETY: the moved region's own mapping, to the other of its
                // two reserved slots.
                let got = unsafe {
                    mremap(
                        from as *mut c_void,
                        r.len,
                        r.len,
                        MREMAP_MAYMOVE | MREMAP_FIXED,
                        to as *mut c_void,
                    )
                };
                if got == MAP_FAILED {
                    note(seen, "mremap", -(errno() as i64));
                } else {
                    r.base.store(to, Relaxed);
                    // SAFETY: the slot just vacated, reserved again.
                    unsafe {
                        mmap(
                            from as *mut c_void,
                            r.len,
                            PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                            -1,
                            0,
                        )
                    };
                }
            }
            14 if owns && r.sole.is_some() && r.kind == Kind::ShmemShared => {
                // Truncate, and extend again: the pages past the cut are
                // holes. No other thread touches this region's pages.
                let cut = 1 + rng.below(r.pages() - 1);
                for q in cut..r.pages() {
                    r.model[q].store(0, Relaxed);
                }
                // SAFETY: our own memfd.
                let ret = unsafe {
                    ret_of(ftruncate(r.fd, (cut * PAGE) as c_long))
                        + ret_of(ftruncate(r.fd, r.len as c_long))
                };
                note(seen, "truncate", ret);
            }
            15 if owns && r.uffd >= 0 => {
                // Up to 16 pages, all this thread's.
                let n = (1 + rng.below(16)).min(r.pages() - own);
                let mut wp = UffdioWriteprotect {
                    range: UffdioRange {
                        start: (r.addr() as usize + own * PAGE) as u64,
                        len: (n * PAGE) as u64,
                    },
                    mode: UFFDIO_WRITEPROTECT_MODE_WP,
                };
                // Protected before the ioctl returns: marked after it.
                // SAFETY: the ioctl reads `wp`, pages of the registered range.
                let ret = ret_of(unsafe {
                    ioctl(
                        r.uffd,
                        UFFDIO_WRITEPROTECT,
                        &mut wp as *mut UffdioWriteprotect,
                    )
                });
                if ret == 0 {
                    for q in own..own + n {
                        r.wp[q].store(true, Relaxed);
                    }
                }
                note(seen, "writeprotect", ret);
            }
            13 => {
                // SAFETY: the child only exits; fork() copies the tables
                // (anonymous) or not (shared), racing the collapses.
                unsafe {
                    let pid = fork();
                    if pid == 0 {
                        _exit(0);
                    }
                    let mut st = 0;
                    waitpid(pid, &mut st, 0);
                }
            }
            _ => std::thread::yield_now(),
        }
    }
}

/// Runs `seed` concurrently in this (child) process; returns its record.
pub(crate) fn run(dir: &Option<String>, seed: u64, steps: usize, threads: usize) -> Vec<String> {
    let mut kinds = vec![
        (Kind::Anon, 2),
        (Kind::ShmemShared, 2),
        (Kind::ShmemPrivate, 1),
    ];
    if dir.is_some() {
        kinds.push((Kind::FilePrivate, 1));
    }
    // One owner each: the truncated memfd, and the uffd-wp region.
    let (truncated, protected) = (kinds.len(), kinds.len() + 1);
    kinds.push((Kind::ShmemShared, 1));
    kinds.push((Kind::Anon, 1));
    // Last: the region thread 0 moves between two reserved slots.
    kinds.push((Kind::Anon, 1));
    let mut regions = Vec::new();
    for (id, &(kind, extents)) in kinds.iter().enumerate() {
        match map_shared(dir, seed, id, kind, extents) {
            Some(r) => regions.push(r),
            None => return vec![format!("cannot map region {id} ({kind:?})")],
        }
    }
    regions[truncated].sole = Some(1 % threads);
    regions[protected].sole = Some(2 % threads);
    regions[protected].uffd = uffd_wp_register(regions[protected].addr(), regions[protected].len);
    if regions[protected].uffd < 0 {
        return vec![format!("cannot register region {protected} for uffd-wp")];
    }
    let other = reserve(PMD, 0);
    // SAFETY: a reservation, so that nothing else lands in the second slot.
    unsafe {
        mmap(
            other.cast(),
            PMD,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
            -1,
            0,
        )
    };
    let slots = (regions.last().unwrap().base.load(Relaxed), other as usize);

    let seen = Mutex::new(Seen::default());
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (regions, seen, start) = (&regions, &seen, &start);
            s.spawn(move || worker(seed, t, threads, steps, regions, slots, seen, start));
        }
    });

    let seen = seen.into_inner().unwrap();
    let mut out: Vec<String> = seen.bad.clone();
    for (i, r) in regions.iter().enumerate() {
        let bad: usize = (0..r.pages()).map(|p| bad_bytes(r, p)).sum();
        let mut wp = String::new();
        if r.uffd >= 0 {
            // Opened once for the region's pages.
            let pagemap = fs::File::open("/proc/self/pagemap").ok();
            let lost = (0..r.pages())
                .filter(|&p| {
                    r.wp[p].load(Relaxed)
                        && pagemap.as_ref().and_then(|f| uffd_wp_bit(f, r, p)) != Some(true)
                })
                .count();
            let kept = (0..r.pages()).filter(|&p| r.wp[p].load(Relaxed)).count();
            // The owner's own seeded steps decide which: part of the record.
            wp = format!(" wp={kept}");
            if lost > 0 {
                out.push(format!(
                    "region {i}: {lost} of {kept} write-protected pages lost their uffd-wp bit"
                ));
            }
            let mut range = UffdioRange {
                start: r.addr() as u64,
                len: r.len as u64,
            };
            // Unregistered, for the final collapse (which a uffd-wp
            // VMA refuses): that clears the bits.
            // SAFETY: the ioctl reads `range`, our registered range.
            unsafe {
                ioctl(r.uffd, UFFDIO_UNREGISTER, &mut range as *mut UffdioRange);
                close(r.uffd);
            }
        }
        if r.kind == Kind::Anon {
            // Writable entries again, whatever the interleaving left (a
            // fork's write protection, the zero page, swap-ins): a
            // collapse with none is SCAN_PAGE_RO. Same bytes.
            for p in 0..r.pages() {
                // SAFETY: a writable page of the region; the threads are done.
                unsafe {
                    std::ptr::write_volatile(r.addr().add(p * PAGE), r.model[p].load(Relaxed))
                };
            }
        }
        let mut ret = 0;
        for _ in 0..5 {
            // SAFETY: our own range.
            ret = ret_of(unsafe { madvise(r.addr().cast(), r.len, MADV_COLLAPSE) });
            if ret != -EAGAIN {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let bad_after: usize = (0..r.pages()).map(|p| bad_bytes(r, p)).sum();
        // What is resident after a failed collapse depends on the
        // interleaving (reclaim against faults): only a collapsed region's.
        let rss = if ret == 0 {
            format!("{}kB", rss_kb(r.addr(), r.len))
        } else {
            "-".to_string()
        };
        out.push(format!(
            "region {i} {:?} {}ext: bad={bad} final_collapse={ret} bad_after={bad_after} huge={}kB rss={rss}{wp}",
            r.kind,
            r.len / PMD,
            huge_kb(r.addr(), r.len),
        ));
    }
    for (op, set) in &seen.errnos {
        let allowed: &[i64] = match *op {
            "collapse" => &COLLAPSE_ERRNOS,
            _ => &[],
        };
        let extra: Vec<_> = set.iter().filter(|e| !allowed.contains(e)).collect();
        if !extra.is_empty() {
            out.push(format!("{op}: errno {extra:?} outside {allowed:?}"));
        }
        // The sets depend on the interleaving: printed, compared by the
        // caller only for being allowed.
        out.push(format!("errnos {op} {set:?}"));
    }
    for r in &regions {
        // SAFETY: our own mappings.
        unsafe {
            munmap(r.addr().cast(), r.len);
            if r.fd >= 0 {
                close(r.fd);
            }
        }
    }
    out
}

/// Resident kB of the VMAs in `[base, base+len)`.
fn rss_kb(base: *mut u8, len: usize) -> i64 {
    smaps_sum(base, len, &["Rss:"])
}
