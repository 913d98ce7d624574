# The README's two commands: `make up` runs the system, `make test` runs the tests.
# Both install missing system packages first (scripts/setup.sh is idempotent).

# One persistent build directory, so repeated runs (and CI on this machine) reuse the
# RocksDB and gRPC builds instead of spending 20 minutes on them again.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kvstore/target

DATA_DIR ?= data
# Extra `cluster up` flags, e.g. `make up UP_ARGS="--simulate --agents 3"`.
UP_ARGS ?=

.PHONY: setup build up down status test lint images compose-up compose-down

setup:
	@./scripts/setup.sh

build: setup
	cargo build --workspace --bins

# The local HA control plane (cluster up): detached processes, data and logs in $(DATA_DIR).
up: build
	DATA_DIR=$(DATA_DIR) ./scripts/up.sh $(UP_ARGS)

status:
	$(CARGO_TARGET_DIR)/debug/cluster --dir $(DATA_DIR) status

down:
	$(CARGO_TARGET_DIR)/debug/cluster --dir $(DATA_DIR) down

# Local images, no registry: the busybox test image and the control-plane image
# (the workspace's binaries and their libraries) that docker-compose.yml runs.
images: build
	./scripts/images.sh
	./docker/build-image.sh

compose-up: images
	docker-compose up -d

compose-down:
	docker-compose down -v

test: build
	cargo test --workspace

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
