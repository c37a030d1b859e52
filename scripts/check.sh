#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Style gates: rustfmt, clippy (CLIPPY=1 build of the Rust khugepaged),
# checkpatch --strict over patches/ and the project's C files.
set -euo pipefail
STEP=check
. "$(dirname "$0")/common.sh"

fail=0
cd "$TOP"
mapfile -t RS < <(git ls-files '*.rs' 2>/dev/null || find mm rust -name '*.rs')
mapfile -t CS < <(git ls-files 'rust/*.c' 'mm/*.c' 'tools/*.[ch]' 2>/dev/null || find rust mm tools -name '*.[ch]')

if /usr/bin/rustfmt --edition 2021 --config-path "$SRC/.rustfmt.toml" --check "${RS[@]}" >/dev/null 2>&1; then
	say "rustfmt: clean (${#RS[@]} files)"
else
	/usr/bin/rustfmt --edition 2021 --config-path "$SRC/.rustfmt.toml" --check "${RS[@]}" || true
	say "rustfmt: FAILED"; fail=1
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

# UNKNOWN_COMMIT_ID: the unpacked tarball has no git history to look in.
cp_opts=(--strict --root "$SRC" --quiet --ignore UNKNOWN_COMMIT_ID)
if (cd "$SRC" && ./scripts/checkpatch.pl "${cp_opts[@]}" "$TOP"/patches/0*.patch &&
	./scripts/checkpatch.pl "${cp_opts[@]}" -f "${CS[@]/#/$TOP/}"); then
	say "checkpatch --strict: clean ($(ls patches/0*.patch | wc -l) patches, ${#CS[@]} C files)"
else
	say "checkpatch: FAILED"; fail=1
fi
[ $fail -eq 0 ] || die "style gates failed"
