#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Read a khugepaged-rs guest console log and report.

  report.py test LOG SUITE...   side-by-side C/Rust table of the test suites,
                                kernel errors, and a last line
                                "N passed, N failed[, N skipped]"; exit 1 on
                                any failure, missing result or guest crash.
  report.py demo LOG            the MADV_COLLAPSE demo table of `make run`.
"""
import os
import re
import statistics
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Any of these on the console fails the run.
KERNEL_ERRORS = re.compile(
    r"BUG:|WARNING:|Oops|Kernel panic|kernel BUG|general protection fault|"
    r"Unable to handle kernel|possible circular locking|possible recursive locking|"
    r"inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|KASAN:|"
    r"UBSAN:|lock held when returning|page_table_check|Call Trace:")
IMPLS = ("c", "rust")


def read_log(path):
    with open(path, errors="replace") as f:
        return [ANSI.sub("", l.rstrip("\r\n")) for l in f]


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


def cases_upstream(out):
    """6.12's tools/testing/selftests/mm/khugepaged: OK/Fail per 'Run test'."""
    res, name, seen = {}, "(setup)", []
    def close():
        if name is None:
            return
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


def test_report(log, suites):
    lines = read_log(log)
    results = {}      # (suite, impl) -> dict
    for impl, suite, rc, out in blocks(lines):
        cases = cases_tap(out) if not suite.startswith("upstream-") else cases_upstream(out)
        results[(suite, impl)] = {"rc": rc, "cases": cases}
    skipped_suites = {(m.group(2), m.group(1))
                      for m in (re.search(r"@@SKIP impl=(\S+) suite=(\S+)", l) for l in lines) if m}
    errors = [l for l in lines if KERNEL_ERRORS.search(l) and not l.startswith("@@")]
    ended = any(l.startswith("@@END") for l in lines)

    passed = failed = skipped = 0
    problems = []
    rows = []
    for suite in suites:
        cells = []
        for impl in IMPLS:
            r = results.get((suite, impl))
            if (suite, impl) in skipped_suites:
                cells.append("skipped")
                skipped += 1
                continue
            if r is None:
                cells.append("MISSING")
                failed += 1
                problems.append(f"{suite} [{impl}]: no result")
                continue
            cases = r["cases"]
            p = sum(1 for v in cases.values() if v == "pass")
            f = sum(1 for v in cases.values() if v == "fail")
            s = sum(1 for v in cases.values() if v == "skip")
            passed += p
            failed += f
            skipped += s
            for n, v in cases.items():
                if v == "fail":
                    problems.append(f"{suite} [{impl}]: {n} failed")
            note = ""
            if r["rc"] is None:
                failed += 1
                note = " CRASHED"
                problems.append(f"{suite} [{impl}]: did not finish")
            elif r["rc"] != 0 and f == 0:
                failed += 1
                note = f" rc={r['rc']}"
                problems.append(f"{suite} [{impl}]: exit code {r['rc']} with no failed case")
            elif not cases:
                failed += 1
                note = " no cases"
                problems.append(f"{suite} [{impl}]: ran no case")
            cells.append(f"{p} ok" + (f", {f} FAIL" if f else "") + (f", {s} skip" if s else "") + note)
        rows.append((suite, cells))

    # Per-case divergences between the implementations.
    diffs = []
    for suite in suites:
        a = results.get((suite, "c"), {}).get("cases", {})
        b = results.get((suite, "rust"), {}).get("cases", {})
        for n in sorted(set(a) | set(b)):
            if a.get(n) != b.get(n):
                diffs.append(f"{suite}: {n}: c={a.get(n, '-')} rust={b.get(n, '-')}")

    stats = []
    if "@@IMPL_STATS" in lines:
        i = lines.index("@@IMPL_STATS") + 1
        while i < len(lines) and not lines[i].startswith("@@"):
            stats.append(lines[i].strip())
            i += 1

    style = os.environ.get("STYLE")
    if style:
        if style == "pass":
            passed += 1
        else:
            failed += 1
            problems.append("style gates (rustfmt, clippy, checkpatch) failed")

    w = max(len(s) for s in suites + ["suite"] + (["style (rustfmt, clippy, checkpatch)"] if style else []))
    print()
    print(f"{'suite':<{w}}  {'c':<22}  {'rust':<22}")
    print(f"{'-' * w}  {'-' * 22}  {'-' * 22}")
    for suite, cells in rows:
        print(f"{suite:<{w}}  {cells[0]:<22}  {cells[1]:<22}")
    if style:
        print(f"{'style (rustfmt, clippy, checkpatch)':<{w}}  {style}")
    print()
    if stats:
        print("collapse_pte_mapped_thp() calls / SCAN_SUCCEED per implementation:")
        for s in stats:
            print(f"  {s}")
        rust = [s for s in stats if s.startswith("rust ")]
        if not rust or int(rust[0].split()[2]) == 0:
            failed += 1
            problems.append("the Rust collapse_pte_mapped_thp() never ran")
    if diffs:
        print("C/Rust differences:")
        for d in diffs:
            print(f"  {d}")
    if errors:
        failed += 1
        problems.append(f"kernel reported {len(errors)} error line(s) on the console")
        print("kernel errors on the console:")
        for e in errors[:20]:
            print(f"  {e}")
    if not ended:
        failed += 1
        problems.append("guest did not reach the end marker (crash or timeout)")
    for p in problems:
        print(f"FAIL: {p}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


def demo_report(log):
    lines = read_log(log)
    rows = {}
    for line in lines:
        m = re.search(r"@@DEMO impl=(\S+) mem=(\S+) result=(\S+) before=(-?\d+) after=(-?\d+) ns=(\d+)", line)
        if m:
            impl, mem, res, before, after, ns = m.groups()
            rows.setdefault(mem, {}).setdefault(impl, []).append((res, int(before), int(after), int(ns)))
    errors = [l for l in lines if KERNEL_ERRORS.search(l) and not l.startswith("@@")]
    ok = bool(rows) and not errors and any(l.startswith("@@END") for l in lines)
    print()
    print("MADV_COLLAPSE per 2 MiB, C and Rust alternating in one boot; median of the runs (huge kB mapped before -> after)")
    print(f"{'memory':<18} {'impl':<5} {'result':<8} {'huge kB':<13} {'median us':>10} {'min-max us':>16}  {'rust/c':>6}")
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
            hk = f"{r[0][1]} -> {r[0][2]}"
            ratio = ""
            if impl == "rust" and med.get("c"):
                ratio = f"{med['rust'] / med['c']:.2f}"
            print(f"{mem:<18} {impl:<5} {res:<8} {hk:<13} {med[impl] / 1000:>10.1f} "
                  f"{min(ns) / 1000:>7.1f}-{max(ns) / 1000:<8.1f}  {ratio:>6}")
    if errors:
        print("kernel errors on the console:")
        for e in errors[:20]:
            print(f"  {e}")
    print("(TCG: timings are emulated; only the Rust/C ratio is meaningful.)")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "test":
        sys.exit(test_report(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) == 3 and sys.argv[1] == "demo":
        sys.exit(demo_report(sys.argv[2]))
    sys.exit(__doc__)
