#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Configure (tinyconfig + configs/*.config) and build the kernel in $BUILD:
# PROFILE=test adds configs/debug.config, PROFILE=bench does not.
# Reconfigures only when a fragment changed; the build itself is
# incremental.
set -euo pipefail
STEP=kernel
. "$(dirname "$0")/common.sh"

mkdir -p "$BUILD" "$LOGS"
BLOG=$LOGS/build-$ARCH$BUILD_SUFFIX.log
FRAGS=("$TOP/configs/base.config" "$TOP/configs/distro.config" "$TOP/configs/$ARCH.config")
[ "$PROFILE" = test ] && FRAGS+=("$TOP/configs/debug.config")
for f in ${EXTRA_CONFIGS:-}; do FRAGS+=("$f"); done
STAMP=$BUILD/.khugepaged-rs-config
want=$(cat "${FRAGS[@]}" | sha256sum | cut -d' ' -f1)

if ! [ -f "$BUILD/.config" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
	say "configuring ($PROFILE): tinyconfig + $(printf '%s ' "${FRAGS[@]##*/}")"
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

say "building $KIMAGE (log: $BLOG)"
start=$(date +%s)
if ! "${KMAKE[@]}" -j"$(nproc)" ${KBUILD_EXTRA:-} "$(basename "$KIMAGE")" >"$BLOG" 2>&1; then
	grep -E 'error|Error' "$BLOG" | head -40 >&2
	die "kernel build failed; see $BLOG"
fi
# Any compiler warning about a file of the project fails: the Rust
# khugepaged, the kernel crate's mm modules, the helpers and bindings, the
# patched and new C.  clang names the file on the warning line
# ("path:l:c: warning:"), rustc on a "  --> path:l:c" line below it (and a
# build that succeeded printed no error's); objtool names the function.
PROJECT='(mm/khugepaged|rust/helpers/(helpers|mm)\.c|rust/kernel/(mm|lib)|rust/bindings/|include/linux/khugepaged|include/trace/events/huge_memory\.h)'
if grep -nE "^\S*$PROJECT\S*:[0-9]+:[0-9]+: warning:|^\s*--> \S*$PROJECT|objtool: .*(rust_|khugepaged)" "$BLOG" >&2; then
	# The objects were built all the same: make the next build compile
	# them again, so that it sees (and fails on) the warnings too.
	# (Paths are absolute, or relative to the build directory.)
	grep -oE "\S*$PROJECT[^: ]*" "$BLOG" | sort -u | while read -r f; do
		(cd "$BUILD" && [ -f "$f" ] && touch "$f") || true
	done
	die "compiler warnings in the project's code (see $BLOG)"
fi
# CONFIG_RUST_INLINE_HELPERS (patch 0019): no helper may be left out of line
# in the Rust khugepaged; the internalized copy of one that LLVM did not
# inline stays as a local rust_helper_* function, an undefined reference
# means the object was not built through bitcode at all.
if grep -q '^CONFIG_RUST_INLINE_HELPERS=y' "$BUILD/.config"; then
	left=$("$RUST_LLVM/llvm-nm" "$BUILD/mm/khugepaged/khugepaged_rs.o" | grep -c ' rust_helper_' || true)
	[ "$left" -eq 0 ] ||
		die "CONFIG_RUST_INLINE_HELPERS: $left helper(s) not inlined in mm/khugepaged/khugepaged_rs.o"
	say "inline helpers: none left out of line in mm/khugepaged/khugepaged_rs.o"
fi
say "built $BUILD/$KIMAGE in $(( $(date +%s) - start ))s"
