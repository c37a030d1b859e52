#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the khugepaged-rs test guest: set up the mounts and swap, run
# every job of /jobs once per implementation, print machine-readable
# markers for scripts/report.py, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mkdir -p /tmp /mnt/ext4 /mnt/shmem /mnt/shmem-always
mount -t tmpfs tmpfs /tmp
mount -t tmpfs -o huge=advise tmpfs /mnt/shmem
mount -t tmpfs -o huge=always tmpfs /mnt/shmem-always
if mount -t ext4 /dev/vda /mnt/ext4; then FILEDIR=/mnt/ext4; else FILEDIR=; fi
if [ -e /sys/block/zram0/disksize ]; then
	echo 512M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null &&
		swapon /dev/zram0
fi
THP=/sys/kernel/mm/transparent_hugepage
echo "@@GUEST $(uname -r) $(uname -m) impl=$(cat $THP/khugepaged/impl 2>/dev/null)"
echo "@@CMDLINE $(cat /proc/cmdline)"
# KUnit ran at boot (the kernel crate's doctests, kernel::mm::guard among
# them), below the console loglevel: copy its KTAP from the log buffer.
echo "@@KUNIT"
dmesg | awk '/KTAP version/ { on = 1 } on { print } /^\[[ 0-9.]+\] (not )?ok [0-9]+ rust_doctests_kernel/ { on = 0 }'
echo "@@KUNIT_END"

IMPLS=$(sed 's/[][]//g' $THP/khugepaged/impl 2>/dev/null || echo c)
for impl in $(echo "$IMPLS" | tr ' ' '\n' | sort); do
	echo "$impl" > $THP/khugepaged/impl || echo "@@ERROR cannot select $impl"
	. /jobs
done
echo "@@IMPL_STATS"
cat $THP/khugepaged/impl_stats
echo "@@END"
sync
reboot -f
