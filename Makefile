# heartbeatd — the commands a user and CI need. `make help` lists them.

CARGO ?= cargo
CONFIG ?= configs/heartbeatd.toml

.PHONY: help run build test lint fmt clean

help:
	@echo "make run    build (release) and run heartbeatd on $(CONFIG) (127.0.0.1:8080)"
	@echo "make test   the whole suite: format check, clippy, unit and integration tests"
	@echo "make build  release build only (target/release/heartbeatd)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make clean  remove build output"

run:
	$(CARGO) run --release --bin heartbeatd -- --config $(CONFIG)

build:
	$(CARGO) build --release --bin heartbeatd

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
