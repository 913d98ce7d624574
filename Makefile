# The README's two commands: `make up` runs the system, `make test` runs the tests.
# Both install missing system packages first (scripts/setup.sh is idempotent).

# One persistent build directory, so repeated runs (and CI on this machine) reuse the
# RocksDB and gRPC builds instead of spending 20 minutes on them again.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kvstore/target

DATA_DIR ?= data

.PHONY: setup build up test lint

setup:
	@./scripts/setup.sh

build: setup
	cargo build --workspace --bins

up: build
	DATA_DIR=$(DATA_DIR) ./scripts/up.sh

test: build
	cargo test --workspace

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
