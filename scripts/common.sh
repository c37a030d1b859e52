# SPDX-License-Identifier: GPL-2.0
# Shared settings for the khugepaged-rs scripts; sourced, not run.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=${ARCH:-x86_64}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/khugepaged-rs}
TARBALL=${TARBALL:-/usr/src/linux-source-6.12.tar.xz}
# KSRC: a user's own 6.12.y tree (patched in place); default: unpacked tarball.
SRC=${KSRC:-$CACHE/linux-6.12}
# PROFILE: test (configs/debug.config on top: lockdep, KASAN, ...) or bench
# (production-like, no debug checks), each in its own build directory.
PROFILE=${PROFILE:-test}
case $PROFILE in
test)	BUILD_SUFFIX= ;;
bench)	BUILD_SUFFIX=-bench ;;
*)	echo "unknown PROFILE=$PROFILE (test or bench)" >&2; exit 1 ;;
esac
# $O (from the user) names the build directory; BUILD is what we use, so
# that a per-arch default never leaks into the environment of a child.
BUILD=${O:-$CACHE/build-$ARCH$BUILD_SUFFIX}
GUEST=$CACHE/guest-$ARCH$BUILD_SUFFIX
LOGS=${LOGS:-$CACHE/logs}
BINDGEN_DIR=${BINDGEN_DIR:-/opt/khugepaged-rs/bindgen}

export PATH=/usr/lib/llvm-19/bin:$PATH

case $ARCH in
x86_64)	KARCH=x86_64; KIMAGE=arch/x86/boot/bzImage; CROSS= ;;
arm64)	KARCH=arm64; KIMAGE=arch/arm64/boot/Image; CROSS=aarch64-linux-gnu-
	BUSYBOX=${BUSYBOX:-${ARM64_DIR:-/opt/khugepaged-rs/arm64}/bin/busybox} ;;
*)	echo "unsupported ARCH=$ARCH" >&2; exit 1 ;;
esac

# The clang and llvm-link of rustc's LLVM, which CONFIG_RUST_INLINE_HELPERS
# needs to read rustc's bitcode (the kernel's C compiler is clang 19).
RUST_LLVM=/usr/lib/llvm-$(/usr/bin/rustc -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')/bin

KMAKE=(make -C "$SRC" O="$BUILD" ARCH="$KARCH" LLVM=1
	RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	RUST_CLANG="$RUST_LLVM/clang" RUST_LLVM_LINK="$RUST_LLVM/llvm-link"
	BINDGEN="$BINDGEN_DIR/bin/bindgen"
	CLIPPY_DRIVER=/usr/bin/clippy-driver)

# "6.12.117" of the tree in $SRC.
tree_version() {
	awk '/^VERSION =/ { v = $3 } /^PATCHLEVEL =/ { p = $3 } /^SUBLEVEL =/ { s = $3 }
		END { printf "%s.%s.%s", v, p, s }' "$SRC/Makefile"
}

# The patches of a series file's directory, in order.
series() { grep -v '^\s*\(#\|$\)' "$1/series"; }

say() { printf '[%s] %s\n' "${STEP:-khugepaged-rs}" "$*"; }
die() { printf '[%s] error: %s\n' "${STEP:-khugepaged-rs}" "$*" >&2; exit 1; }
