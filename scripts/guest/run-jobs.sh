# SPDX-License-Identifier: GPL-2.0
# Jobs of `make run`, sourced by /init once per implementation ($impl); the
# demo alternates the implementations itself, so it runs once.
if [ "$impl" = c ]; then
	echo "@@BEGIN impl=both suite=demo"
	/bin/khugepaged_demo "${DEMO_RUNS:-7}" $FILEDIR
	echo "@@DONE impl=both suite=demo rc=$?"
fi
