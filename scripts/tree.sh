#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Prepare the kernel tree: unpack the 6.12 tarball (unless KSRC= names a
# tree), apply patches/series once, and sync the overlay files so that only
# changed files get a new mtime (incremental rebuilds).
set -euo pipefail
STEP=tree
. "$(dirname "$0")/common.sh"

APPLIED=$SRC/.khugepaged-rs-applied

if [ -z "${KSRC:-}" ] && [ ! -f "$SRC/Makefile" ]; then
	[ -f "$TARBALL" ] || die "$TARBALL missing: run 'make deps'"
	say "unpacking $(basename "$TARBALL") into $SRC"
	mkdir -p "$SRC.tmp"
	tar -xf "$TARBALL" -C "$SRC.tmp" --strip-components=1
	mv "$SRC.tmp" "$SRC"
fi
grep -q '^VERSION = 6$' "$SRC/Makefile" && grep -q '^PATCHLEVEL = 12$' "$SRC/Makefile" ||
	die "$SRC is not a 6.12 tree"

# Same series already applied?  Nothing to do.
if ! { [ -d "$APPLIED" ] && diff -qr "$TOP/patches" "$APPLIED" >/dev/null; }; then
	old=() new=()
	mapfile -t new < <(series "$TOP/patches")
	[ -d "$APPLIED" ] && mapfile -t old < <(series "$APPLIED")
	# The patches both series start with, unchanged, stay applied: only
	# what follows is reverted and applied again, so that a change to the
	# last patch rebuilds only what it and those after it touch.
	keep=0
	while [ "$keep" -lt "${#old[@]}" ] && [ "$keep" -lt "${#new[@]}" ] &&
		[ "${old[$keep]}" = "${new[$keep]}" ] &&
		cmp -s "$APPLIED/${old[$keep]}" "$TOP/patches/${new[$keep]}"; do
		keep=$((keep + 1))
	done
	if [ -d "$APPLIED" ]; then
		say "patch series changed from ${old[$keep]:-its end}: reverting $(( ${#old[@]} - keep )) patches"
		for ((i = ${#old[@]} - 1; i >= keep; i--)); do
			p=${old[$i]}
			patch -d "$SRC" -p1 -R -s -f <"$APPLIED/$p" ||
				die "cannot revert $p; remove $SRC to start afresh"
		done
		rm -rf "$APPLIED"
	fi
	for p in "${new[@]:$keep}"; do
		say "applying $p"
		patch -d "$SRC" -p1 -s -f -N <"$TOP/patches/$p" ||
			die "patches/$p does not apply to Linux $(tree_version) ($SRC); the series is made for 6.12.117 (scripts/check-stable.sh tries every 6.12.y Debian offers)"
	done
	find "$SRC" -name '*.orig' -newer "$TOP/patches/series" -delete 2>/dev/null || true
	cp -r "$TOP/patches" "$APPLIED"
fi

# Overlay: new files of the project, mirrored into the tree.  --checksum
# leaves unchanged files (and their mtimes) alone.
for d in mm include rust tools Documentation; do
	[ -d "$TOP/$d" ] || continue
	rsync -r --checksum --out-format='[tree] overlay %n' "$TOP/$d/" "$SRC/$d/" | grep -v '/$' || true
done
# An overlay file the project no longer has (a module split or renamed) is
# removed from the tree, or stale code would stay in it.
MANIFEST=$SRC/.khugepaged-rs-overlay
for d in mm include rust tools Documentation; do
	if [ -d "$TOP/$d" ]; then (cd "$TOP" && find "$d" -type f); fi
done | sort > "$MANIFEST.new"
if [ -f "$MANIFEST" ]; then
	comm -23 "$MANIFEST" "$MANIFEST.new" | while read -r f; do
		echo "[tree] overlay removed $f"
		rm -f "$SRC/$f"
	done
fi
mv "$MANIFEST.new" "$MANIFEST"
