# heartbeatd — the commands a user and CI need. `make help` lists them.

CARGO ?= cargo
CONFIG ?= configs/heartbeatd.toml

.PHONY: help run build keeper test lint fmt clean bench bench-tools test-tools install uninstall deb test-deb test-deb-if-possible

help:
	@echo "make run        build (release) and run heartbeatd on $(CONFIG) (127.0.0.1:8080)"
	@echo "make test       the whole suite: format check, clippy, unit and integration tests, the .deb"
	@echo "make build      release build only (target/release/heartbeatd and its keeper, heartbeatd-keep)"
	@echo "make install    install the binary, unit, man pages, completions and /etc/heartbeatd/heartbeatd.toml"
	@echo "                (PREFIX=$(PREFIX), DESTDIR=; BIN=path installs that binary without building)"
	@echo "make uninstall  remove what make install installed (a changed config and data_dir stay)"
	@echo "make deb        the Debian package, target/debian/heartbeatd_*.deb (cargo deb)"
	@echo "make test-deb   build the .deb, install it here with dpkg -i, check it, purge it (root; make test runs it)"
	@echo "make lint       cargo fmt --check and clippy with warnings as errors"
	@echo "make bench      the performance scenarios (about 14 minutes), printed as one table"
	@echo "make clean      remove build output"

run: keeper
	$(CARGO) run --release --bin heartbeatd -- --config $(CONFIG)

# heartbeatd, then its keeper built small (the keeper target last: a plain cargo build of
# heartbeatd-keep would put the larger, dynamically linked one in its place).
build:
	$(CARGO) build --release --bin heartbeatd
	$(MAKE) keeper

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
# own: built with every other binary first. Then the .deb is built (a release build) and
# installed, checked and purged on this machine, where that can be done (test-deb-if-possible,
# packaging/install.mk).
test: lint test-tools
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	$(MAKE) test-deb-if-possible

# The /metrics and fleet tests validate with promtool and scrape with a real Prometheus
# server (Debian's prometheus package); the alerting tests push to a real Alertmanager
# (prometheus-alertmanager). The TLS tests make certificates with openssl and talk HTTPS
# with curl. The status page is tested in a headless Chromium (Debian's chromium). Socket
# activation is tested with systemd's own launcher, systemd-socket-activate (Debian's systemd).
# The man pages are rendered with groff (groff-base); the unit is checked with systemd-analyze
# and the install's user with systemd-sysusers (systemd; no running systemd needed); the .deb's
# maintainer scripts need adduser, and its test looks the pages up with man (man-db).
test-tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
	  && command -v prometheus-alertmanager >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 \
	  && command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 \
	  && command -v groff >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 \
	  && command -v systemd-sysusers >/dev/null 2>&1 && command -v systemd-socket-activate >/dev/null 2>&1 \
	  && command -v adduser >/dev/null 2>&1 && command -v man >/dev/null 2>&1 || { \
	  echo "installing prometheus, prometheus-alertmanager, chromium, openssl, curl, groff-base, systemd, adduser and man-db (Debian packages) for the tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus prometheus-alertmanager chromium openssl curl groff-base systemd adduser man-db >/dev/null; }

# wrk checks heartbeatd-load against an independent load generator; supervisord, s6 and runit
# are the peers the supervision scenario measures against (run as children of the bench, on
# service trees in temp dirs, never as the system's init); chromium times the status page's
# first paint (Debian packages wrk, supervisor, s6, runit and chromium).
bench-tools:
	@command -v wrk >/dev/null 2>&1 && command -v supervisord >/dev/null 2>&1 \
	  && command -v s6-svscan >/dev/null 2>&1 && command -v runsvdir >/dev/null 2>&1 \
	  && command -v chromium >/dev/null 2>&1 || { \
	  echo "installing wrk, supervisor, s6, runit and chromium (Debian packages) for the bench"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk supervisor s6 runit chromium >/dev/null; }

# The scenarios (bench/scenarios/) start target/release/heartbeatd through the shared harness.
bench: bench-tools keeper
	$(CARGO) build --release --bin heartbeatd
	$(CARGO) bench -p heartbeatd-bench --bench scenarios

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# install, uninstall, deb, test-deb
include packaging/install.mk
