# SPDX-License-Identifier: GPL-2.0
# Jobs of `make test`, sourced by /init once per implementation ($impl).

# run SUITE COMMAND...: run a test, bracketed by markers with its exit code.
run() {
	suite=$1; shift
	echo "@@BEGIN impl=$impl suite=$suite"
	start=$(cut -d' ' -f1 /proc/uptime)
	"$@" 2>&1
	rc=$?
	end=$(cut -d' ' -f1 /proc/uptime)
	echo "@@DONE impl=$impl suite=$suite rc=$rc start=$start end=$end"
}

export KHUGEPAGED_FILE_DIR=$FILEDIR KHUGEPAGED_SHMEM_DIR=/mnt/shmem-always
run collapse /bin/khugepaged_collapse
run uprobe /bin/khugepaged_uprobe
run retract /bin/khugepaged_retract
run scan /bin/khugepaged_scan
for ctx in madvise khugepaged; do
	run upstream-$ctx-anon /bin/khugepaged $ctx:anon
	run upstream-$ctx-shmem /bin/khugepaged $ctx:shmem
	if [ -n "$FILEDIR" ]; then
		run upstream-$ctx-file /bin/khugepaged $ctx:file $FILEDIR
	else
		echo "@@SKIP impl=$impl suite=upstream-$ctx-file reason=no-ext4"
	fi
done

# The differential tester switches the implementation itself (C, then Rust,
# per seed): run it once, reported for both.
if [ "$impl" = c ]; then
	impl=both run tester /bin/khugepaged-rs-tester --seeds ${TESTER_SEEDS:-1,2,3} --steps 30
fi
