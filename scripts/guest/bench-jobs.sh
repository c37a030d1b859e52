# SPDX-License-Identifier: GPL-2.0
# Jobs of `make bench`, sourced by /init once per implementation ($impl); the
# benchmark alternates the implementations itself, so it runs once.
if [ "$impl" = c ]; then
	echo "@@BEGIN impl=both suite=bench"
	/bin/khugepaged_bench "${BENCH_ROUNDS:-9}" "${BENCH_WARMUP:-2}" $FILEDIR
	echo "@@DONE impl=both suite=bench rc=$?"
	echo "@@BEGIN impl=both suite=profile"
	/bin/khugepaged_bench --profile "${PROF_ITERS:-150}" $FILEDIR
	echo "@@DONE impl=both suite=profile rc=$?"
fi
