#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Tables, JSON, CSV and a ratio plot from `make bench` console logs.

  bench.py OUTDIR ARCH=LOG [ARCH:icount1=LOG ARCH:icount2=LOG ARCH:config=FILE]...

ARCH=LOG is a boot timed by the (emulated) clock; ARCH:icountN=LOG a boot
under QEMU -icount shift=0,sleep=off, where a guest nanosecond is one
instruction, so the same figures are instruction counts; two such boots
must agree. ARCH:config names the kernel .config, whose debug options are
printed with the results.

Per row: the median, min and max per implementation, the Rust/C ratio of
the medians, and its spread (the ratio's range over the paired rounds).
Then the kernel profile of the re-collapse rows (khugepaged_bench
--profile): cpu-clock samples per function and iteration, C beside Rust.
"""
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROWS = [
    ("anon-empty0", "MADV_COLLAPSE anon, 0 empty PTEs"),
    ("anon-empty256", "MADV_COLLAPSE anon, 256 empty PTEs"),
    ("anon-empty511", "MADV_COLLAPSE anon, 511 empty PTEs"),
    ("anon-pte-mapped", "MADV_COLLAPSE PTE-mapped anon THP"),
    ("shmem", "MADV_COLLAPSE shmem (collapse_file + retract)"),
    ("file", "MADV_COLLAPSE ext4 file (collapse_file + retract)"),
    ("shmem-pte-mapped", "re-collapse PTE-mapped shmem THP"),
    ("file-pte-mapped", "re-collapse PTE-mapped file THP"),
    ("uprobe-heal", "uprobe removal until PMD-mapped (its CPU time)"),
    ("retract-1", "collapse + retract, 1 VMA"),
    ("retract-16", "collapse + retract, 16 VMAs"),
    ("retract-256", "collapse + retract, 256 VMAs"),
    ("retract-1024", "collapse + retract, 1024 VMAs"),
    ("khugepaged-scan", "khugepaged CPU per PMD collapsed"),
]
# The Rust code each row runs with impl=rust (the rest is common C).
RUST_PART = {
    "anon-empty0": "scan_pmd, collapse_anon",
    "anon-empty256": "scan_pmd, collapse_anon",
    "anon-empty511": "scan_pmd, collapse_anon",
    "anon-pte-mapped": "scan_pmd, collapse_anon",
    "shmem": "scan_file, retract, pte_mapped",
    "file": "scan_file, retract, pte_mapped",
    "shmem-pte-mapped": "scan_file, pte_mapped",
    "file-pte-mapped": "scan_file, pte_mapped",
    "uprobe-heal": "pte_mapped",
    "retract-1": "scan_file, retract, pte_mapped",
    "retract-16": "scan_file, retract, pte_mapped",
    "retract-256": "scan_file, retract, pte_mapped",
    "retract-1024": "scan_file, retract, pte_mapped",
    "khugepaged-scan": "scan loop, scan_pmd, collapse_anon",
}


def parse(log):
    data = {}
    platform = "TCG"
    with open(log, errors="replace") as f:
        for line in f:
            m = re.search(r"@@BENCH row=(\S+) impl=(\S+) ns=(-?\d+) collapsed=(-?\d+)", line)
            if m:
                data.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(int(m.group(3)))
            m = re.search(r"booting \S+ under (\S+)", line)
            if m:
                platform = m.group(1).upper()
    return data, platform


def parse_profile(log):
    """{row: {"iters": {impl: n}, "period": ns, "samples": {impl: {sym: n}},
    "incl": {impl: {sym: n}}}}: samples in each function, and on its call chain."""
    prof = {}
    with open(log, errors="replace") as f:
        for line in f:
            m = re.search(r"@@PROF row=(\S+) impl=(\S+) sym=(\S+) samples=(\d+)", line)
            if m:
                row = prof.setdefault(m.group(1), {"iters": {}, "samples": {}})
                row["samples"].setdefault(m.group(2), {})[m.group(3)] = int(m.group(4))
            m = re.search(r"@@PROFINC row=(\S+) impl=(\S+) sym=(\S+) samples=(\d+)", line)
            if m:
                row = prof.setdefault(m.group(1), {"iters": {}, "samples": {}})
                row.setdefault("incl", {}).setdefault(m.group(2), {})[m.group(3)] = int(m.group(4))
            m = re.search(r"@@PROFDONE row=(\S+) iterations_c=(\d+) iterations_rust=(\d+) "
                          r"period_ns=(\d+) lost=(\d+)", line)
            if m:
                row = prof.setdefault(m.group(1), {"iters": {}, "samples": {}})
                row["iters"] = {"c": int(m.group(2)), "rust": int(m.group(3))}
                row["period"], row["lost"] = int(m.group(4)), int(m.group(5))
    return prof


# Kernel functions grouped by what they are, for the profile summary.
def group(sym):
    if sym.startswith("rust_helper_"):
        return "rust helpers (out-of-line static inlines)"
    if sym.startswith(("rust_collapse", "rust_retract", "_RN")):
        return "Rust khugepaged code"
    if sym.startswith(("c_", "__collapse_huge_page_", "release_pte_")) or sym in C_KHUGEPAGED:
        return "C khugepaged code (both: collapse_file etc.)"
    return "other kernel (common C)"


# The C khugepaged functions (mm/khugepaged.c) beside the c_* ones that the
# switch selects: the shared ones (collapse_file(), alloc_charge_folio(),
# ...) run for both implementations.
C_KHUGEPAGED = {
    "collapse_file", "is_refcount_suitable", "hpage_collapse_scan_abort",
    "alloc_charge_folio", "hugepage_vma_revalidate", "madvise_collapse",
    "khugepaged", "khugepaged_do_scan", "collapse_pte_mapped_thp",
    "find_pmd_or_thp_or_none", "set_huge_pmd",
}


# Frames on every call chain of a system call or a kernel thread.
ENTRY_FRAMES = re.compile(r"^__(x64|arm64)_sys_|syscall|^entry_|^el0|^do_el0|^invoke_syscall|"
                          r"^do_madvise$|^madvise_walk_vmas$|^ret_from_fork|^kthread$")


def print_profile(prof, top=14, unit="us"):
    for row, p in prof.items():
        iters = p.get("iters", {})
        if not iters.get("c") or not iters.get("rust"):
            print(f"profile {row}: incomplete")
            continue
        us = p["period"] / 1000
        per = {i: {s: n / iters[i] for s, n in p["samples"].get(i, {}).items()} for i in ("c", "rust")}
        tot = {i: sum(per[i].values()) for i in per}
        print()
        what = "PMD collapsed by khugepaged" if row == "khugepaged-scan" else "MADV_COLLAPSE"
        print(f"profile {row}: kernel cpu-clock samples per {what} "
              f"(1 sample = {us:.0f} {unit}; {iters['c']} C, {iters['rust']} Rust iterations, "
              f"{p.get('lost', 0)} lost)")
        print(f"  {'total':<44} {tot['c']:>8.2f} {tot['rust']:>8.2f}  Rust/C {tot['rust'] / tot['c']:.3f}"
              if tot["c"] else "  (no C samples)")
        groups = {}
        for i in per:
            for sym, n in per[i].items():
                groups.setdefault(group(sym), {"c": 0, "rust": 0})[i] += n
        print(f"  {'group':<44} {'C':>8} {'Rust':>8}")
        for g, v in sorted(groups.items(), key=lambda kv: -max(kv[1].values())):
            print(f"  {g:<44} {v['c']:>8.2f} {v['rust']:>8.2f}")
        syms = sorted(set(per["c"]) | set(per["rust"]),
                      key=lambda s: -max(per["c"].get(s, 0), per["rust"].get(s, 0)))
        print(f"  {'function':<44} {'C':>8} {'Rust':>8}")
        for sym in syms[:top]:
            print(f"  {sym[:44]:<44} {per['c'].get(sym, 0):>8.2f} {per['rust'].get(sym, 0):>8.2f}")
        if not p.get("incl"):
            continue
        # Inclusive: the samples with the function on their call chain,
        # what it and everything it calls cost; without the syscall and
        # entry frames, which are on every chain, and always with the
        # retraction, whatever its share.
        inc = {i: {s: n / iters[i] for s, n in p["incl"].get(i, {}).items()} for i in ("c", "rust")}
        syms = sorted((s for s in set(inc["c"]) | set(inc["rust"]) if not ENTRY_FRAMES.search(s)),
                      key=lambda s: -max(inc["c"].get(s, 0), inc["rust"].get(s, 0)))
        syms = syms[:top] + [s for s in syms[top:] if "retract_page_tables" in s]
        print(f"  {'inclusive (function and its callees)':<44} {'C':>8} {'Rust':>8}")
        for sym in syms:
            print(f"  {sym[:44]:<44} {inc['c'].get(sym, 0):>8.2f} {inc['rust'].get(sym, 0):>8.2f}")


def rows_of(data):
    """The table rows of one boot: medians, ranges and the Rust/C ratio."""
    rows = []
    for row, what in ROWS:
        c, r = data.get(row, {}).get("c", []), data.get(row, {}).get("rust", [])
        if not c or not r:
            rows.append({"row": row, "what": what, "missing": True})
            continue
        mc, mr = statistics.median(c), statistics.median(r)
        pairs_ratio = [b / a for a, b in zip(c, r) if a > 0]
        rows.append({
            "row": row, "what": what, "n": min(len(c), len(r)),
            "c_median_us": mc / 1000, "c_min_us": min(c) / 1000, "c_max_us": max(c) / 1000,
            "rust_median_us": mr / 1000, "rust_min_us": min(r) / 1000,
            "rust_max_us": max(r) / 1000,
            "ratio": mr / mc if mc else None,
            "ratio_min": min(pairs_ratio) if pairs_ratio else None,
            "ratio_max": max(pairs_ratio) if pairs_ratio else None,
            "rust_code": RUST_PART.get(row, "-"),
        })
    return rows


# What makes a kernel production-like or not, printed with the results.
CONFIG_SHOWN = ["PREEMPT", "PREEMPT_VOLUNTARY", "PREEMPT_NONE", "NR_CPUS", "HZ", "NUMA",
                "MEMCG", "TRANSPARENT_HUGEPAGE", "KHUGEPAGED_RUST", "RUST_INLINE_HELPERS",
                "LOCKDEP", "PROVE_LOCKING",
                "KASAN", "DEBUG_VM", "PAGE_TABLE_CHECK", "DEBUG_LIST", "DEBUG_ATOMIC_SLEEP",
                "FAULT_INJECTION", "KCOV", "UBSAN"]


def config_line(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return f"config: {path} not readable"
    on, off = [], []
    for opt in CONFIG_SHOWN:
        m = re.search(rf"^CONFIG_{opt}=(\S+)$", text, re.M)
        (on if m else off).append(f"{opt}={m.group(1)}" if m else opt)
    return f"kernel config ({path}): " + " ".join(on) + "; not set: " + " ".join(off)


RETRACT_VMAS = (1, 16, 256, 1024)


def print_icount(arch, runs):
    """The instruction-count table, and how two -icount boots agree."""
    (name1, rows1), rest = runs[0], runs[1:]
    other = {x["row"]: x for x in rest[0][1]} if rest else {}
    ok = True
    print()
    print(f"{arch} (-icount shift=0: 1 guest ns = 1 instruction); C and Rust alternating per "
          "round, medians in k-instructions")
    print(f"{'row':<17} {'C median':>10} {'C min-max':>19} {'Rust median':>12} "
          f"{'Rust min-max':>19} {'Rust/C':>7} {'paired range':>14}  {'boot 2/1 C, Rust':>17}")
    worst, worst_row = 0.0, "-"
    for x in rows1:
        if x.get("missing"):
            print(f"{x['row']:<17} (no result)")
            ok = False
            continue
        y = other.get(x["row"])
        if y and not y.get("missing"):
            dc = y["c_median_us"] / x["c_median_us"] if x["c_median_us"] else 0
            dr = y["rust_median_us"] / x["rust_median_us"] if x["rust_median_us"] else 0
            dev = max(abs(dc - 1), abs(dr - 1))
            if dev > worst:
                worst, worst_row = dev, x["row"]
            agree = f"{dc:>8.4f} {dr:>8.4f}"
        else:
            agree = f"{'-':>17}"
            if rest:
                ok = False
        print(f"{x['row']:<17} {x['c_median_us']:>10.1f} "
              f"{x['c_min_us']:>9.1f}-{x['c_max_us']:<9.1f} {x['rust_median_us']:>12.1f} "
              f"{x['rust_min_us']:>9.1f}-{x['rust_max_us']:<9.1f} {x['ratio']:>7.3f} "
              f"{x['ratio_min']:>6.2f}-{x['ratio_max']:<6.2f}  {agree}")
    if rest:
        print(f"{arch}: the two -icount boots ({name1}, {rest[0][0]}) agree within "
              f"{worst * 100:.2f}% on the median of every row (furthest: {worst_row})")
    return ok, worst


def slope(points):
    """Least-squares slope of ns over VMA count, in us per VMA."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den / 1000 if den else None


def retract_slopes(rows):
    """Per implementation, the slope of the retract rows' medians over VMAs."""
    byrow = {x["row"]: x for x in rows if not x.get("missing")}
    return {impl: slope([(n, byrow[f"retract-{n}"][f"{impl}_median_us"] * 1000)
                         for n in RETRACT_VMAS if f"retract-{n}" in byrow])
            for impl in ("c", "rust")}


def main():
    outdir, pairs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    os.makedirs(outdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ok = True
    summary = {}
    extra = {}
    for key, log in pairs:
        if ":" in key:
            arch, kind = key.split(":", 1)
            extra.setdefault(arch, {})[kind] = log
    for arch, log in [(k, v) for k, v in pairs if ":" not in k]:
        data, platform = parse(log)
        rows = rows_of(data)
        slopes = retract_slopes(rows)
        prof = parse_profile(log)
        summary[arch] = {"platform": platform, "rows": rows, "retract_slope_us_per_vma": slopes,
                         "profile": prof}
        icount_runs = [(k, rows_of(parse(v)[0])) for k, v in sorted(extra.get(arch, {}).items())
                       if k.startswith("icount")]
        if "config" in extra.get(arch, {}):
            print()
            print(f"{arch} {config_line(extra[arch]['config'])}")

        print()
        print(f"{arch} ({platform}{': emulated time, only the ratio means something' if platform == 'TCG' else ''}); "
              "C and Rust alternating per round, medians in us")
        print(f"{'row':<17} {'C median':>10} {'C min-max':>19} {'Rust median':>12} "
              f"{'Rust min-max':>19} {'Rust/C':>7} {'paired range':>14}  Rust code")
        for x in rows:
            if x.get("missing"):
                print(f"{x['row']:<17} (no result)")
                ok = False
                continue
            print(f"{x['row']:<17} {x['c_median_us']:>10.1f} "
                  f"{x['c_min_us']:>9.1f}-{x['c_max_us']:<9.1f} {x['rust_median_us']:>12.1f} "
                  f"{x['rust_min_us']:>9.1f}-{x['rust_max_us']:<9.1f} {x['ratio']:>7.3f} "
                  f"{x['ratio_min']:>6.2f}-{x['ratio_max']:<6.2f}  {x['rust_code']}")
        s = slopes
        if s.get("c") is not None and s.get("rust") is not None:
            print(f"retract slope (collapse + retract time per extra VMA): C {s['c']:.2f} us/VMA, "
                  f"Rust {s['rust']:.2f} us/VMA")

        print_profile(prof)

        if icount_runs:
            good, worst = print_icount(arch, icount_runs)
            ok = ok and good
            islopes = retract_slopes(icount_runs[0][1])
            summary[arch]["icount_retract_slope_kinstr_per_vma"] = islopes
            if islopes.get("c") and islopes.get("rust") is not None:
                print(f"retract slope by instructions (per extra VMA): C {islopes['c']:.2f}, "
                      f"Rust {islopes['rust']:.2f} k-instructions/VMA, "
                      f"Rust/C {islopes['rust'] / islopes['c']:.3f}")
            iprof = parse_profile(extra[arch][icount_runs[0][0]])
            print()
            print(f"{arch}: the profile again under -icount, where the cpu-clock event "
                  "counts instructions")
            print_profile(iprof, unit="k-instructions")
            summary[arch]["icount"] = {k: r for k, r in icount_runs}
            summary[arch]["icount_agreement"] = worst
            summary[arch]["icount_profile"] = iprof

        base = os.path.join(outdir, f"bench-{arch}-{stamp}")
        # The first -icount boot's figures beside the time's, per row.
        icount = {x["row"]: x for x in (icount_runs[0][1] if icount_runs else [])
                  if not x.get("missing")}
        for x in rows:
            i = icount.get(x["row"])
            if i and not x.get("missing"):
                x.update({"kinstr_c_median": i["c_median_us"],
                          "kinstr_rust_median": i["rust_median_us"],
                          "kinstr_ratio": i["ratio"], "kinstr_ratio_min": i["ratio_min"],
                          "kinstr_ratio_max": i["ratio_max"]})
        with open(base + ".csv", "w", newline="") as f:
            keys = ["row", "n", "c_median_us", "c_min_us", "c_max_us", "rust_median_us",
                    "rust_min_us", "rust_max_us", "ratio", "ratio_min", "ratio_max",
                    "kinstr_c_median", "kinstr_rust_median", "kinstr_ratio", "kinstr_ratio_min",
                    "kinstr_ratio_max", "rust_code"]
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for x in rows:
                if not x.get("missing"):
                    w.writerow(x)
        dat = base + ".dat"
        with open(dat, "w") as f:
            for i, x in enumerate(r for r in rows if not r.get("missing")):
                # No -icount figure: NaN, which gnuplot leaves out.
                k = [x.get(f"kinstr_ratio{s}") for s in ("", "_min", "_max")]
                k = " ".join("NaN" if v is None else f"{v:.4f}" for v in k)
                f.write(f"{i} {x['row']} {x['ratio']:.4f} {x['ratio_min']:.4f} "
                        f"{x['ratio_max']:.4f} {k}\n")
        if shutil.which("gnuplot"):
            script = f"""
set terminal pngcairo size 1000,520 noenhanced
set output '{base}.png'
set title 'khugepaged-rs: Rust/C per row ({arch}): time ({platform}) and instructions (-icount)'
set ylabel 'Rust / C (median; bars: paired min-max)'
set xtics rotate by -35
set bmargin 8
set grid ytics
set yrange [0:*]
set style fill solid 0.5
set boxwidth 0.36
set datafile missing 'NaN'
plot '{dat}' using ($1-0.19):3:xtic(2) with boxes lc rgb '#b070d0' title 'time', \\
     '' using ($1-0.19):3:4:5 with yerrorbars lc rgb 'black' pt 0 title '', \\
     '' using ($1+0.19):6 with boxes lc rgb '#3080c0' title 'instructions', \\
     '' using ($1+0.19):6:7:8 with yerrorbars lc rgb 'black' pt 0 title '', \\
     1 with lines lc rgb 'red' dt 2 title 'C'
"""
            r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
            if r.returncode == 0:
                print(f"plot: {base}.png")
            else:
                print(f"gnuplot failed: {r.stderr.strip()[:200]}")
        print(f"data: {base}.csv, {outdir}/bench-{stamp}.json")
    with open(os.path.join(outdir, f"bench-{stamp}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    shutil.copy(os.path.join(outdir, f"bench-{stamp}.json"), os.path.join(outdir, "bench-latest.json"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
