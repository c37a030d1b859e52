#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Read khugepaged-rs guest console logs and report.

  report.py test ARCH=LOG...   suite x (arch, impl) table, kernel errors, and
                               a last line "N passed, N failed";
                               exit 1 on any failure, missing result or crash.
                               $STYLE=pass|fail adds the style gates' result.
  report.py demo ARCH=LOG...   the MADV_COLLAPSE demo table of `make run`.
"""
import os
import re
import statistics
import sys

# Every suite `make test` must report, per architecture and implementation
# (scripts/guest/test-jobs.sh runs them), with the number of cases each
# must report: fewer, more or a skipped one fails the run.
TEST_SUITES = {
    "collapse": 15,
    "notifier": 5,
    "uprobe": 3,
    "retract": 2,
    "scan": 1,
    "anon-race": 1,
    "races": 21,
    "upstream-madvise-anon": 14,
    "upstream-madvise-shmem": 6,
    "upstream-madvise-file": 8,
    "upstream-khugepaged-anon": 13,
    "upstream-khugepaged-shmem": 4,
    "upstream-khugepaged-file": 6,
    "tester": 5,
    # The kernel crate's doctests (KUnit at boot): all of them, every boot.
    "kunit-doctests": 129,
}
# Suites (or "suite/case") allowed to skip, each with the reason.  A skip
# anywhere else fails: a skipped suite is not a passed one.
OPTIONAL = {}
# Suites with one result per boot, shown in both columns and counted once:
# the tester runs both implementations itself (impl=both); the kernel
# crate's doctests (KUnit, kernel::mm's among them) run at boot.
DIFFERENTIAL = {"tester", "kunit-doctests"}
IMPLS = ("c", "rust")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
# Any of these on the console fails the run: what WARN*, BUG*, lockdep, RCU,
# KASAN, UBSAN, SLUB debugging, DEBUG_LIST, page_table_check, the hung-task
# and lockup detectors and the oops paths print (x86_64 and arm64 wording).
KERNEL_ERRORS = re.compile(
    r"BUG:|WARNING:|\bBUG [\w.-]+ \(|Oops|Kernel panic|kernel BUG|"
    r"general protection fault|Unable to handle kernel|Internal error:|"
    r"possible circular locking|possible recursive locking|"
    r"inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|"
    r"lock held when returning|rcu: INFO|detected stalls|self-detected stall|"
    r"INFO: task .* blocked|soft lockup|hard LOCKUP|KASAN:|UBSAN:|"
    r"list_(add|del) corruption|page_table_check|Call [Tt]race:|"
    r"Bad page (state|map)|Bad rss-counter|Memory failure:|refcount_t:|"
    r"slab error|Redzone|Poison overwritten|Object padding|"
    r"printk messages dropped")
# Taint bits a run may show: TAINT_TEST (18), set by KUnit at boot.
TAINT_OK = 1 << 18
TAINT_NAMES = "PFSRMBUDAWCIOELKXTN"   # bit i: as in Documentation/admin-guide/tainted-kernels.rst


def taint_text(mask):
    return "".join(c for i, c in enumerate(TAINT_NAMES) if mask & (1 << i)) or "-"


# The console's printk timestamp, "[   12.345678] ".
STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# The suite markers of scripts/guest/test-jobs.sh.
BEGIN = re.compile(r"@@BEGIN impl=(\S+) suite=(\S+)")
DONE = re.compile(r"@@DONE impl=(\S+) suite=(\S+) rc=(\d+)(?:.* taint=(\d+),(\d+))?")


def read_log(path):
    """The console log's lines, without ANSI colours and printk timestamps
    (the guest's output comes through the kernel log too)."""
    try:
        with open(path, errors="replace") as f:
            return [STAMP.sub("", ANSI.sub("", l.rstrip("\r\n"))) for l in f]
    except OSError:
        return []


def blocks(lines):
    """Yield (impl, suite, rc or None, output lines, (taint before, after) or
    None) per @@BEGIN block."""
    cur = None
    for line in lines:
        m = BEGIN.search(line)
        if m:
            if cur:
                yield cur[0], cur[1], None, cur[2], None
            cur = (m.group(1), m.group(2), [])
            continue
        m = DONE.search(line)
        if m and cur:
            taint = (int(m.group(4)), int(m.group(5))) if m.group(4) else None
            yield cur[0], cur[1], int(m.group(3)), cur[2], taint
            cur = None
            continue
        if cur:
            cur[2].append(line)
    if cur:
        yield cur[0], cur[1], None, cur[2], None


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
        # A case that skips may print OK for its setup steps first.
        if re.search(r"\bFail", text):
            res[name] = "fail"
        elif re.search(r"\bSkip", text):
            res[name] = "skip"
        elif re.search(r"\bOK\b", text):
            res[name] = "pass"
        else:
            res[name] = "fail"
    for line in out:
        m = re.search(r"Run test: (\S+) \((\S+)\)", line)
        if m:
            close()
            name, seen = f"{m.group(1)}({m.group(2)})", []
            continue
        if line.startswith("Restore THP and khugepaged settings"):
            # The end of the last case; the restore itself is no case.
            close()
            name, seen = None, []
            continue
        seen.append(line)
    if name is not None:
        close()
    return res


def block(lines, marker):
    """The non-empty lines after `marker`, up to the next @@ marker."""
    if marker not in lines:
        return []
    i, out = lines.index(marker) + 1, []
    while i < len(lines) and not lines[i].startswith("@@"):
        if lines[i].strip():
            out.append(lines[i].strip())
        i += 1
    return out


def impl_stats(lines):
    return block(lines, "@@IMPL_STATS")


def impl_results(lines):
    """The @@IMPL_RESULTS block (<debugfs>/khugepaged/impl_results): the
    result names, and {(impl, fn, result): count}."""
    names, counts = [], {}
    for line in block(lines, "@@IMPL_RESULTS"):
        f = line.split()
        if len(f) == 2 and f[0] == "result":
            names.append(f[1])
        elif len(f) == 4 and f[3].isdigit():
            counts[(f[0], f[1], f[2])] = int(f[3])
    return names, counts


def coverage_report(results):
    """Prints, per function that returns a scan result, how often each
    result came back with C and with Rust on each arch (the whole boot),
    the results one implementation reached and the other did not, and the
    results neither reached."""
    if not any(c for _, (_, c) in results.items()):
        return
    archs = list(results)
    fns = ("collapse_pte_mapped_thp", "hpage_collapse_scan_file",
           "hpage_collapse_scan_pmd", "collapse_huge_page")
    print("Coverage: scan results each function returned, whole boot (c/rust), "
          "from <debugfs>/khugepaged/impl_results:")
    print(f"  {'function':<26}{'result':<32}" + "".join(f"{a:>16}" for a in archs))
    for fn in fns:
        names = []
        for a in archs:
            names += [n for n in results[a][0] if n not in names]
        never, one_sided = [], []
        for n in names:
            got = [(results[a][1].get(("c", fn, n), 0), results[a][1].get(("rust", fn, n), 0))
                   for a in archs]
            if not any(c or r for c, r in got):
                never.append(n)
                continue
            print(f"  {fn:<26}{n:<32}" + "".join(f"{f'{c}/{r}':>16}" for c, r in got))
            for a, (c, r) in zip(archs, got):
                if bool(c) != bool(r):
                    one_sided.append(f"{n} ({a}: {'C' if c else 'Rust'} only)")
        if one_sided:
            print(f"  {fn}: reached by one implementation only: " + ", ".join(one_sided))
        if never:
            print(f"  {fn}: never returned: " + " ".join(never))


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


def guest_facts(lines):
    """{key: value} of the @@GUEST, @@CPUS and @@TAINT lines."""
    facts = {}
    for line in lines:
        m = re.search(r"@@GUEST (\S+) (\S+)", line)
        if m:
            facts["release"], facts["machine"] = m.groups()
        m = re.search(r"@@CPUS online=(\d+) nodes=(\d+)", line)
        if m:
            facts["cpus"], facts["nodes"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"@@TAINT (boot|end)=(\d+)", line)
        if m:
            facts["taint_" + m.group(1)] = int(m.group(2))
    return facts


# What a suite may announce it is about to make the kernel print
# ("@@EXPECT-KERNEL <prefix>"): only these, for one pfn at a time.
EXPECTABLE = re.compile(r"^Memory failure: 0x[0-9a-f]+:$")


def console_errors(lines):
    """[(suite or None, line)] for every kernel error line, with the suite
    whose @@BEGIN/@@DONE bracket it fell in (the guest's output and the
    kernel's messages share the log, in order). A line a suite announced
    with @@EXPECT-KERNEL (one of EXPECTABLE, inside its own bracket) is not
    an error."""
    out, cur, expected = [], None, []
    for line in lines:
        m = BEGIN.search(line)
        if m:
            cur, expected = f"{m.group(2)} [{m.group(1)}]", []
            continue
        if DONE.search(line):
            cur, expected = None, []
            continue
        m = re.search(r"@@EXPECT-KERNEL (.*\S)", line)
        if m and cur and EXPECTABLE.match(m.group(1)):
            expected.append(m.group(1))
            continue
        if "@@" not in line and KERNEL_ERRORS.search(line):
            if not any(e in line for e in expected):
                out.append((cur, line))
    return out


def test_report(pairs):
    suites = dict(TEST_SUITES)
    if os.environ.get("SUITES"):
        suites = {k: TEST_SUITES.get(k) for k in os.environ["SUITES"].split()}
    for k in os.environ.get("ANY_COUNT", "").split():
        # make soak: the tester runs as many seeds as fit in its minutes.
        suites[k] = None
    passed = failed = 0
    problems, diffs, notes = [], [], []
    cols = []                  # (arch, impl)
    cells = {}                 # (suite, arch, impl) -> text
    reach = {}                 # arch -> [(suite, {fn: (first, second)})]
    scan_results = {}          # arch -> (result names, {(impl, fn, result): n})

    def fail(msg):
        nonlocal failed
        failed += 1
        problems.append(msg)

    for arch, log in pairs:
        lines = read_log(log)
        if not lines:
            fail(f"{arch}: no console log ({log})")
            continue
        facts = guest_facts(lines)
        notes.append(f"{arch}: kernel {facts.get('release', '?')}, "
                     f"{facts.get('cpus', '?')} CPUs online, {facts.get('nodes', '?')} NUMA nodes, "
                     f"taint at boot {taint_text(facts.get('taint_boot', 0))}")
        if facts.get("cpus", 0) < 2:
            fail(f"{arch}: the guest ran on {facts.get('cpus', '?')} CPU(s), needs at least 2")
        for when in ("boot", "end"):
            bad = facts.get("taint_" + when, 0) & ~TAINT_OK
            if bad:
                fail(f"{arch}: kernel tainted {taint_text(bad)} ({bad:#x}) at {when}")
        for line in lines:
            m = re.search(r"@@ERROR (.*)", line)
            if m:
                fail(f"{arch}: guest error: {m.group(1)}")

        results = {}
        retries = {}
        notify = {}
        for impl, suite, rc, out, taint in blocks(lines):
            cases = cases_upstream(out) if suite.startswith("upstream-") else cases_tap(out)
            results[(suite, impl)] = {"rc": rc, "cases": cases}
            if taint:
                new = taint[1] & ~taint[0] & ~TAINT_OK
                if new:
                    fail(f"{arch} {suite} [{impl}]: the kernel became tainted "
                         f"{taint_text(new)} ({new:#x})")
            n = sum(1 for l in out if "@@RETRY" in l or "MADV_COLLAPSE: EAGAIN, retry" in l)
            if n:
                retries[(suite, impl)] = n
            for l in out:
                m = re.search(r"@@NOTIFY case=(\S+) seq=(\S+) small=(\d+)", l)
                if m:
                    notify[(impl, m.group(1))] = (m.group(2), int(m.group(3)))
        if not os.environ.get("SUITES"):
            for suite, impl in sorted(set(results) - {(k, i) for k in TEST_SUITES
                                                      for i in IMPLS + ("both",)}):
                fail(f"{arch} {suite} [{impl}]: a suite make test does not know "
                     "(add it to TEST_SUITES in scripts/report.py)")
        kunit, done = cases_ktap(lines)
        if kunit or done:
            results[("kunit-doctests", "both")] = {"rc": 0 if done else None, "cases": kunit}
            guards = [n for n in kunit if "_mm_" in n]
            notes.append(f"{arch}: kunit: {len(kunit)} doctests, {len(guards)} of kernel::mm, "
                         f"{sum(1 for n in guards if kunit[n] == 'pass')} passed")
            if not guards:
                fail(f"{arch}: no kernel::mm doctest ran")
        skipped_suites = {(m.group(2), m.group(1)): m.group(3) for m in
                          (re.search(r"@@SKIP impl=(\S+) suite=(\S+) reason=(\S+)", l)
                           for l in lines) if m}
        for impl in IMPLS:
            cols.append((arch, impl))
            for suite, want in suites.items():
                key = (suite, arch, impl)
                r = results.get((suite, impl))
                if suite in DIFFERENTIAL:
                    if impl != IMPLS[0]:
                        cells[key] = cells.get((suite, arch, IMPLS[0]), "-")
                        continue
                    r = results.get((suite, "both"))
                if (suite, impl) in skipped_suites:
                    why = skipped_suites[(suite, impl)]
                    cells[key] = "SKIP"
                    if suite in OPTIONAL:
                        notes.append(f"{arch} {suite} [{impl}]: skipped ({why}); optional: "
                                     f"{OPTIONAL[suite]}")
                    else:
                        fail(f"{arch} {suite} [{impl}]: suite skipped ({why})")
                    continue
                if r is None:
                    cells[key] = "MISSING"
                    fail(f"{arch} {suite} [{impl}]: no result")
                    continue
                cases = r["cases"]
                p = sum(1 for v in cases.values() if v == "pass")
                f = sum(1 for v in cases.values() if v == "fail")
                sk = [n for n, v in cases.items() if v == "skip"]
                passed += p
                for n, v in cases.items():
                    if v == "fail":
                        fail(f"{arch} {suite} [{impl}]: {n} failed")
                for n in sk:
                    if suite in OPTIONAL or f"{suite}/{n}" in OPTIONAL:
                        notes.append(f"{arch} {suite} [{impl}]: {n} skipped (optional)")
                    else:
                        fail(f"{arch} {suite} [{impl}]: {n} skipped")
                note = ""
                if r["rc"] is None:
                    note = " CRASHED"
                    fail(f"{arch} {suite} [{impl}]: did not finish")
                elif r["rc"] != 0 and f == 0:
                    note = f" rc={r['rc']}"
                    fail(f"{arch} {suite} [{impl}]: exit code {r['rc']}, no failed case")
                elif not cases:
                    note = " no cases"
                    fail(f"{arch} {suite} [{impl}]: ran no case")
                elif want is not None and len(cases) != want:
                    note = f" of {want}"
                    fail(f"{arch} {suite} [{impl}]: {len(cases)} cases reported, {want} expected")
                n = retries.get((suite, impl))
                cells[key] = (f"{p} ok" + (f", {f} FAIL" if f else "")
                              + (f", {len(sk)} SKIP" if sk else "") + note
                              + (f" ({n} retried)" if n else ""))
        for (suite, impl), n in sorted(retries.items()):
            notes.append(f"{arch} {suite} [{impl}]: {n} transient EAGAIN retried")
        # Per case, C and Rust must agree (the one intended difference, the
        # CoWed extents of khugepaged_collapse, is asserted on each side and
        # passes on both, so it does not show here).
        for suite in suites:
            a = results.get((suite, "c"), {}).get("cases", {})
            b = results.get((suite, "rust"), {}).get("cases", {})
            for n in sorted(set(a) | set(b)):
                if a.get(n) != b.get(n):
                    diffs.append(f"{arch} {suite}: {n}: c={a.get(n, '-')} rust={b.get(n, '-')}")
                    fail(f"{arch} {suite}: {n}: C and Rust differ")
        # The whole-PMD MMU-notifier invalidations of each notifier case, C
        # vs Rust. The smaller ones are C's try_to_unmap(), one per page and
        # VMA, and Rust's unmap_file_range (patch 0021), one per 32 pages
        # and VMA, which the test itself counts.
        for case in sorted({c for _, c in notify}):
            c, r = notify.get(("c", case)), notify.get(("rust", case))
            notes.append(f"{arch} notifier {case}: c={c} rust={r} (whole-PMD sequence, "
                         "smaller invalidations)")
            if (c or ("-",))[0] != (r or ("-",))[0]:
                diffs.append(f"{arch} notifier {case}: invalidations c={c} rust={r}")
                fail(f"{arch} notifier {case}: C and Rust invalidate differently")
        reach_problems = []
        reach[arch] = reach_report(arch, deltas(lines), reach_problems)
        for p in reach_problems:
            fail(p)
        stats = impl_stats(lines)
        notes += [f"{arch}: {s}" for s in stats]
        scan_results[arch] = impl_results(lines)
        for fn, what, col in (("collapse_pte_mapped_thp", "calls", 2),
                              ("retract_page_tables", "page tables removed", 3),
                              ("hpage_collapse_scan_file", "calls", 2),
                              ("khugepaged_scan_mm_slot", "calls", 2),
                              ("hpage_collapse_scan_pmd", "calls", 2),
                              ("collapse_huge_page", "huge pages installed", 3),
                              ("unmap_file_range", "entries unmapped", 3)):
            rust = [s.split() for s in stats if s.startswith(f"rust {fn} ")]
            if not rust or int(rust[0][col]) == 0:
                fail(f"{arch}: the Rust {fn}() never ran ({what}: 0)")
        errors = console_errors(lines)
        if errors:
            where = sorted({s or "outside any suite" for s, _ in errors})
            fail(f"{arch}: kernel reported {len(errors)} error line(s) on the console, in: "
                 + "; ".join(where))
            notes += [f"{arch} console [{s or '-'}]: {e}" for s, e in errors[:30]]
        if not any(l.startswith("@@END") for l in lines):
            fail(f"{arch}: guest did not reach the end marker (crash or timeout)")

    style = os.environ.get("STYLE")
    rows = [(s, [cells.get((s, a, i), "-") for a, i in cols]) for s in suites]
    if style:
        rows.append(("style (rustfmtcheck, clippy, rustdoc, checkpatch)", [style] + [""] * (len(cols) - 1)))
        if style == "pass":
            passed += 1
        else:
            fail("style gates (rustfmtcheck, clippy, rustdoc, checkpatch) failed")

    w = max(len(r[0]) for r in rows + [("suite", [])])
    cw = max([len(c) for _, r in rows for c in r] + [14])
    print()
    print(f"{'suite':<{w}}  " + "  ".join(f"{a + ' ' + i:<{cw}}" for a, i in cols))
    print(f"{'-' * w}  " + "  ".join("-" * cw for _ in cols))
    for suite, r in rows:
        print(f"{suite:<{w}}  " + "  ".join(f"{c:<{cw}}" for c in r))
    print()
    if notes:
        print("Guests, impl_stats per implementation (collapse_pte_mapped_thp, "
              "hpage_collapse_scan_file, hpage_collapse_scan_pmd, collapse_huge_page: "
              "calls, SCAN_SUCCEED; "
              "retract_page_tables: calls, tables removed; khugepaged_scan_mm_slot: calls, "
              "pages of progress), doctests, notifier sequences, retries, console errors:")
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
    coverage_report(scan_results)
    if diffs:
        print("C/Rust differences:")
        for d in diffs:
            print(f"  {d}")
    for p in problems:
        print(f"FAIL: {p}")
    print(f"{passed} passed, {failed} failed")
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
