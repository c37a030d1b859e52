#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the built kernel with the guest from guest.sh; the console goes to
# stdout and to LOG.  KVM only when it really works, else TCG.
#   qemu.sh LOG [extra kernel args]
set -euo pipefail
STEP=qemu
. "$(dirname "$0")/common.sh"

LOG=${1:?usage: qemu.sh LOG [cmdline...]}; shift
TIMEOUT=${QEMU_TIMEOUT:-2400}
accel=tcg
if [ -z "${NO_KVM:-}" ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo &&
	[ "$ARCH" = "$(uname -m | sed 's/aarch64/arm64/')" ]; then
	accel=kvm
fi
# QEMU_ICOUNT=1 (make bench): TCG with -icount shift=0,sleep=off, where
# the guest clock advances one nanosecond per instruction executed and
# skips idle time: CLOCK_MONOTONIC deltas in the guest are instruction
# counts, the same from one boot to the next. Single-threaded TCG, so
# the two vCPUs run in turn.
ICOUNT=()
platform=$accel
if [ -n "${QEMU_ICOUNT:-}" ]; then
	accel=tcg
	ICOUNT=(-icount shift=0,sleep=off)
	platform=tcg-icount
fi
case $ARCH in
x86_64)
	QEMU=(qemu-system-x86_64 -M pc -cpu max -smp 2)
	CONSOLE=ttyS0 ;;
arm64)
	QEMU=(qemu-system-aarch64 -M virt -cpu "$([ $accel = kvm ] && echo host || echo cortex-a57)" -smp 2)
	CONSOLE=ttyAMA0 ;;
esac
# loglevel=8: the console carries every message, KERN_WARNING (WARN_ON,
# lockdep, RCU) and KERN_INFO/DEBUG among them, for scripts/report.py.
# printk.devkmsg=on: the guest's output goes through /dev/kmsg, unthrottled.
# numa=fake=2: two NUMA nodes (NUMA_EMU) for migration between them.
# 6 GiB: upstream's collapse_compound_extreme leaves 512 partly mapped THPs
# (1 GiB) on the deferred split queue and then allocates one more THP on
# the node holding them. With 3 GiB (a node of 1.3 GiB after KASAN), the
# shrinker split them under the collapse, whose isolation then found their
# migration entries: MADV_COLLAPSE failed with EINVAL or EAGAIN in 4 of 16
# tries, C and Rust alike; with 6 GiB, in none of 16 (thp_split_page 0).
say "booting $ARCH under $platform (timeout ${TIMEOUT}s, console log: $LOG)"
set +e
timeout --foreground -k 10 "$TIMEOUT" "${QEMU[@]}" -accel $accel "${ICOUNT[@]}" -m "${GUEST_MEM:-6G}" \
	-nographic -no-reboot -monitor none -serial stdio \
	-kernel "$BUILD/$KIMAGE" -initrd "$GUEST/initramfs.cpio" \
	-drive file="$GUEST/ext4.img",if=virtio,format=raw \
	-append "console=$CONSOLE panic=-1 oops=panic loglevel=8 printk.devkmsg=on numa=fake=2 $*" </dev/null 2>&1 |
	tee "$LOG" | if [ -n "${QEMU_SHOW:-}" ]; then grep --line-buffered -E "$QEMU_SHOW"; else cat; fi
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 124 ] && say "guest timed out after ${TIMEOUT}s"
exit 0
