# SPDX-License-Identifier: GPL-2.0
# Jobs of `make test`, sourced by /init once per implementation ($impl).

STATS=/sys/kernel/debug/khugepaged/impl_stats

# run SUITE COMMAND...: run a test, bracketed by markers with its exit code
# and the kernel's taint mask before and after, then what it added to each
# impl_stats counter of the implementation.
run() {
	suite=$1; shift
	case " ${SUITES:-$suite} " in *" $suite "*) ;; *) return 0 ;; esac
	cat $STATS > /tmp/stats.before 2>/dev/null
	taint=$(cat /proc/sys/kernel/tainted)
	kmsg "@@BEGIN impl=$impl suite=$suite"
	start=$(cut -d' ' -f1 /proc/uptime)
	# Its own pipe to the log, drained before the end marker is written.
	{ "$@" 2>&1; echo $? > /tmp/rc; } | to_kmsg
	rc=$(cat /tmp/rc)
	end=$(cut -d' ' -f1 /proc/uptime)
	kmsg "@@DONE impl=$impl suite=$suite rc=$rc start=$start end=$end taint=$taint,$(cat /proc/sys/kernel/tainted)"
	cat $STATS > /tmp/stats.after 2>/dev/null
	awk -v impl="$impl" -v suite="$suite" '
		NR == FNR { a[$1 " " $2] = $3; b[$1 " " $2] = $4; next }
		{ printf "@@DELTA impl=%s suite=%s stats=%s fn=%s first=%d second=%d\n",
			impl, suite, $1, $2, $3 - a[$1 " " $2], $4 - b[$1 " " $2] }' \
		/tmp/stats.before /tmp/stats.after
}
export KHUGEPAGED_FILE_DIR=$FILEDIR KHUGEPAGED_SHMEM_DIR=/mnt/shmem-always
run collapse /bin/khugepaged_collapse
run notifier /bin/khugepaged_notifier
run uprobe /bin/khugepaged_uprobe
run retract /bin/khugepaged_retract
run scan /bin/khugepaged_scan
run anon-race /bin/khugepaged_anon_race
run races /bin/khugepaged_races
for ctx in madvise khugepaged; do
	run upstream-$ctx-anon /bin/khugepaged $ctx:anon
	run upstream-$ctx-shmem /bin/khugepaged $ctx:shmem
	# Without ext4 (init.sh reported an @@ERROR) this is a SKIP, which fails.
	if [ -n "$FILEDIR" ]; then
		run upstream-$ctx-file /bin/khugepaged $ctx:file $FILEDIR
	else
		echo "@@SKIP impl=$impl suite=upstream-$ctx-file reason=no-ext4"
	fi
done

# The differential tester switches the implementation itself (C, then Rust,
# per seed): run it once, reported for both.
if [ "$impl" = c ]; then
	impl=both run tester /bin/khugepaged-rs-tester --seeds ${TESTER_SEEDS:-1,2,3} --steps 30 \
		--concurrent-seeds ${TESTER_CONCURRENT_SEEDS:-1,2} --threads 3 --concurrent-steps 300
fi
