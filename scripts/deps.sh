#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything the build, the guest and the tests need, from Debian's
# registry and crates.io only.  Idempotent and non-interactive: a second run
# checks and returns in about a second.
set -euo pipefail

say() { printf '[deps] %s\n' "$*"; }
die() { printf '[deps] error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

PKGS=(
	linux-source-6.12
	rustc-web rust-web-src rust-web-clippy rustfmt-web
	clang-19 lld-19 llvm-19 libclang-19-dev
	clang-22 llvm-22
	flex bison bc libelf-dev libssl-dev cpio kmod xz-utils make gcc
	busybox-static e2fsprogs python3 rsync gnuplot-nox
)
# clang-22 and llvm-22 (bookworm-security): clang and llvm-link on the LLVM
# of rustc-web, for CONFIG_RUST_INLINE_HELPERS (patch 0019); the kernel
# itself builds with clang 19.
BPO_PKGS=(qemu-system-x86 qemu-system-arm)
# arm64 guests: cross compiler and static libc for the test binaries.
PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
# ... and Rust's std for aarch64, for the differential tester.
ARM64_PKGS=(libstd-rust-web-dev:arm64)

missing=()
for p in "${PKGS[@]}" "${BPO_PKGS[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
		missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
		say "adding the bookworm-backports apt source (QEMU)"
		cat <<-SRC | $SUDO tee /etc/apt/sources.list.d/khugepaged-rs-backports.sources >/dev/null
		Types: deb
		URIs: http://deb.debian.org/debian
		Suites: bookworm-backports
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		SRC
	fi
	say "apt-get update"
	$SUDO apt-get update -qq
	say "installing: ${missing[*]}"
	$SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
	$SUDO apt-get install -y -qq --no-install-recommends \
		-t bookworm-backports "${BPO_PKGS[@]}" >/dev/null
fi

# arm64 guest userland: Debian's busybox-static for arm64, unpacked (it
# cannot be installed beside the amd64 one).
ARM64_DIR=${ARM64_DIR:-/opt/khugepaged-rs/arm64}
if ! [ -x "$ARM64_DIR/bin/busybox" ]; then
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		say "dpkg --add-architecture arm64"
		$SUDO dpkg --add-architecture arm64
		$SUDO apt-get update -qq
	fi
	say "fetching busybox-static:arm64"
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -qq busybox-static:arm64 >/dev/null 2>&1) ||
		{ $SUDO apt-get update -qq && (cd "$tmp" && apt-get download -qq busybox-static:arm64); }
	$SUDO mkdir -p "$ARM64_DIR"
	$SUDO dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$ARM64_DIR"
	rm -rf "$tmp"
fi

if ! dpkg-query -W -f='${Status}\n' libstd-rust-web-dev:arm64 2>/dev/null | grep -q '^install ok installed'; then
	say "installing ${ARM64_PKGS[*]}"
	$SUDO apt-get install -y -qq --no-install-recommends "${ARM64_PKGS[@]}" >/dev/null ||
		{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${ARM64_PKGS[@]}" >/dev/null; }
fi

# bindgen: Debian's is below the kernel's minimum (0.65.1).
BINDGEN_DIR=${BINDGEN_DIR:-/opt/khugepaged-rs/bindgen}
if ! [ -x "$BINDGEN_DIR/bin/bindgen" ]; then
	say "cargo install bindgen-cli (about 2 minutes)"
	LIBCLANG_PATH=/usr/lib/llvm-19/lib \
		cargo install --locked --quiet --root "$BINDGEN_DIR" bindgen-cli@0.73.2
fi
say "ok: $(/usr/bin/rustc --version), $("$BINDGEN_DIR/bin/bindgen" --version), $(qemu-system-x86_64 --version | head -1)"
[ -x "$ARM64_DIR/bin/busybox" ] || die "arm64 busybox missing"
