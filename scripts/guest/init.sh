#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the khugepaged-rs test guest: set up the mounts and swap, run
# every job of /jobs once per implementation, print machine-readable
# markers for scripts/report.py, power off.
#
# Everything the jobs print goes to the kernel log through /dev/kmsg, one
# record per line (printk.devkmsg=on), so that the console (loglevel=8)
# carries test output and kernel messages in one order, never one line cut
# into another.  The suite markers of test-jobs.sh are written directly,
# after the suite's output has drained: a WARNING between two markers
# belongs to that suite.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

# Copies stdin to the kernel log, a record per line (level 6, KERN_INFO;
# the prefix also keeps a line that starts with '<' from being read as one),
# cutting lines longer than a record takes (1024 bytes) into pieces.
to_kmsg() {
	if ! [ -w /dev/kmsg ]; then cat; return; fi
	while IFS= read -r line; do
		while [ ${#line} -gt 900 ]; do
			printf '<6>%s\n' "${line:0:900}" >&3
			line=${line:900}
		done
		printf '<6>%s\n' "$line" >&3
	done 3>/dev/kmsg
}

# Writes one line to the kernel log at once, not through a pipe: a marker
# reaches the console before whatever the kernel prints after it.
kmsg() {
	printf '%s\n' "$*" | to_kmsg
}

main() {
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
	echo "@@CPUS online=$(grep -c '^processor' /proc/cpuinfo) nodes=$(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)"
	[ -n "$FILEDIR" ] || echo "@@ERROR no ext4 file system on /dev/vda"
	# KUnit sets TAINT_TEST (bit 18) at boot; any other bit fails the run.
	echo "@@TAINT boot=$(cat /proc/sys/kernel/tainted)"

	IMPLS=$(sed 's/[][]//g' $THP/khugepaged/impl 2>/dev/null || echo c)
	for impl in $(echo "$IMPLS" | tr ' ' '\n' | sort); do
		echo "$impl" > $THP/khugepaged/impl || echo "@@ERROR cannot select $impl"
		. /jobs
	done
	echo "@@TAINT end=$(cat /proc/sys/kernel/tainted)"
	echo "@@IMPL_STATS"
	cat /sys/kernel/debug/khugepaged/impl_stats
	echo "@@IMPL_RESULTS"
	cat /sys/kernel/debug/khugepaged/impl_results
	echo "@@END"
}

main 2>&1 | to_kmsg
sync
reboot -f
