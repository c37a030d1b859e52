#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Style gates: `make rustfmtcheck` over the tree (the overlay's Rust files
# included), clippy (CLIPPY=1 build of the kernel crate and the Rust
# khugepaged), `make rustdoc` without warnings, checkpatch --strict over
# patches/ and the project's C files.
set -euo pipefail
STEP=check
. "$(dirname "$0")/common.sh"

fail=0
cd "$TOP"
mapfile -t RS < <(git ls-files '*.rs' 2>/dev/null || find mm rust -name '*.rs')
mapfile -t CS < <(git ls-files 'rust/*.c' 'mm/*.c' 'tools/*.[ch]' 2>/dev/null || find rust mm tools -name '*.[ch]')

# rustfmtcheck runs on the unpacked tree, where the overlay has been
# copied (scripts/tree.sh), so it covers the upstream files we patch too.
if out=$(cd "$SRC" && "${KMAKE[@]}" rustfmtcheck 2>&1); then
	say "rustfmtcheck: clean (${#RS[@]} project files among them)"
else
	echo "$out" | grep -v 'make\[' >&2
	say "rustfmtcheck: FAILED"; fail=1
fi

# CLIPPY=1 changes the command line, so kbuild recompiles the crate with
# clippy-driver; the next plain build recompiles it back.
if out=$("${KMAKE[@]}" CLIPPY=1 mm/khugepaged/khugepaged_rs.o 2>&1) &&
	! grep -qE '^(warning|error)' <<<"$out"; then
	say "clippy: clean"
else
	echo "$out" | grep -A12 -E '^(warning|error)' >&2 || echo "$out" >&2
	say "clippy: FAILED"; fail=1
fi

# The kernel crate's documentation, kernel::mm included: broken
# intra-doc links and the like are warnings.
if out=$(cd "$SRC" && "${KMAKE[@]}" rustdoc 2>&1) &&
	! grep -qE '^(warning|error)' <<<"$out"; then
	say "rustdoc: clean ($BUILD/Documentation/output/rust/rustdoc/kernel/mm/)"
else
	echo "$out" | grep -A12 -E '^(warning|error)' >&2 || echo "$out" >&2
	say "rustdoc: FAILED"; fail=1
fi

# UNKNOWN_COMMIT_ID: the unpacked tarball has no git history to look in.
cp_opts=(--strict --root "$SRC" --quiet --ignore UNKNOWN_COMMIT_ID)
if (cd "$SRC" && ./scripts/checkpatch.pl "${cp_opts[@]}" "$TOP"/patches/0*.patch &&
	./scripts/checkpatch.pl "${cp_opts[@]}" -f "${CS[@]/#/$TOP/}"); then
	say "checkpatch --strict: clean ($(ls patches/0*.patch | wc -l) patches, ${#CS[@]} C files)"
else
	say "checkpatch: FAILED"; fail=1
fi
[ $fail -eq 0 ] || die "style gates failed"
