# SPDX-License-Identifier: GPL-2.0
# Jobs of `make run`, sourced by /init once per implementation ($impl).
echo "@@BEGIN impl=$impl suite=demo"
/bin/khugepaged_demo "$impl" "${DEMO_RUNS:-7}" $FILEDIR
echo "@@DONE impl=$impl suite=demo rc=$?"
