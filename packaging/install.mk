# make install / make uninstall / make deb / make test-deb, included by the Makefile.
#
# make install lays out, under $(DESTDIR)$(PREFIX) (PREFIX=/usr/local by default):
#   bin/heartbeatd                                   the binary
#   bin/heartbeatd-keep                              the keeper, where the workspace builds one
#   lib/systemd/system/heartbeatd.service            every configs/*.service and *.socket, with
#                                                    /usr/local/bin/heartbeatd made $(BINDIR)/heartbeatd
#   lib/sysusers.d/heartbeatd.conf                   the heartbeatd system user
#   share/man/man1/heartbeatd.1, heartbeatd-*.1      written by the binary (heartbeatd man --out)
#   share/bash-completion/completions/heartbeatd     written by the binary (heartbeatd completions)
#   share/zsh/site-functions/_heartbeatd
#   share/fish/vendor_completions.d/heartbeatd.fish
#   share/doc/heartbeatd/                            README.md, docs/*.md, the licenses, examples/
# and $(DESTDIR)/etc/heartbeatd/heartbeatd.toml, the example config with data_dir set to the
# unit's /var/lib/heartbeatd, only if there is none (an existing one is never overwritten).
# Without DESTDIR it then runs systemd-sysusers to create the heartbeatd user.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/heartbeatd
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
# zsh's own default (site-functions); Debian's zsh also reads vendor-completions, where the .deb puts it.
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
# The unit names /etc/heartbeatd/heartbeatd.toml whatever PREFIX is.
SYSCONFDIR ?= /etc

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# The binary make install copies. Empty: the release build, built first (cargo does nothing when
# it is fresh). BIN=path: that file, without building: the install test's debug binary, or
# `sudo make install BIN=target/release/heartbeatd` where root has no cargo.
BIN ?=
INSTALL_BIN = $(or $(BIN),$(TARGET_DIR)/release/heartbeatd)
# The daemon's programs, installed side by side in BINDIR: heartbeatd, and every other one that
# exists beside INSTALL_BIN (the keeper, heartbeatd-keep, once the workspace builds it: heartbeatd
# starts it from its own directory). `make build` builds both (the keeper small and static).
DAEMON_BINS = heartbeatd heartbeatd-keep
UNITS = $(wildcard configs/*.service configs/*.socket)
DOCS = README.md $(wildcard docs/*.md)

# The example config as installed: data_dir is the unit's StateDirectory, so that `heartbeatd
# --config /etc/heartbeatd/heartbeatd.toml ctl status` finds the control socket the service
# made; the file's comments name its installed path.
EXAMPLE_CONFIG_SED = -e 's|^data_dir = .*|data_dir = "/var/lib/heartbeatd"|' \
  -e 's|configs/heartbeatd\.toml|$(SYSCONFDIR)/heartbeatd/heartbeatd.toml|g'
UNIT_SED = -e 's|/usr/local/bin/heartbeatd|$(BINDIR)/heartbeatd|g' \
  -e 's|/usr/local/share/doc/heartbeatd|$(DOCDIR)|g'

install: $(if $(BIN),,build)
	@test -x "$(INSTALL_BIN)" || { echo "make install: no binary at $(INSTALL_BIN) (make build, or BIN=path)" >&2; exit 1; }
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" \
	  "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(FISHCOMPDIR)" \
	  "$(DESTDIR)$(DOCDIR)/examples/prometheus" "$(DESTDIR)$(SYSCONFDIR)/heartbeatd"; \
	install -m 0755 "$(INSTALL_BIN)" "$(DESTDIR)$(BINDIR)/heartbeatd"; \
	for bin in $(filter-out heartbeatd,$(DAEMON_BINS)); do \
	  source="$$(dirname "$(INSTALL_BIN)")/$$bin"; \
	  if [ -f "$$source" ]; then install -m 0755 "$$source" "$(DESTDIR)$(BINDIR)/$$bin"; fi; \
	done; \
	for unit in $(UNITS); do \
	  sed $(UNIT_SED) "$$unit" > "$$tmp/unit"; \
	  install -m 0644 "$$tmp/unit" "$(DESTDIR)$(UNITDIR)/$$(basename "$$unit")"; \
	done; \
	install -m 0644 configs/heartbeatd.sysusers.conf "$(DESTDIR)$(SYSUSERSDIR)/heartbeatd.conf"; \
	"$(INSTALL_BIN)" man --out "$$tmp/man1"; \
	install -m 0644 "$$tmp"/man1/*.1 "$(DESTDIR)$(MANDIR)/man1/"; \
	"$(INSTALL_BIN)" completions bash > "$$tmp/bash"; \
	"$(INSTALL_BIN)" completions zsh > "$$tmp/zsh"; \
	"$(INSTALL_BIN)" completions fish > "$$tmp/fish"; \
	install -m 0644 "$$tmp/bash" "$(DESTDIR)$(BASHCOMPDIR)/heartbeatd"; \
	install -m 0644 "$$tmp/zsh" "$(DESTDIR)$(ZSHCOMPDIR)/_heartbeatd"; \
	install -m 0644 "$$tmp/fish" "$(DESTDIR)$(FISHCOMPDIR)/heartbeatd.fish"; \
	install -m 0644 LICENSE-MIT LICENSE-APACHE "$(DESTDIR)$(DOCDIR)/"; \
	install -m 0644 README.md "$(DESTDIR)$(DOCDIR)/"; \
	if [ -n "$(wildcard docs/*.md)" ]; then \
	  install -d -m 0755 "$(DESTDIR)$(DOCDIR)/docs"; \
	  install -m 0644 $(wildcard docs/*.md) "$(DESTDIR)$(DOCDIR)/docs/"; \
	fi; \
	install -m 0644 configs/supervise-example.toml "$(DESTDIR)$(DOCDIR)/examples/"; \
	install -m 0644 configs/prometheus/heartbeatd.rules.yml "$(DESTDIR)$(DOCDIR)/examples/prometheus/"; \
	sed $(EXAMPLE_CONFIG_SED) configs/heartbeatd.toml > "$$tmp/heartbeatd.toml"; \
	install -m 0644 "$$tmp/heartbeatd.toml" "$(DESTDIR)$(DOCDIR)/examples/heartbeatd.toml"; \
	if [ -e "$(DESTDIR)$(SYSCONFDIR)/heartbeatd/heartbeatd.toml" ]; then \
	  echo "kept the existing $(DESTDIR)$(SYSCONFDIR)/heartbeatd/heartbeatd.toml (the new example is $(DESTDIR)$(DOCDIR)/examples/heartbeatd.toml)"; \
	else \
	  install -m 0644 "$$tmp/heartbeatd.toml" "$(DESTDIR)$(SYSCONFDIR)/heartbeatd/heartbeatd.toml"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
	  if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers "$(SYSUSERSDIR)/heartbeatd.conf"; \
	  else echo "no systemd-sysusers: create the heartbeatd user yourself (useradd --system --home-dir /var/lib/heartbeatd --shell /usr/sbin/nologin heartbeatd)"; fi; \
	  echo "installed; start it with: systemctl daemon-reload && systemctl enable --now heartbeatd"; \
	fi

# Removes what make install installed, with the same PREFIX and DESTDIR. The config stays if it
# differs from the example (it is the operator's), and so do data_dir and the heartbeatd user.
uninstall:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	rm -f $(foreach bin,$(DAEMON_BINS),"$(DESTDIR)$(BINDIR)/$(bin)") "$(DESTDIR)$(SYSUSERSDIR)/heartbeatd.conf" \
	  "$(DESTDIR)$(MANDIR)/man1/heartbeatd.1" "$(DESTDIR)$(MANDIR)"/man1/heartbeatd-*.1 \
	  "$(DESTDIR)$(BASHCOMPDIR)/heartbeatd" "$(DESTDIR)$(ZSHCOMPDIR)/_heartbeatd" "$(DESTDIR)$(FISHCOMPDIR)/heartbeatd.fish"; \
	for unit in $(UNITS); do rm -f "$(DESTDIR)$(UNITDIR)/$$(basename "$$unit")"; done; \
	rm -rf "$(DESTDIR)$(DOCDIR)"; \
	config="$(DESTDIR)$(SYSCONFDIR)/heartbeatd/heartbeatd.toml"; \
	sed $(EXAMPLE_CONFIG_SED) configs/heartbeatd.toml > "$$tmp/heartbeatd.toml"; \
	if [ -e "$$config" ] && cmp -s "$$config" "$$tmp/heartbeatd.toml"; then rm -f "$$config"; fi; \
	rmdir "$(DESTDIR)$(SYSCONFDIR)/heartbeatd" 2>/dev/null || \
	  echo "kept $(DESTDIR)$(SYSCONFDIR)/heartbeatd/ (a changed config or an env file is in it)"; \
	echo "kept /var/lib/heartbeatd and the heartbeatd user, if any: remove them by hand"

# make deb: the release binary, the tree make install stages for /usr (target/deb-root; zsh's
# completion where Debian's zsh reads vendor completions), then cargo deb on it (Cargo.toml,
# [package.metadata.deb]): target/debian/heartbeatd_<version>-1_<arch>.deb. The sysusers.d
# file is not packaged: the postinst makes the user with adduser, which needs no systemd.
#
# cargo-deb is pinned: the one on PATH if it is this version, else this version built once
# into $(CARGO_DEB_ROOT) (under target/, so nothing outside the tree is touched and `make clean`
# removes it; about 2 CPU-minutes, measured, with its own Cargo.lock: --locked).
CARGO_DEB_VERSION = 3.8.0
CARGO_DEB_ROOT = $(TARGET_DIR)/tools/cargo-deb-$(CARGO_DEB_VERSION)
DEB_ROOT = target/deb-root
deb: build
	@if [ "$$(cargo-deb --version 2>/dev/null)" != "cargo-deb $(CARGO_DEB_VERSION)" ] \
	  && [ ! -x "$(CARGO_DEB_ROOT)/bin/cargo-deb" ]; then \
	  echo "building cargo-deb $(CARGO_DEB_VERSION) into $(CARGO_DEB_ROOT)"; \
	  $(CARGO) install cargo-deb --version "$(CARGO_DEB_VERSION)" --locked --root "$(CARGO_DEB_ROOT)"; \
	fi
	rm -rf "$(DEB_ROOT)" target/debian
	$(MAKE) -s install DESTDIR="$(CURDIR)/$(DEB_ROOT)" PREFIX=/usr BIN="$(TARGET_DIR)/release/heartbeatd" \
	  ZSHCOMPDIR=/usr/share/zsh/vendor-completions
	PATH="$(abspath $(CARGO_DEB_ROOT))/bin:$$PATH" $(CARGO) deb --no-build --output target/debian/

# make test runs the package test where it can: dpkg (Debian and its kind) and root, or sudo
# without a password (CI runs as root). Elsewhere it says loudly that it skipped it.
test-deb-if-possible:
	@if ! command -v dpkg >/dev/null 2>&1; then \
	  echo "*** make test: the package test (make test-deb) was SKIPPED: no dpkg on this machine"; \
	elif [ "$$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then \
	  echo "*** make test: the package test (make test-deb) was SKIPPED: it needs root (dpkg -i); run sudo make test-deb"; \
	else $(MAKE) test-deb; fi

# make test-deb: installs the .deb on this machine with dpkg, checks it, removes and purges it
# (packaging/test-deb.sh). Root, or sudo. One at a time (flock): dpkg has one database.
test-deb: deb
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO flock /tmp/heartbeatd-test-deb.lock packaging/test-deb.sh target/debian/heartbeatd_*.deb "$(DEB_ROOT)"
