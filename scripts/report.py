#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Read khugepaged-rs guest console logs and report.

  report.py test ARCH=LOG...   suite x (arch, impl) table, kernel errors, and
                               a last line "N passed, N failed[, N skipped]";
                               exit 1 on any failure, missing result or crash.
                               $STYLE=pass|fail adds the style gates' result.
  report.py demo ARCH=LOG...   the MADV_COLLAPSE demo table of `make run`.
"""
import os
import re
import statistics
import sys

# Every suite `make test` must report, per architecture and implementation
# (scripts/guest/test-jobs.sh runs them).
TEST_SUITES = [
    "collapse",
    "uprobe",
    "retract",
    "scan",
    "anon-race",
    "upstream-madvise-anon", "upstream-madvise-shmem", "upstream-madvise-file",
    "upstream-khugepaged-anon", "upstream-khugepaged-shmem", "upstream-khugepaged-file",
    "tester",
    "kunit-doctests",
]
# Suites with one result per boot, shown in both columns and counted once:
# the tester runs both implementations itself (impl=both); the kernel
# crate's doctests (KUnit, kernel::mm::guard among them) run at boot.
DIFFERENTIAL = {"tester", "kunit-doctests"}
IMPLS = ("c", "rust")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
# Any of these on the console fails the run.
KERNEL_ERRORS = re.compile(
    r"BUG:|WARNING:|Oops|Kernel panic|kernel BUG|general protection fault|"
    r"Unable to handle kernel|possible circular locking|possible recursive locking|"
    r"inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|KASAN:|"
    r"UBSAN:|lock held when returning|page_table_check|Call Trace:|Bad page state|"
    r"Bad rss-counter")


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return [ANSI.sub("", l.rstrip("\r\n")) for l in f]
    except OSError:
        return []


def blocks(lines):
    """Yield (impl, suite, rc or None, output lines) per @@BEGIN block."""
    cur = None
    for line in lines:
        m = re.search(r"@@BEGIN impl=(\S+) suite=(\S+)", line)
        if m:
            if cur:
                yield cur[0], cur[1], None, cur[2]
            cur = (m.group(1), m.group(2), [])
            continue
        m = re.search(r"@@DONE impl=(\S+) suite=(\S+) rc=(\d+)", line)
        if m and cur:
            yield cur[0], cur[1], int(m.group(3)), cur[2]
            cur = None
            continue
        if cur:
            cur[2].append(line)
    if cur:
        yield cur[0], cur[1], None, cur[2]


def cases_tap(out):
    """kselftest harness TAP: {name: 'pass'|'fail'|'skip'}."""
    res = {}
    for line in out:
        m = re.match(r"(not ok|ok) \d+ (\S+)(.*)", line)
        if not m:
            continue
        if "# SKIP" in m.group(3):
            res[m.group(2)] = "skip"
        else:
            res[m.group(2)] = "pass" if m.group(1) == "ok" else "fail"
    return res


def cases_ktap(lines):
    """KUnit KTAP from the console: ({test: state}, suite summary seen)."""
    res, done = {}, False
    for line in lines:
        line = re.sub(r"^\[\s*[\d.]+\]\s?", "", line)
        m = re.match(r"\s+(not ok|ok) \d+ (rust_doctest_\S+)(.*)", line)
        if m:
            if "# SKIP" in m.group(3):
                res[m.group(2)] = "skip"
            else:
                res[m.group(2)] = "pass" if m.group(1) == "ok" else "fail"
        elif re.match(r"(not ok|ok) \d+ rust_doctests_kernel\b", line):
            done = True
    return res, done


def cases_upstream(out):
    """6.12's tools/testing/selftests/mm/khugepaged: OK/Fail per 'Run test'."""
    res, name, seen = {}, "(setup)", []

    def close():
        text = "\n".join(seen)
        if re.search(r"\bFail", text):
            res[name] = "fail"
        elif re.search(r"\bOK\b", text):
            res[name] = "pass"
        elif re.search(r"\bSkip", text):
            res[name] = "skip"
        else:
            res[name] = "fail"
    for line in out:
        m = re.search(r"Run test: (\S+) \((\S+)\)", line)
        if m:
            close()
            name, seen = f"{m.group(1)}({m.group(2)})", []
            continue
        seen.append(line)
    close()
    return res


def impl_stats(lines):
    if "@@IMPL_STATS" not in lines:
        return []
    i, out = lines.index("@@IMPL_STATS") + 1, []
    while i < len(lines) and not lines[i].startswith("@@"):
        if lines[i].strip():
            out.append(lines[i].strip())
        i += 1
    return out


# Rust functions that must be reached, per upstream suite run with
# impl=rust: (suite prefix, function, which count, what it is).
REACH = [
    ("upstream-madvise-file", "retract_page_tables", "second", "tables removed"),
    ("upstream-madvise-shmem", "retract_page_tables", "second", "tables removed"),
    ("upstream-khugepaged-file", "retract_page_tables", "second", "tables removed"),
    ("upstream-khugepaged-shmem", "retract_page_tables", "second", "tables removed"),
    ("upstream-madvise-file", "hpage_collapse_scan_file", "first", "calls"),
    ("upstream-madvise-shmem", "hpage_collapse_scan_file", "first", "calls"),
    ("upstream-madvise-anon", "hpage_collapse_scan_pmd", "first", "calls"),
    ("upstream-khugepaged-anon", "khugepaged_scan_mm_slot", "first", "calls"),
    ("upstream-khugepaged-anon", "hpage_collapse_scan_pmd", "first", "calls"),
    ("upstream-khugepaged-shmem", "khugepaged_scan_mm_slot", "first", "calls"),
    ("upstream-khugepaged-file", "khugepaged_scan_mm_slot", "first", "calls"),
    ("upstream-khugepaged-file", "hpage_collapse_scan_file", "first", "calls"),
    ("upstream-madvise-anon", "collapse_huge_page", "second", "huge pages installed"),
    ("upstream-khugepaged-anon", "collapse_huge_page", "second", "huge pages installed"),
]


def deltas(lines):
    """{(impl run, suite, stats impl, function): (first, second)} from @@DELTA."""
    out = {}
    for line in lines:
        m = re.search(r"@@DELTA impl=(\S+) suite=(\S+) stats=(\S+) fn=(\S+) "
                      r"first=(-?\d+) second=(-?\d+)", line)
        if m:
            out[m.group(1, 2, 3, 4)] = (int(m.group(5)), int(m.group(6)))
    return out


def reach_report(arch, d, problems):
    """Which implementation's functions each upstream suite ran; problems if
    a suite run with one implementation moved the other's counters, or did
    not reach the Rust function it must reach."""
    rows = []
    suites = sorted({k[1] for k in d if k[1].startswith("upstream-")})
    for suite in suites:
        for run in IMPLS:
            other = "c" if run == "rust" else "rust"
            moved = [f"{fn}" for (r, s, st, fn), v in d.items()
                     if r == run and s == suite and st == other and v[0] > 0]
            if moved:
                problems.append(f"{arch} {suite} [{run}]: {other} counters moved: "
                                + ", ".join(sorted(moved)))
        got = {fn: v for (r, s, st, fn), v in d.items()
               if r == "rust" and s == suite and st == "rust"}
        rows.append((suite, got))
    for prefix, fn, which, what in REACH:
        for suite, got in rows:
            if suite != prefix:
                continue
            v = got.get(fn, (0, 0))[0 if which == "first" else 1]
            if v <= 0:
                problems.append(f"{arch} {suite} [rust]: the Rust {fn}() was not reached "
                                f"({what}: 0)")
    return rows


def test_report(pairs):
    global TEST_SUITES
    if os.environ.get("SUITES"):
        TEST_SUITES = os.environ["SUITES"].split()
    passed = failed = skipped = 0
    problems, diffs, notes = [], [], []
    cols = []                  # (arch, impl)
    cells = {}                 # (suite, arch, impl) -> text
    reach = {}                 # arch -> [(suite, {fn: (first, second)})]
    for arch, log in pairs:
        lines = read_log(log)
        results = {}
        for impl, suite, rc, out in blocks(lines):
            cases = cases_upstream(out) if suite.startswith("upstream-") else cases_tap(out)
            results[(suite, impl)] = {"rc": rc, "cases": cases}
        kunit, done = cases_ktap(lines)
        if kunit or done:
            results[("kunit-doctests", "both")] = {"rc": 0 if done else None, "cases": kunit}
            guards = [n for n in kunit if "_mm_guard_rs_" in n]
            notes.append(f"{arch}: kunit: {len(kunit)} doctests, {len(guards)} of kernel::mm::guard, "
                         f"{sum(1 for n in guards if kunit[n] == 'pass')} passed")
            if not guards:
                failed += 1
                problems.append(f"{arch}: no kernel::mm::guard doctest ran")
        skipped_suites = {(m.group(2), m.group(1)) for m in
                          (re.search(r"@@SKIP impl=(\S+) suite=(\S+)", l) for l in lines) if m}
        for impl in IMPLS:
            cols.append((arch, impl))
            for suite in TEST_SUITES:
                key = (suite, arch, impl)
                r = results.get((suite, impl))
                if suite in DIFFERENTIAL:
                    if impl != IMPLS[0]:
                        cells[key] = cells.get((suite, arch, IMPLS[0]), "-")
                        continue
                    r = results.get((suite, "both"))
                if (suite, impl) in skipped_suites:
                    cells[key] = "skipped"
                    skipped += 1
                    continue
                if r is None:
                    cells[key] = "MISSING"
                    failed += 1
                    problems.append(f"{arch} {suite} [{impl}]: no result")
                    continue
                cases = r["cases"]
                p = sum(1 for v in cases.values() if v == "pass")
                f = sum(1 for v in cases.values() if v == "fail")
                s = sum(1 for v in cases.values() if v == "skip")
                passed, failed, skipped = passed + p, failed + f, skipped + s
                problems += [f"{arch} {suite} [{impl}]: {n} failed"
                             for n, v in cases.items() if v == "fail"]
                note = ""
                if r["rc"] is None:
                    failed += 1
                    note = " CRASHED"
                    problems.append(f"{arch} {suite} [{impl}]: did not finish")
                elif r["rc"] != 0 and f == 0:
                    failed += 1
                    note = f" rc={r['rc']}"
                    problems.append(f"{arch} {suite} [{impl}]: exit code {r['rc']}, no failed case")
                elif not cases:
                    failed += 1
                    note = " no cases"
                    problems.append(f"{arch} {suite} [{impl}]: ran no case")
                cells[key] = (f"{p} ok" + (f", {f} FAIL" if f else "")
                              + (f", {s} skip" if s else "") + note)
        for suite in TEST_SUITES:
            a = results.get((suite, "c"), {}).get("cases", {})
            b = results.get((suite, "rust"), {}).get("cases", {})
            diffs += [f"{arch} {suite}: {n}: c={a.get(n, '-')} rust={b.get(n, '-')}"
                      for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        reach[arch] = reach_report(arch, deltas(lines), problems)
        stats = impl_stats(lines)
        notes += [f"{arch}: {s}" for s in stats]
        for fn, what, col in (("collapse_pte_mapped_thp", "calls", 2),
                              ("retract_page_tables", "page tables removed", 3),
                              ("hpage_collapse_scan_file", "calls", 2),
                              ("khugepaged_scan_mm_slot", "calls", 2),
                              ("hpage_collapse_scan_pmd", "calls", 2),
                              ("collapse_huge_page", "huge pages installed", 3)):
            rust = [s.split() for s in stats if s.startswith(f"rust {fn} ")]
            if lines and (not rust or int(rust[0][col]) == 0):
                failed += 1
                problems.append(f"{arch}: the Rust {fn}() never ran ({what}: 0)")
        errors = [l for l in lines if KERNEL_ERRORS.search(l) and not l.startswith("@@")]
        if errors:
            failed += 1
            problems.append(f"{arch}: kernel reported {len(errors)} error line(s) on the console")
            notes += [f"{arch} console: {e}" for e in errors[:20]]
        if not any(l.startswith("@@END") for l in lines):
            failed += 1
            problems.append(f"{arch}: guest did not reach the end marker (crash or timeout)")

    style = os.environ.get("STYLE")
    rows = [(s, [cells.get((s, a, i), "-") for a, i in cols]) for s in TEST_SUITES]
    if style:
        rows.append(("style (rustfmtcheck, clippy, rustdoc, checkpatch)", [style] + [""] * (len(cols) - 1)))
        if style == "pass":
            passed += 1
        else:
            failed += 1
            problems.append("style gates (rustfmtcheck, clippy, rustdoc, checkpatch) failed")

    w = max(len(r[0]) for r in rows + [("suite", [])])
    cw = max([len(c) for _, r in rows for c in r] + [14])
    print()
    print(f"{'suite':<{w}}  " + "  ".join(f"{a + ' ' + i:<{cw}}" for a, i in cols))
    print(f"{'-' * w}  " + "  ".join("-" * cw for _ in cols))
    for suite, r in rows:
        print(f"{suite:<{w}}  " + "  ".join(f"{c:<{cw}}" for c in r))
    print()
    if notes:
        print("impl_stats per implementation (collapse_pte_mapped_thp, "
              "hpage_collapse_scan_file, hpage_collapse_scan_pmd, collapse_huge_page: "
              "calls, SCAN_SUCCEED; "
              "retract_page_tables: calls, tables removed; khugepaged_scan_mm_slot: calls, "
              "pages of progress), doctests, console errors:")
        for n in notes:
            print(f"  {n}")
    fns = ("collapse_pte_mapped_thp", "retract_page_tables", "hpage_collapse_scan_file",
           "hpage_collapse_scan_pmd", "collapse_huge_page", "khugepaged_scan_mm_slot")
    short = ("pte_mapped calls", "retract tables", "scan_file calls", "scan_pmd calls",
             "anon THPs", "scan_mm_slot calls")
    for arch, rows in reach.items():
        if not rows:
            continue
        print(f"{arch}: Rust functions reached by the upstream suites with impl=rust "
              "(impl_stats delta per suite):")
        print(f"  {'suite':<26}" + "".join(f"{h:>20}" for h in short))
        for suite, got in rows:
            vals = [got.get(fn, (0, 0))[1 if fn in ("retract_page_tables", "collapse_huge_page")
                                        else 0] for fn in fns]
            print(f"  {suite:<26}" + "".join(f"{v:>20}" for v in vals))
    if diffs:
        print("C/Rust differences:")
        for d in diffs:
            print(f"  {d}")
    for p in problems:
        print(f"FAIL: {p}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


def demo_report(pairs):
    ok = True
    for arch, log in pairs:
        lines = read_log(log)
        rows = {}
        for line in lines:
            m = re.search(r"@@DEMO impl=(\S+) mem=(\S+) result=(\S+) before=(-?\d+) "
                          r"after=(-?\d+) ns=(\d+)", line)
            if m:
                impl, mem, res, before, after, ns = m.groups()
                rows.setdefault(mem, {}).setdefault(impl, []).append(
                    (res, int(before), int(after), int(ns)))
        errors = [l for l in lines if KERNEL_ERRORS.search(l) and not l.startswith("@@")]
        ok = ok and bool(rows) and not errors and any(l.startswith("@@END") for l in lines)
        print()
        print(f"{arch}: MADV_COLLAPSE per 2 MiB, C and Rust alternating in one boot "
              "(huge kB mapped before -> after)")
        print(f"{'memory':<18} {'impl':<5} {'result':<7} {'huge kB':<13} {'median us':>10} "
              f"{'min-max us':>17}  {'rust/c':>6}")
        for mem, by in rows.items():
            med = {}
            for impl in IMPLS:
                r = by.get(impl)
                if not r:
                    continue
                ns = [x[3] for x in r]
                med[impl] = statistics.median(ns)
                res = "ok" if all(x[0] == "ok" for x in r) else "FAIL"
                ok = ok and res == "ok"
                ratio = f"{med['rust'] / med['c']:.2f}" if impl == "rust" and med.get("c") else ""
                print(f"{mem:<18} {impl:<5} {res:<7} {f'{r[0][1]} -> {r[0][2]}':<13} "
                      f"{med[impl] / 1000:>10.1f} {min(ns) / 1000:>8.1f}-{max(ns) / 1000:<8.1f}  "
                      f"{ratio:>6}")
        for e in errors[:20]:
            print(f"  kernel error: {e}")
    print("(TCG: timings are emulated; only the Rust/C ratio is meaningful.)")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] in ("test", "demo"):
        pairs = [tuple(a.split("=", 1)) for a in sys.argv[2:]]
        sys.exit(test_report(pairs) if sys.argv[1] == "test" else demo_report(pairs))
    sys.exit(__doc__)
