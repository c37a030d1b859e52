# SPDX-License-Identifier: GPL-2.0
#
# khugepaged-rs: khugepaged's collapse path in Rust on Linux 6.12.
#
#   make run     build, boot, show MADV_COLLAPSE with C and Rust side by side
#   make test    every check, C and Rust in one boot; ends "N passed, N failed"
#
# Variables: ARCH=x86_64, CACHE=~/.cache/khugepaged-rs (tree, build, logs),
# KSRC=/path/to/linux-6.12.y (patched in place), O=build dir.

SHELL := /bin/bash
export ARCH CACHE KSRC O

.PHONY: all run test bench soak check deps tree kernel clean-build help

all: run

help:
	@sed -n '3,10p' Makefile

deps:
	@bash scripts/deps.sh

tree: deps
	@bash scripts/tree.sh

kernel: tree
	@bash scripts/kernel.sh

# Style gates alone (make test runs them too).
check: kernel
	@bash scripts/check.sh

run: deps
	@bash scripts/boot.sh run

test: deps
	@bash scripts/boot.sh test

# Rust/C cost, alternating in one boot, per arch: table, JSON, CSV, PNG.
bench: deps
	@bash scripts/boot.sh bench

# The differential tester for a long time: make soak SEEDS=1 MINUTES=30
soak: deps
	@SEEDS=$(SEEDS) MINUTES=$(MINUTES) bash scripts/boot.sh soak

# Remove the kernel build directory (not the unpacked tree).
clean-build:
	@. scripts/common.sh && rm -rf "$$BUILD"
