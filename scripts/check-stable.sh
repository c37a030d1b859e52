#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Try patches/series on every 6.12.y that Debian's archive offers as
# linux-source-6.12 (bookworm-security, bookworm-backports), and report per
# version whether the series applies, or which patch fails and where.
# Not part of `make test`: it downloads about 150 MB per version.
#   scripts/check-stable.sh [VERSION...]     (default: every version apt knows)
set -euo pipefail
STEP=check-stable
. "$(dirname "$0")/common.sh"

WORK=${WORK:-$CACHE/check-stable}
mkdir -p "$WORK"
if [ $# -gt 0 ]; then
	VERSIONS=("$@")
else
	mapfile -t VERSIONS < <(apt-cache madison linux-source-6.12 | awk '{ print $3 }' | sort -uV)
fi
[ ${#VERSIONS[@]} -gt 0 ] || die "apt knows no linux-source-6.12 (run apt-get update)"

# Only the upstream files the series touches are unpacked.
mapfile -t FILES < <(sed -n 's|^--- a/||p' "$TOP"/patches/0*.patch | sort -u)
mapfile -t SERIES < <(series "$TOP/patches")

ok=0 bad=0
for v in "${VERSIONS[@]}"; do
	dir=$WORK/$v
	deb=$(ls "$WORK"/linux-source-6.12_"${v//:/%3a}"_*.deb 2>/dev/null | head -1 || true)
	if [ -z "$deb" ]; then
		say "$v: downloading"
		(cd "$WORK" && apt-get download -qq "linux-source-6.12=$v" 2>&1 |
			{ grep -v unsandboxed || true; }) ||
			{ say "$v: cannot download"; bad=$((bad + 1)); continue; }
		deb=$(ls "$WORK"/linux-source-6.12_"${v//:/%3a}"_*.deb | head -1)
	fi
	rm -rf "$dir"
	mkdir -p "$dir/deb" "$dir/src"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir/deb" --wildcards '*/linux-source-6.12.tar.xz'
	tarball=$dir/deb/usr/src/linux-source-6.12.tar.xz
	top=$( (tar -tf "$tarball" || true) | head -1 | cut -d/ -f1)
	tar -xf "$tarball" -C "$dir/src" --strip-components=1 \
		"${FILES[@]/#/$top/}" "$top/Makefile" 2>/dev/null || true
	rm -rf "$dir/deb"
	tv=$(SRC=$dir/src tree_version)
	failed=
	for p in "${SERIES[@]}"; do
		if ! out=$(patch -d "$dir/src" -p1 -f -N <"$TOP/patches/$p" 2>&1); then
			failed=$p
			break
		fi
		if grep -q 'offset\|fuzz' <<<"$out"; then
			say "$v ($tv): $p applies with $(grep -c 'offset\|fuzz' <<<"$out") hunk(s) moved"
		fi
	done
	if [ -z "$failed" ]; then
		say "$v ($tv): the series applies (${#SERIES[@]} patches)"
		ok=$((ok + 1))
	else
		say "$v ($tv): patches/$failed does not apply:"
		grep -E 'FAILED|can.t find|Reversed' <<<"$out" | sed 's/^/    /'
		bad=$((bad + 1))
	fi
	rm -rf "$dir"
done
say "$ok version(s) take the series, $bad do not"
[ $bad -eq 0 ]
