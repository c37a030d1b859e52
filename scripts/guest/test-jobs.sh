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

KHUGEPAGED_FILE_DIR=$FILEDIR run collapse /bin/khugepaged_collapse
for ctx in madvise khugepaged; do
	run upstream-$ctx-anon /bin/khugepaged $ctx:anon
	run upstream-$ctx-shmem /bin/khugepaged $ctx:shmem
	if [ -n "$FILEDIR" ]; then
		run upstream-$ctx-file /bin/khugepaged $ctx:file $FILEDIR
	else
		echo "@@SKIP impl=$impl suite=upstream-$ctx-file reason=no-ext4"
	fi
done
