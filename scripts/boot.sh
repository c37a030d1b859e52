#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build everything, boot the guest with a job list and report.
#   boot.sh test|run
set -euo pipefail
MODE=${1:?usage: boot.sh test|run}
STEP=$MODE
. "$(dirname "$0")/common.sh"

T0=$(date +%s)
bash "$TOP/scripts/tree.sh"
bash "$TOP/scripts/kernel.sh"
export STYLE=
if [ "$MODE" = test ]; then
	if bash "$TOP/scripts/check.sh"; then STYLE=pass; else STYLE=fail; fi
	# check.sh built the crate with clippy-driver: build it back.
	bash "$TOP/scripts/kernel.sh" >/dev/null
fi
T1=$(date +%s)
case $MODE in
test) JOBS=$TOP/scripts/guest/test-jobs.sh ;;
run)  JOBS=$TOP/scripts/guest/run-jobs.sh ;;
esac
bash "$TOP/scripts/guest.sh" "$JOBS"
LOG=$LOGS/$MODE-$ARCH-$(date +%Y%m%d-%H%M%S).log
# Show the guest's progress, not every line of test output.
QEMU_SHOW='@@(BEGIN|DONE|SKIP|GUEST|END)|BUG:|WARNING:|Kernel panic|Oops' \
	bash "$TOP/scripts/qemu.sh" "$LOG" "${CMDLINE:-}" | sed -u 's/^/[guest] /'
T2=$(date +%s)
ln -sf "$(basename "$LOG")" "$LOGS/$MODE-$ARCH-latest.log"
say "build+config $((T1 - T0))s, guest $((T2 - T1))s; console log: $LOG"
case $MODE in
test)
	python3 "$TOP/scripts/report.py" test "$LOG" collapse \
		upstream-madvise-anon upstream-madvise-shmem upstream-madvise-file \
		upstream-khugepaged-anon upstream-khugepaged-shmem upstream-khugepaged-file ;;
run)
	python3 "$TOP/scripts/report.py" demo "$LOG" ;;
esac
