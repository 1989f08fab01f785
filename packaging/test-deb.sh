#!/bin/sh
# The .deb on this machine, as an operator would use it: dpkg -i, check what it installed and
# made (files and modes, the conffile, the heartbeatd user, /var/lib/heartbeatd, the unit
# enabled but not started without a running systemd, systemd-analyze verify on the installed
# unit, the installed binary serving its control socket as the heartbeatd user), then dpkg -r
# and dpkg -P, checking what each leaves. `make test-deb` runs it as root (make test runs that).
#
#   packaging/test-deb.sh PACKAGE.deb STAGED_ROOT
#
# STAGED_ROOT is the tree `make install DESTDIR=… PREFIX=/usr` staged for the package: the
# package must hold the same files (the keeper too where it was built and staged; man pages
# gzipped, no sysusers.d file, plus the copyright).
# It refuses to run where heartbeatd is already installed, by the package or by hand: it would
# replace and then delete it. The user it creates it deletes again at the end (dpkg -P leaves
# it, as Debian's packages do).
set -eu

deb=$1
staged=$2
failures=0
pass() { echo "ok: $*"; }
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...
    description=$1; shift
    if "$@"; then pass "$description"; else fail "$description"; fi
}

[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (dpkg -i)" >&2; exit 2; }
[ -f "$deb" ] || { echo "test-deb: no package at $deb (make deb)" >&2; exit 2; }
for path in /usr/bin/heartbeatd /etc/heartbeatd /var/lib/heartbeatd; do
    if [ -e "$path" ]; then
        echo "test-deb: $path exists on this machine; the test would replace it and purge it." >&2
        echo "test-deb: remove it (dpkg -P heartbeatd, or make uninstall PREFIX=/usr) or run the test elsewhere" >&2
        exit 2
    fi
done
if dpkg-query -W -f='${Status}' heartbeatd 2>/dev/null | grep -q "installed\|config-files"; then
    echo "test-deb: the heartbeatd package is on this machine; dpkg -P heartbeatd first" >&2
    exit 2
fi

user_existed=no
getent passwd heartbeatd >/dev/null && user_existed=yes
# What is named heartbeatd in the system's directories before: after the purge it must be the same.
traces() {
    find /etc /usr /var/lib /run -xdev -name '*heartbeatd*' 2>/dev/null | sort
}
before=$(mktemp)
after=$(mktemp)
traces > "$before"
cleanup() {
    dpkg -P heartbeatd >/dev/null 2>&1 || true
    if [ "$user_existed" = no ] && getent passwd heartbeatd >/dev/null; then
        userdel heartbeatd >/dev/null 2>&1 || true
        getent group heartbeatd >/dev/null && groupdel heartbeatd >/dev/null 2>&1 || true
    fi
    rm -f "$before" "$after"
}
trap cleanup EXIT

# The files the package should hold: the staged install less the sysusers.d file, man pages
# gzipped, and the copyright cargo-deb writes.
expected=$(
    cd "$staged" && find . -type f | sed 's|^\./|/|' | grep -v '^/usr/lib/sysusers\.d/' \
        | sed 's|\(/usr/share/man/man1/.*\.1\)$|\1.gz|'
    echo /usr/share/doc/heartbeatd/copyright
)
expected=$(echo "$expected" | sort)

echo "== dpkg -i $deb"
if [ -d /run/systemd/system ]; then systemd=running; else systemd="not running"; fi
echo "(systemd is $systemd on this machine)"
started=$(date +%s)
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
echo "(dpkg -i took $(($(date +%s) - started)) s)"

check "the package is installed" sh -c "dpkg-query -W -f='\${Status}' heartbeatd | grep -qx 'install ok installed'"
installed=$(dpkg -L heartbeatd | while read -r path; do [ -f "$path" ] && [ ! -L "$path" ] && echo "$path"; done | sort)
printf '%s\n' "$expected" > "$before.expected"
printf '%s\n' "$installed" > "$before.installed"
if diff -u --label make-install --label package "$before.expected" "$before.installed"; then
    pass "the package holds the files make install stages (under /usr)"
else
    fail "the package's files differ from make install's (above)"
fi
rm -f "$before.expected" "$before.installed"
for path in $installed; do
    mode=$(stat -c '%a %U:%G' "$path")
    case "$path" in
        /usr/bin/*) want="755 root:root" ;;
        *) want="644 root:root" ;;
    esac
    [ "$mode" = "$want" ] || fail "$path is $mode, not $want"
done
pass "modes and owners checked for $(echo "$installed" | wc -l) files"
check "the config is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' heartbeatd | grep -q '^ /etc/heartbeatd/heartbeatd.toml '"

passwd=$(getent passwd heartbeatd || true)
uid=$(echo "$passwd" | cut -d: -f3)
check "the heartbeatd user exists: $passwd" test -n "$passwd"
check "it is a system user (uid $uid < 1000)" test "${uid:-1000}" -lt 1000
check "its home is /var/lib/heartbeatd" test "$(echo "$passwd" | cut -d: -f6)" = /var/lib/heartbeatd
check "it has no login shell" sh -c "echo '$passwd' | cut -d: -f7 | grep -q 'nologin\$\|/bin/false\$'"
check "its group exists" sh -c "getent group heartbeatd >/dev/null"
check "/var/lib/heartbeatd is a directory, 0700, heartbeatd's" test "$(stat -c '%F %a %U:%G' /var/lib/heartbeatd)" = "directory 700 heartbeatd:heartbeatd"

check "heartbeatd --version from /usr/bin" sh -c "/usr/bin/heartbeatd --version | grep -qx 'heartbeatd [0-9.]*'"
check "the installed config passes check-config" /usr/bin/heartbeatd check-config --quiet /etc/heartbeatd/heartbeatd.toml
check "man finds heartbeatd(1) at its installed place" sh -c "man -w heartbeatd | grep -qx /usr/share/man/man1/heartbeatd.1.gz"
check "man renders heartbeatd-ctl(1) without a warning" sh -c "MANWIDTH=80 man --warnings heartbeatd-ctl 2>&1 >/dev/null | grep -c . | grep -qx 0"
check "the bash completion is where bash-completion looks" test -s /usr/share/bash-completion/completions/heartbeatd
check "the zsh completion is where Debian's zsh looks" test -s /usr/share/zsh/vendor-completions/_heartbeatd
check "the fish completion is where fish looks" test -s /usr/share/fish/vendor_completions.d/heartbeatd.fish

unit=/usr/lib/systemd/system/heartbeatd.service
socket=/usr/lib/systemd/system/heartbeatd.socket
check "the unit runs /usr/bin/heartbeatd" grep -qx 'ExecStart=/usr/bin/heartbeatd --config /etc/heartbeatd/heartbeatd.toml' "$unit"
for checked in "$unit" "$socket"; do
    verify=$(systemd-analyze verify "$checked" 2>&1) && [ -z "$verify" ] && pass "systemd-analyze verify $checked" \
        || fail "systemd-analyze verify $checked: $verify"
done
check "the unit is enabled (multi-user.target wants it)" test -L /etc/systemd/system/multi-user.target.wants/heartbeatd.service
check "the socket is installed but not enabled (it is optional)" sh -c "test -f $socket && ! test -e /etc/systemd/system/sockets.target.wants/heartbeatd.socket"
running_installed() {
    for exe in /proc/[0-9]*/exe; do
        [ "$(readlink "$exe" 2>/dev/null)" = /usr/bin/heartbeatd ] && return 0
    done
    return 1
}
if [ "$systemd" = "not running" ]; then
    if running_installed; then fail "an installed heartbeatd runs without systemd"; else pass "nothing was started without a running systemd"; fi
fi

# The installed binary as the unit would run it: the heartbeatd user (setpriv execs it, so the
# signal below reaches heartbeatd itself, not a wrapper), the installed config
# (no HTTP port: this machine's ports are shared), data_dir /var/lib/heartbeatd. root reaches
# it through the control socket, as the README says.
echo "== the installed heartbeatd as the heartbeatd user"
log=$(mktemp)
setpriv --reuid heartbeatd --regid heartbeatd --init-groups -- /usr/bin/heartbeatd --config /etc/heartbeatd/heartbeatd.toml --http-port 0 2>"$log" &
daemon=$!
tries=0
until [ -S /var/lib/heartbeatd/heartbeatd.sock ] || [ $tries -ge 300 ] || ! kill -0 $daemon 2>/dev/null; do
    sleep 0.1; tries=$((tries + 1))
done
status=$(/usr/bin/heartbeatd --config /etc/heartbeatd/heartbeatd.toml ctl status 2>&1 || true)
case "$status" in
    *filebeat-01*custom-01*|*custom-01*filebeat-01*) pass "ctl status over the control socket lists the config's agents" ;;
    *) fail "ctl status: $status; heartbeatd's log: $(cat "$log")" ;;
esac
kill -TERM $daemon 2>/dev/null || true
wait $daemon && pass "it stopped with exit code 0 on SIGTERM" || fail "it exited $? on SIGTERM: $(cat "$log")"
check "its state is in /var/lib/heartbeatd, heartbeatd's" sh -c "find /var/lib/heartbeatd -mindepth 1 | grep -q . && [ -z \"\$(find /var/lib/heartbeatd ! -user heartbeatd)\" ]"
rm -f "$log"

# An upgrade (the same package again): the operator's changes stay: an edited conffile, and the
# socket they enabled (as systemctl enable does, without a running systemd).
echo "== dpkg -i again, as an upgrade"
echo "# changed by the operator" >> /etc/heartbeatd/heartbeatd.toml
systemctl enable heartbeatd.socket >/dev/null 2>&1
check "the operator enabled the socket" test -L /etc/systemd/system/sockets.target.wants/heartbeatd.socket
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
check "the upgrade keeps the changed conffile" grep -qx "# changed by the operator" /etc/heartbeatd/heartbeatd.toml
check "the upgrade keeps the socket enabled" test -L /etc/systemd/system/sockets.target.wants/heartbeatd.socket
check "the upgrade keeps the service enabled" test -L /etc/systemd/system/multi-user.target.wants/heartbeatd.service
check "the upgrade keeps the user" test "$(getent passwd heartbeatd)" = "$passwd"

echo "== dpkg -r heartbeatd"
dpkg -r heartbeatd
check "the package is removed, its config kept" sh -c "dpkg-query -W -f='\${Status}' heartbeatd | grep -qx 'deinstall ok config-files'"
for path in $installed; do
    case "$path" in
        /etc/heartbeatd/heartbeatd.toml) check "remove keeps the conffile $path" test -f "$path" ;;
        *) [ ! -e "$path" ] || fail "remove left $path" ;;
    esac
done
pass "remove took every file but the conffile"
check "remove keeps data_dir" test -d /var/lib/heartbeatd
check "remove keeps the user" sh -c "getent passwd heartbeatd >/dev/null"

echo "== dpkg -P heartbeatd"
dpkg -P heartbeatd
check "the package is gone" sh -c "! dpkg-query -W -f='\${Status}' heartbeatd 2>/dev/null | grep -q installed"
check "purge removed /etc/heartbeatd" test ! -e /etc/heartbeatd
check "purge removed /var/lib/heartbeatd" test ! -e /var/lib/heartbeatd
check "purge keeps the user (Debian practice)" sh -c "getent passwd heartbeatd >/dev/null"
traces > "$after"
if diff -u --label before --label after-purge "$before" "$after"; then
    pass "nothing named heartbeatd is left in /etc, /usr, /var/lib, /run (the enable and mask links included)"
else
    fail "the purge left the files above"
fi

echo
if [ "$failures" = 0 ]; then
    echo "test-deb: every check passed"
else
    echo "test-deb: $failures checks failed"
    exit 1
fi
