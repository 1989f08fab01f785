# heartbeatd — the commands a user and CI need. `make help` lists them.

CARGO ?= cargo
CONFIG ?= configs/heartbeatd.toml

.PHONY: help run build keeper test lint fmt clean bench bench-tools test-tools

help:
	@echo "make run    build (release) and run heartbeatd on $(CONFIG) (127.0.0.1:8080)"
	@echo "make test   the whole suite: format check, clippy, unit and integration tests"
	@echo "make build  release build only (target/release/heartbeatd and target/release/heartbeatd-keep)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make bench  the performance scenarios (about 14 minutes), printed as one table"
	@echo "make clean  remove build output"

run: keeper
	$(CARGO) run --release --bin heartbeatd -- --config $(CONFIG)

build: keeper
	$(CARGO) build --release --bin heartbeatd

# The keeper heartbeatd runs beside each supervised agent, built small (the `keeper` profile:
# panic = "abort", opt-level = "s", LTO, stripped), linked statically (glibc) and not as a PIE:
# no shared library to load and relocate, and nothing of its own to relocate, in each of them
# (96 KiB private per keeper as a static PIE, 76 KiB so; docs/architecture.md "The keeper"
# says what it costs). heartbeatd itself stays a PIE. heartbeatd finds the keeper beside its
# own binary, so it is copied into target/release/ (install both together).
KEEPER_RUSTFLAGS = -C target-feature=+crt-static -C relocation-model=static
keeper:
	$(CARGO) rustc --profile keeper -p heartbeatd-keep --bin heartbeatd-keep -- $(KEEPER_RUSTFLAGS)
	mkdir -p target/release
	cp target/keeper/heartbeatd-keep target/release/heartbeatd-keep.new
	mv target/release/heartbeatd-keep.new target/release/heartbeatd-keep

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The supervision tests run the test agent (integration/harness/src/bin), a binary of its
# own: built with every other binary first.
test: lint test-tools
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The /metrics and fleet tests validate with promtool and scrape with a real Prometheus
# server (Debian's prometheus package); the alerting tests push to a real Alertmanager
# (prometheus-alertmanager). The TLS tests make certificates with openssl and talk HTTPS
# with curl. The status page is tested in a headless Chromium (Debian's chromium). Socket
# activation is tested with systemd's own launcher, systemd-socket-activate (Debian's systemd).
test-tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
	  && command -v prometheus-alertmanager >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 \
	  && command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 \
	  && command -v systemd-socket-activate >/dev/null 2>&1 || { \
	  echo "installing prometheus, prometheus-alertmanager, chromium, openssl, curl and systemd (Debian packages) for the tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus prometheus-alertmanager chromium openssl curl systemd >/dev/null; }

# wrk checks heartbeatd-load against an independent load generator; supervisord is the peer
# the supervision scenario measures against; chromium times the status page's first paint
# (Debian packages wrk, supervisor and chromium).
bench-tools:
	@command -v wrk >/dev/null 2>&1 && command -v supervisord >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
	  echo "installing wrk, supervisor and chromium (Debian packages) for the bench"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk supervisor chromium >/dev/null; }

# The scenarios (bench/scenarios/) start target/release/heartbeatd through the shared harness.
bench: bench-tools keeper
	$(CARGO) build --release --bin heartbeatd
	$(CARGO) bench -p heartbeatd-bench --bench scenarios

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
