// SPDX-License-Identifier: GPL-2.0

//! Differential, seeded random exerciser of khugepaged's collapse paths.
//!
//! For every seed, the same random sequence of operations -- mmap of anon,
//! shmem and file memory (aligned or not, private or shared), writes,
//! fork + CoW, mprotect() splits, partial munmap(), MADV_COLLAPSE,
//! MADV_HUGEPAGE + waiting for khugepaged, uprobe add/remove -- runs once
//! with `impl=c` and once with `impl=rust`, each in a fresh child process.
//! After every step the child records the return value and errno, the huge
//! mapping state from smaps and a checksum of the data; the parent compares
//! the two records step by step.
//!
//! The one documented C/Rust difference (MADV_COLLAPSE goes past an extent
//! with a CoWed page in Rust, stops there in C 6.12) is taken out by running
//! C with `khugepaged/skip_cow_extents` set, which gives C the same rule; so
//! any difference at all fails, printing the seed and step to replay:
//!
//!   khugepaged-rs-tester --seed N [--steps S] [--dir DIR] [--verbose]
//!
//! Usage: `khugepaged-rs-tester [--seeds A,B,..|--seed N] [--steps S]
//! [--dir EXT4_DIR] [--minutes M]`. Output is TAP, one test per seed.

mod concurrent;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::time::{Duration, Instant};

const PMD: usize = 2 << 20;
const PAGE: usize = 4096;
const SYSFS: &str = "/sys/kernel/mm/transparent_hugepage/khugepaged/";
const TRACEFS: &str = "/sys/kernel/tracing/";

const PROT_NONE: c_int = 0;
const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const MAP_PRIVATE: c_int = 2;
const MAP_FIXED: c_int = 0x10;
const MAP_ANONYMOUS: c_int = 0x20;
const MADV_HUGEPAGE: c_int = 14;
const MADV_COLLAPSE: c_int = 25;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;

extern "C" {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: c_long,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    fn memfd_create(name: *const c_char, flags: u32) -> c_int;
    fn ftruncate(fd: c_int, len: c_long) -> c_int;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fork() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
    fn pipe(fds: *mut c_int) -> c_int;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn __errno_location() -> *mut c_int;
    fn posix_fadvise(fd: c_int, off: c_long, len: c_long, advice: c_int) -> c_int;
}

fn errno() -> c_int {
    // SAFETY: glibc's thread-local errno.
    unsafe { *__errno_location() }
}

/// xorshift64*: small, seeded, the same on every architecture.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Anon,
    ShmemShared,
    ShmemPrivate,
    FilePrivate,
}

struct Region {
    kind: Kind,
    base: *mut u8,
    len: usize,
    prot: c_int,
    fd: c_int,
    path: Option<String>,
    /// Pages unmapped by a partial munmap().
    holes: Vec<usize>,
}

/// A mapping of `len` bytes, 2 MiB aligned, plus `skew` pages if misaligned.
fn reserve(len: usize, skew: usize) -> *mut u8 {
    // SAFETY: an anonymous PROT_NONE reservation, trimmed below.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            len + 2 * PMD,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == MAP_FAILED {
        return std::ptr::null_mut();
    }
    let a = ((p as usize + PMD - 1) & !(PMD - 1)) + skew * PAGE;
    // SAFETY: inside the reservation just made.
    unsafe { munmap(p, len + 2 * PMD) };
    a as *mut u8
}

fn pattern(seed: u64, off: usize) -> u8 {
    (off as u64 / PAGE as u64)
        .wrapping_mul(31)
        .wrapping_add(seed) as u8
}

struct Ctx {
    dir: Option<String>,
    seed: u64,
    out: Vec<String>,
    verbose: bool,
    start: Instant,
}

impl Ctx {
    fn record(&mut self, step: usize, op: &str, ret: i64, regions: &[Region]) {
        let mut huge = 0i64;
        let mut sum = 0u64;
        for r in regions {
            huge += huge_kb(r.base, r.len);
            if r.prot & PROT_READ != 0 {
                for pg in 0..r.len / PAGE {
                    if r.holes.contains(&pg) {
                        continue;
                    }
                    // SAFETY: a readable, mapped page of the region.
                    let v = unsafe { std::ptr::read_volatile(r.base.add(pg * PAGE + 17)) };
                    sum = sum.wrapping_mul(1_000_003).wrapping_add(v as u64);
                }
            }
        }
        let line = format!("step {step} {op} ret={ret} huge={huge}kB sum={sum:x}");
        if self.verbose {
            println!("# {:.3} {line}", self.start.elapsed().as_secs_f64());
        }
        self.out.push(line);
    }
}

/// Huge kB (anon, shmem, file PMD mappings) of the VMAs in `[base, base+len)`.
fn huge_kb(base: *mut u8, len: usize) -> i64 {
    smaps_sum(
        base,
        len,
        &["AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:"],
    )
}

/// The sum of the smaps `fields` (in kB) of the VMAs in `[base, base+len)`.
fn smaps_sum(base: *mut u8, len: usize, fields: &[&str]) -> i64 {
    let (start, end) = (base as usize, base as usize + len);
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a < end && b > start;
                continue;
            }
        }
        if inside {
            for f in fields {
                if let Some(v) = line.strip_prefix(f) {
                    kb += v
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<i64>()
                        .unwrap_or(0);
                }
            }
        }
    }
    kb
}

fn write_file(path: &str, s: &str) -> bool {
    write_to(path, s, false)
}

fn write_append(path: &str, s: &str) -> bool {
    write_to(path, s, true)
}

fn write_to(path: &str, s: &str, append: bool) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .append(append)
        .open(path)
        .and_then(|mut f| f.write_all(s.as_bytes()))
        .is_ok()
}

fn read_num(path: &str) -> i64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1)
}

fn ret_of(r: c_int) -> i64 {
    if r == 0 {
        0
    } else {
        -(errno() as i64)
    }
}

fn map_region(ctx: &Ctx, rng: &mut Rng, id: usize) -> Option<Region> {
    let kinds = if ctx.dir.is_some() {
        &[
            Kind::Anon,
            Kind::ShmemShared,
            Kind::ShmemPrivate,
            Kind::FilePrivate,
        ][..]
    } else {
        &[Kind::Anon, Kind::ShmemShared, Kind::ShmemPrivate][..]
    };
    let kind = kinds[rng.below(kinds.len())];
    let extents = 1 + rng.below(3);
    let skew = if rng.below(4) == 0 {
        1 + rng.below(8)
    } else {
        0
    };
    let len = extents * PMD;
    let base = reserve(len, skew);
    if base.is_null() {
        return None;
    }
    let mut fd = -1;
    let mut path = None;
    let (prot, flags) = match kind {
        Kind::Anon => (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS),
        Kind::ShmemShared | Kind::ShmemPrivate => {
            fd = shmem_file("tester", len);
            let flags = if kind == Kind::ShmemShared {
                MAP_SHARED
            } else {
                MAP_PRIVATE
            };
            (PROT_READ | PROT_WRITE, flags)
        }
        Kind::FilePrivate => {
            let p = format!("{}/tester.{}.{}", ctx.dir.as_ref()?, std::process::id(), id);
            let data: Vec<u8> = (0..len).map(|o| pattern(ctx.seed, o)).collect();
            fd = read_only_file(&p, &data)?;
            path = Some(p);
            (PROT_READ, MAP_PRIVATE)
        }
    };
    // SAFETY: `base` is an address range we reserved and released.
    let p = unsafe { mmap(base.cast(), len, prot, flags | MAP_FIXED, fd, 0) };
    if p == MAP_FAILED {
        return None;
    }
    if prot & PROT_WRITE != 0 {
        for o in (0..len).step_by(PAGE) {
            // SAFETY: writable and mapped.
            unsafe { *base.add(o + 17) = pattern(ctx.seed, o) };
        }
    } else {
        let mut s = 0u8;
        for o in (0..len).step_by(PAGE) {
            // SAFETY: readable and mapped.
            s ^= unsafe { std::ptr::read_volatile(base.add(o)) };
        }
        std::hint::black_box(s);
    }
    Some(Region {
        kind,
        base,
        len,
        prot,
        fd,
        path,
        holes: Vec::new(),
    })
}

/// A memfd (shmem) of `len` bytes, named `name`; -1 on failure.
fn shmem_file(name: &str, len: usize) -> c_int {
    let name = CString::new(name).unwrap();
    // SAFETY: plain syscalls on a fresh memfd.
    unsafe {
        let fd = memfd_create(name.as_ptr(), 0);
        if fd >= 0 {
            ftruncate(fd, len as c_long);
        }
        fd
    }
}

/// Writes `data` to a new file `path`, reopens it read-only
/// (READ_ONLY_THP_FOR_FS needs no writer) and drops its page cache; the fd.
fn read_only_file(path: &str, data: &[u8]) -> Option<c_int> {
    fs::write(path, data).ok()?;
    let cp = CString::new(path).unwrap();
    // SAFETY: plain syscalls on our own file.
    let fd = unsafe { open(cp.as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { posix_fadvise(fd, 0, data.len() as c_long, 4) };
    Some(fd)
}

fn unmap_region(r: &Region) {
    // SAFETY: the region's own mapping.
    unsafe {
        munmap(r.base.cast(), r.len);
        if r.fd >= 0 {
            close(r.fd);
        }
    }
    if let Some(p) = &r.path {
        let _ = fs::remove_file(p);
    }
}

const ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// MADV_HUGEPAGE and two full khugepaged passes. khugepaged only runs
/// inside this step (THP `enabled` is `never` otherwise, which stops its
/// thread), so its collapses happen at the same step in both runs.

fn hugepage_and_wait(r: &Region) -> i64 {
    if !write_file(ENABLED, "madvise") {
        return -5;
    }
    // With THP enabled, MADV_HUGEPAGE also registers the mm with khugepaged.
    // SAFETY: our own range.
    let ret = ret_of(unsafe { madvise(r.base.cast(), r.len, MADV_HUGEPAGE) });
    let target = read_num(&format!("{SYSFS}full_scans")) + 2;
    let start = Instant::now();
    // How long khugepaged takes is no part of the result.
    while ret == 0 && start.elapsed() < Duration::from_secs(30) {
        if read_num(&format!("{SYSFS}full_scans")) >= target {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Stopping khugepaged waits for its thread to exit.
    if !write_file(ENABLED, "never") {
        return -5;
    }
    ret
}

/// A uprobe at a page of a file region, enabled then removed again.
fn uprobe_cycle(ctx: &Ctx, r: &Region, page: usize) -> i64 {
    let Some(path) = &r.path else { return 0 };
    if fs::metadata(format!("{TRACEFS}uprobe_events")).is_err() {
        return 0;
    }
    let ev = format!("tester_{}_{}", std::process::id(), ctx.seed);
    let ok = write_append(
        &format!("{TRACEFS}uprobe_events"),
        &format!("p:khugepaged_rs/{ev} {path}:0x{:x}\n", page * PAGE),
    ) && write_file(&format!("{TRACEFS}events/khugepaged_rs/{ev}/enable"), "1")
        && write_file(&format!("{TRACEFS}events/khugepaged_rs/{ev}/enable"), "0");
    let removed = write_append(
        &format!("{TRACEFS}uprobe_events"),
        &format!("-:khugepaged_rs/{ev}\n"),
    );
    if ok && removed {
        0
    } else {
        -5
    }
}

/// Runs the sequence for `seed`; returns the record of every step.
fn run(ctx: &mut Ctx, steps: usize) {
    let mut rng = Rng::new(ctx.seed);
    let mut regions: Vec<Region> = Vec::new();
    for step in 0..steps {
        if regions.is_empty() || (regions.len() < 4 && rng.below(6) == 0) {
            match map_region(ctx, &mut rng, step) {
                Some(r) => {
                    let op = format!(
                        "mmap({:?},{}ext,{})",
                        r.kind,
                        r.len / PMD,
                        (r.base as usize % PMD) / PAGE
                    );
                    regions.push(r);
                    ctx.record(step, &op, 0, &regions);
                }
                None => ctx.record(step, "mmap", -12, &regions),
            }
            continue;
        }
        let i = rng.below(regions.len());
        let pages = regions[i].len / PAGE;
        let pg = rng.below(pages);
        let (op, ret) = match rng.below(12) {
            0 | 1 => {
                let r = &regions[i];
                // SAFETY: the region's own range.
                let ret = ret_of(unsafe { madvise(r.base.cast(), r.len, MADV_COLLAPSE) });
                ("collapse".to_string(), ret)
            }
            2 => {
                let r = &regions[i];
                let start = (r.base as usize + pg * PAGE) & !(PMD - 1);
                // SAFETY: MADV_COLLAPSE checks the range itself.
                let ret = ret_of(unsafe { madvise(start as *mut c_void, PMD, MADV_COLLAPSE) });
                (format!("collapse_extent@{}", pg * PAGE / PMD), ret)
            }
            3 | 4 => {
                let r = &mut regions[i];
                if r.holes.contains(&pg) {
                    ("write_hole".to_string(), 0)
                } else {
                    let old = r.prot;
                    let page = r.base.wrapping_add(pg * PAGE);
                    // SAFETY: a mapped page of our own range, made writable
                    // first if need be; a private file mapping CoWs.
                    let ret = unsafe {
                        let mut ret = 0;
                        if old & PROT_WRITE == 0 {
                            ret = ret_of(mprotect(page.cast(), PAGE, PROT_READ | PROT_WRITE));
                        }
                        if ret == 0 {
                            *page.add(17) ^= 0xa5;
                        }
                        if old & PROT_WRITE == 0 {
                            ret += ret_of(mprotect(page.cast(), PAGE, old));
                        }
                        ret
                    };
                    (format!("write@{pg}"), ret)
                }
            }
            5 => {
                let r = &regions[i];
                // SAFETY: a child writes its copy and exits; the parent's
                // memory must not change.
                let ret = unsafe {
                    let pid = fork();
                    if pid == 0 {
                        if r.prot & PROT_WRITE != 0 && !r.holes.contains(&pg) {
                            *r.base.add(pg * PAGE + 17) ^= 0xff;
                        }
                        _exit(0);
                    }
                    let mut st = 0;
                    waitpid(pid, &mut st, 0);
                    st as i64
                };
                (format!("fork_cow@{pg}"), ret)
            }
            6 | 7 => {
                let r = &mut regions[i];
                let other = if r.prot == PROT_READ {
                    PROT_READ | PROT_WRITE
                } else {
                    PROT_READ
                };
                // SAFETY: our own range.
                let ret = unsafe {
                    let a = ret_of(mprotect(r.base.add(pg * PAGE).cast(), PAGE, other));
                    let mut s = 0u8;
                    for p in 0..pages {
                        if !r.holes.contains(&p) {
                            s ^= std::ptr::read_volatile(r.base.add(p * PAGE));
                        }
                    }
                    std::hint::black_box(s);
                    a + ret_of(mprotect(r.base.add(pg * PAGE).cast(), PAGE, r.prot))
                };
                (format!("mprotect_split@{pg}"), ret)
            }
            8 => {
                let r = &mut regions[i];
                if r.holes.contains(&pg) {
                    ("munmap_hole".to_string(), 0)
                } else {
                    // SAFETY: one page of our own range.
                    let ret = ret_of(unsafe { munmap(r.base.add(pg * PAGE).cast(), PAGE) });
                    r.holes.push(pg);
                    (format!("munmap@{pg}"), ret)
                }
            }
            9 => (
                "hugepage+khugepaged".to_string(),
                hugepage_and_wait(&regions[i]),
            ),
            10 => {
                let ret = if regions[i].kind == Kind::FilePrivate {
                    uprobe_cycle(ctx, &regions[i], pg)
                } else {
                    0
                };
                (format!("uprobe@{pg}"), ret)
            }
            _ => {
                let r = regions.swap_remove(i);
                unmap_region(&r);
                ("munmap_region".to_string(), 0)
            }
        };
        ctx.record(step, &op, ret, &regions);
    }
    for r in &regions {
        unmap_region(r);
    }
}

/// What a child runs for a seed.
#[derive(Clone, Copy)]
enum Mode {
    /// The step-by-step sequence, `steps` long.
    Serial { steps: usize },
    /// `threads` threads of `steps` operations each (see `concurrent`).
    Concurrent { steps: usize, threads: usize },
}

const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// Runs `seed` with `imp` in a child; returns its record.
fn run_child(imp: &str, seed: u64, mode: Mode, dir: &Option<String>, verbose: bool) -> Vec<String> {
    if !write_file(&format!("{SYSFS}impl"), imp) {
        return vec![format!("cannot select impl {imp}")];
    }
    // The concurrent mode runs with khugepaged scanning, shmem included.
    let concurrent = matches!(mode, Mode::Concurrent { .. });
    let shmem_enabled = fs::read_to_string(SHMEM_ENABLED).unwrap_or_default();
    if concurrent && !(write_file(ENABLED, "madvise") && write_file(SHMEM_ENABLED, "advise")) {
        return vec!["cannot enable khugepaged".to_string()];
    }
    let mut fds = [0; 2];
    // SAFETY: plain pipe + fork; the child only writes its record and exits.
    let v = unsafe {
        pipe(fds.as_mut_ptr());
        let pid = fork();
        if pid == 0 {
            close(fds[0]);
            let out = match mode {
                Mode::Serial { steps } => {
                    let mut ctx = Ctx {
                        dir: dir.clone(),
                        seed,
                        out: Vec::new(),
                        verbose,
                        start: Instant::now(),
                    };
                    run(&mut ctx, steps);
                    ctx.out
                }
                Mode::Concurrent { steps, threads } => concurrent::run(dir, seed, steps, threads),
            };
            let text = out.join("\n");
            write(fds[1], text.as_ptr().cast(), text.len());
            _exit(0);
        }
        close(fds[1]);
        let mut f = std::fs::File::from(std::os::fd::OwnedFd::from_raw_fd(fds[0]));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        let mut st = 0;
        waitpid(pid, &mut st, 0);
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        if st != 0 {
            v.push(format!("child exited with status {st}"));
        }
        v
    };
    if concurrent {
        // Stopping khugepaged waits for its thread to exit.
        write_file(ENABLED, "never");
        let old = shmem_enabled
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("never");
        write_file(SHMEM_ENABLED, old);
    }
    v
}

/// Why the records `c` and `r` of `seed` in `mode` fail, if they do.
fn judge(seed: u64, mode: Mode, c: &[String], r: &[String]) -> Option<Vec<String>> {
    match mode {
        Mode::Serial { steps } => {
            for k in 0..c.len().max(r.len()) {
                let (a, b) = (c.get(k), r.get(k));
                if a != b {
                    return Some(vec![
                        format!("seed {seed} diverges at record line {k}:"),
                        format!("  c:    {}", a.cloned().unwrap_or_default()),
                        format!("  rust: {}", b.cloned().unwrap_or_default()),
                        format!(
                            "replay: khugepaged-rs-tester --seed {seed} --steps {steps} --verbose"
                        ),
                    ]);
                }
            }
            if c.len() != steps || r.len() != steps {
                return Some(vec![
                    format!(
                        "c:    {}",
                        c.last().map(String::as_str).unwrap_or("(nothing)")
                    ),
                    format!(
                        "rust: {}",
                        r.last().map(String::as_str).unwrap_or("(nothing)")
                    ),
                    format!("record incomplete (c {} r {} lines)", c.len(), r.len()),
                ]);
            }
            None
        }
        Mode::Concurrent { steps, threads } => {
            // Wrong bytes, errnos outside the set, a child that failed: in
            // either run, whether or not the other did the same.
            let mut why: Vec<String> = Vec::new();
            for (imp, rec) in [("c", c), ("rust", r)] {
                for line in rec {
                    let region_bad = line.starts_with("region ")
                        && !(line.contains(" bad=0 ") && line.contains(" bad_after=0 "));
                    if region_bad || !(line.starts_with("region ") || line.starts_with("errnos ")) {
                        why.push(format!("{imp}: {line}"));
                    }
                }
            }
            // The invariants after quiescing must agree; the errno sets
            // depend on the interleaving.
            let inv = |rec: &[String]| -> Vec<String> {
                rec.iter()
                    .filter(|l| l.starts_with("region "))
                    .cloned()
                    .collect()
            };
            let (ic, ir) = (inv(c), inv(r));
            if ic.is_empty() || ic != ir {
                why.push("the regions differ after quiescing:".to_string());
                why.extend(ic.iter().map(|l| format!("  c:    {l}")));
                why.extend(ir.iter().map(|l| format!("  rust: {l}")));
            }
            if why.is_empty() {
                return None;
            }
            why.push(format!(
                "replay: khugepaged-rs-tester --concurrent-seeds {seed} --seeds '' --threads {threads} --concurrent-steps {steps}"
            ));
            Some(why)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut seeds: Vec<u64> = vec![1, 2, 3, 4];
    let mut steps = 40;
    let mut dir = std::env::var("KHUGEPAGED_FILE_DIR")
        .ok()
        .filter(|d| !d.is_empty());
    let mut minutes = 0u64;
    let mut verbose = false;
    let mut concurrent_seeds: Vec<u64> = Vec::new();
    let mut threads = 3;
    let mut concurrent_steps = 200;
    let mut i = 1;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seeds" => seeds = val.split(',').filter_map(|s| s.parse().ok()).collect(),
            "--seed" => seeds = vec![val.parse().unwrap_or(1)],
            "--steps" => steps = val.parse().unwrap_or(steps),
            "--dir" => dir = Some(val),
            "--minutes" => minutes = val.parse().unwrap_or(0),
            "--concurrent-seeds" => {
                concurrent_seeds = val.split(',').filter_map(|s| s.parse().ok()).collect()
            }
            "--threads" => threads = val.parse().unwrap_or(threads).max(1),
            "--concurrent-steps" => concurrent_steps = val.parse().unwrap_or(concurrent_steps),
            "--verbose" => {
                verbose = true;
                i += 1;
                continue;
            }
            _ => {
                eprintln!(
                    "usage: khugepaged-rs-tester [--seeds A,B|--seed N] [--steps S] [--dir DIR] [--minutes M] \\
                     [--concurrent-seeds A,B [--threads T] [--concurrent-steps S]] [--verbose]"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let impls = fs::read_to_string(format!("{SYSFS}impl")).unwrap_or_default();
    if !impls.contains("rust") {
        println!("1..0 # SKIP no Rust implementation in this kernel");
        return;
    }
    let orig_impl = impls
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("rust")
        .to_string();
    let skip_knob = format!("{SYSFS}skip_cow_extents");
    let had_skip = read_num(&skip_knob);
    // Fast khugepaged passes inside the wait steps, as the upstream selftest.
    let knobs = [
        "scan_sleep_millisecs",
        "alloc_sleep_millisecs",
        "pages_to_scan",
    ];
    let saved: Vec<i64> = knobs
        .iter()
        .map(|k| read_num(&format!("{SYSFS}{k}")))
        .collect();
    for (k, v) in knobs.iter().zip(["10", "10", "4096"]) {
        write_file(&format!("{SYSFS}{k}"), v);
    }
    let enabled = fs::read_to_string(ENABLED).unwrap_or_default();
    let orig_enabled = enabled
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("madvise")
        .to_string();
    write_file(ENABLED, "never");

    // A soak runs consecutive seeds from the first one until the time is
    // up, each serially and (with --concurrent-seeds) concurrently.
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let first = seeds.first().copied().unwrap_or(1);
    let soak = minutes > 0;
    let serial = Mode::Serial { steps };
    let conc = Mode::Concurrent {
        steps: concurrent_steps,
        threads,
    };
    let mut runs: Vec<(u64, Mode)> = seeds.iter().map(|&s| (s, serial)).collect();
    runs.extend(concurrent_seeds.iter().map(|&s| (s, conc)));
    println!("TAP version 13");
    if !soak {
        println!("1..{}", runs.len());
    }
    let mut failed = 0;
    let mut n = 0;
    loop {
        let (seed, mode) = if soak {
            if Instant::now() >= end {
                break;
            }
            let k = n as u64;
            if concurrent_seeds.is_empty() {
                (first + k, serial)
            } else if k % 2 == 0 {
                (first + k / 2, serial)
            } else {
                (first + k / 2, conc)
            }
        } else {
            match runs.get(n) {
                Some(&run) => run,
                None => break,
            }
        };
        // C with skip_cow_extents: the documented difference taken out.
        write_file(&skip_knob, "1");
        let c = run_child("c", seed, mode, &dir, verbose);
        write_file(&skip_knob, if had_skip > 0 { "1" } else { "0" });
        let r = run_child("rust", seed, mode, &dir, verbose);
        let name = match mode {
            Mode::Serial { steps } => format!("seed-{seed} ({steps} steps)"),
            Mode::Concurrent { steps, threads } => {
                for (imp, rec) in [("c", &c), ("rust", &r)] {
                    // And how many pages kept their uffd-wp protection.
                    for l in rec
                        .iter()
                        .filter(|l| l.starts_with("errnos ") || l.contains(" wp="))
                    {
                        println!("# {imp} {l}");
                    }
                }
                format!("concurrent-seed-{seed} ({threads} threads x {steps} operations)")
            }
        };
        match judge(seed, mode, &c, &r) {
            None => println!("ok {} {name}", n + 1),
            Some(why) => {
                failed += 1;
                for l in why {
                    println!("# {l}");
                }
                println!("not ok {} {name}", n + 1);
            }
        }
        n += 1;
    }
    if soak {
        println!("1..{n}");
    }
    write_file(&format!("{SYSFS}impl"), &orig_impl);
    write_file(ENABLED, &orig_enabled);
    for (k, v) in knobs.iter().zip(saved) {
        if v >= 0 {
            write_file(&format!("{SYSFS}{k}"), &v.to_string());
        }
    }
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
