#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the guest: static test binaries, an initramfs (the tree's
# usr/gen_init_cpio) with busybox and a job list, and an empty ext4 disk.
#   guest.sh JOBS_FILE
set -euo pipefail
STEP=guest
. "$(dirname "$0")/common.sh"

JOBS=${1:?usage: guest.sh JOBS_FILE}
mkdir -p "$GUEST/bin"
SELF=$SRC/tools/testing/selftests
CC=${CROSS}gcc
# -static-pie, not -static: a static non-PIE binary's heap starts within
# 1 GiB of its image (arch_randomize_brk), and can then sit where the
# upstream khugepaged selftest maps its fixed BASE_ADDR (0x40000000), which
# fails it at random ("Failed to allocate VMA"); a PIE's heap is far above.
CFLAGS=(-static-pie -O2 -g -Wall -isystem "$BUILD/usr/include" -I "$SELF" -I "$SELF/mm")

if ! [ -f "$BUILD/.khugepaged-rs-headers" ] || [ "$BUILD/.khugepaged-rs-headers" -ot "$BUILD/.config" ]; then
	say "installing uapi headers"
	"${KMAKE[@]}" -s headers_install >/dev/null
	touch "$BUILD/.khugepaged-rs-headers"
fi

# Rebuild every binary when the flags change.
if [ "$(cat "$GUEST/.cflags" 2>/dev/null)" != "${CFLAGS[*]}" ]; then
	rm -f "$GUEST"/bin/*
	echo "${CFLAGS[*]}" > "$GUEST/.cflags"
fi

build() { # OUT SOURCES-AND-HEADERS...
	local out=$GUEST/bin/$1; shift
	local newest
	newest=$(ls -t "$@" | head -1)
	if ! [ -x "$out" ] || [ "$newest" -nt "$out" ]; then
		say "cc ${out##*/}"
		local srcs=()
		for f in "$@"; do [[ $f == *.c ]] && srcs+=("$f"); done
		$CC "${CFLAGS[@]}" -o "$out" "${srcs[@]}" || die "building ${out##*/} failed"
	fi
}
build khugepaged "$SELF/mm/khugepaged.c" "$SELF/mm/vm_util.c" "$SELF/mm/thp_settings.c"
build khugepaged_collapse "$SELF/mm/khugepaged_collapse.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_notifier "$SELF/mm/khugepaged_notifier.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_uprobe "$SELF/mm/khugepaged_uprobe.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_retract "$SELF/mm/khugepaged_retract.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_scan "$SELF/mm/khugepaged_scan.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_anon_race "$SELF/mm/khugepaged_anon_race.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_races "$SELF/mm/khugepaged_races.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_demo "$SELF/mm/khugepaged_demo.c" "$SELF/mm/khugepaged_util.h"
build khugepaged_bench "$SELF/mm/khugepaged_bench.c" "$SELF/mm/khugepaged_util.h"

# The Rust differential tester: one crate without dependencies, built with
# Debian's rustc (its std for the guest's target) as a static binary.
TESTER=$TOP/tools/testing/selftests/mm/khugepaged-rs-tester
RTARGET=$(sed 's/arm64/aarch64/' <<<"$ARCH")-unknown-linux-gnu
if ! [ -x "$GUEST/bin/khugepaged-rs-tester" ] ||
	[ "$(ls -t "$TESTER"/src/*.rs "$GUEST/bin/khugepaged-rs-tester" | head -1)" != \
		"$GUEST/bin/khugepaged-rs-tester" ]; then
	say "rustc khugepaged-rs-tester ($RTARGET)"
	/usr/bin/rustc --edition 2021 -O -C strip=symbols -C target-feature=+crt-static \
		--target "$RTARGET" ${CROSS:+-C linker=${CROSS}gcc} \
		-o "$GUEST/bin/khugepaged-rs-tester" "$TESTER/src/main.rs" ||
		die "building khugepaged-rs-tester failed"
fi

BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing: run 'make deps'"
cp "$TOP/scripts/guest/init.sh" "$GUEST/init"
# SUITES="a b": run only these suites of the job list (a developer's
# shortcut; scripts/report.py then expects only them).
{ [ -z "${SUITES:-}" ] || echo "SUITES='$SUITES'"; cat "$JOBS"; } > "$GUEST/jobs"
cat > "$GUEST/initramfs.list" <<LIST
dir /dev 755 0 0
nod /dev/console 600 0 0 c 5 1
nod /dev/null 666 0 0 c 1 3
dir /bin 755 0 0
dir /proc 755 0 0
dir /sys 755 0 0
dir /tmp 1777 0 0
dir /mnt 755 0 0
file /bin/busybox $BUSYBOX 755 0 0
file /init $GUEST/init 755 0 0
file /jobs $GUEST/jobs 644 0 0
LIST
for b in "$GUEST"/bin/*; do
	echo "file /bin/${b##*/} $b 755 0 0" >> "$GUEST/initramfs.list"
done
"$BUILD/usr/gen_init_cpio" "$GUEST/initramfs.list" > "$GUEST/initramfs.cpio"

# A fresh ext4 disk every boot: the file THP cases write to it.
rm -f "$GUEST/ext4.img"
truncate -s 512M "$GUEST/ext4.img"
/sbin/mkfs.ext4 -q -F -L khugepaged "$GUEST/ext4.img"
say "initramfs $(du -h "$GUEST/initramfs.cpio" | cut -f1), ext4 disk ready"
