#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Configure (tinyconfig + configs/*.config) and build the kernel in $BUILD.
# Reconfigures only when a fragment changed; the build itself is
# incremental.
set -euo pipefail
STEP=kernel
. "$(dirname "$0")/common.sh"

mkdir -p "$BUILD" "$LOGS"
FRAGS=("$TOP/configs/base.config" "$TOP/configs/debug.config" "$TOP/configs/$ARCH.config")
for f in ${EXTRA_CONFIGS:-}; do FRAGS+=("$f"); done
STAMP=$BUILD/.khugepaged-rs-config
want=$(cat "${FRAGS[@]}" | sha256sum | cut -d' ' -f1)

if ! [ -f "$BUILD/.config" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
	say "configuring: tinyconfig + $(printf '%s ' "${FRAGS[@]##*/}")"
	"${KMAKE[@]}" -s tinyconfig >/dev/null
	(cd "$BUILD" && "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" .config "${FRAGS[@]}" >/dev/null)
	"${KMAKE[@]}" -s olddefconfig >/dev/null
	# Every requested option must have survived olddefconfig.
	bad=0
	while IFS= read -r line; do
		case $line in CONFIG_*=*) ;; *) continue ;; esac
		grep -qx "$line" "$BUILD/.config" || { say "config: $line did not stick"; bad=1; }
	done < <(cat "${FRAGS[@]}")
	[ $bad -eq 0 ] || die "kernel config incomplete (is Rust available? try: make -C $SRC O=$BUILD LLVM=1 rustavailable)"
	echo "$want" > "$STAMP"
fi

say "building $KIMAGE (log: $LOGS/build-$ARCH.log)"
start=$(date +%s)
if ! "${KMAKE[@]}" -j"$(nproc)" ${KBUILD_EXTRA:-} "$(basename "$KIMAGE")" >"$LOGS/build-$ARCH.log" 2>&1; then
	grep -E 'error|Error' "$LOGS/build-$ARCH.log" | head -40 >&2
	die "kernel build failed; see $LOGS/build-$ARCH.log"
fi
if grep -A4 'warning' "$LOGS/build-$ARCH.log" | grep -qE 'mm/khugepaged|helpers/khugepaged'; then
	grep -A8 'warning' "$LOGS/build-$ARCH.log" >&2
	die "warnings in the project's code"
fi
say "built $BUILD/$KIMAGE in $(( $(date +%s) - start ))s"
