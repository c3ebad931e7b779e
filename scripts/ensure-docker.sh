#!/usr/bin/env bash
# Make sure the compose test tier can run: Debian's docker.io (dockerd, containerd, runc),
# docker-compose (v1.29) and debootstrap (the PostgreSQL base image is built without a registry).
#
# All present:  prints one line with their versions.
# Missing:      as root on Debian/Ubuntu with apt-get, installs them with
#               `apt-get install --no-install-recommends` (about 12 s, 65 MB download).
#               Never starts a service: a policy-rc.d that denies starts is in place during
#               the install, and on a systemd host the units the install enabled (docker,
#               containerd) are disabled again, so no system dockerd changes the firewall at
#               the next boot.  The tests start a private dockerd of their own (tests/engine/).
# Otherwise:    prints one line saying the compose tier will be skipped, and why.
#               LAB_NO_INSTALL=1 never installs (just reports).
#
# ALWAYS exits 0: the compose tests then skip themselves with the reason.
set -u

say() { printf 'ensure-docker: %s\n' "$*"; }
skip() { say "the compose test tier will be skipped: $*"; exit 0; }

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# binary -> Debian package
need() {
    local missing=""
    command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
    command -v docker-proxy >/dev/null 2>&1 || missing="$missing docker.io"
    [ -x /usr/bin/docker ] || command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
    command -v containerd >/dev/null 2>&1 || missing="$missing containerd"
    command -v runc >/dev/null 2>&1 || missing="$missing runc"
    command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
    command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing="$missing debian-archive-keyring"
    # unique, in order
    printf '%s\n' $missing | awk 'NF && !seen[$0]++' | tr '\n' ' ' | sed 's/ $//'
}

report_present() {
    local dv cv bv
    dv=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\).*/\1/p')
    cv=$(docker-compose version --short 2>/dev/null || true)
    bv=$(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '?')
    say "compose tier ready: dockerd ${dv:-?}, docker-compose ${cv:-?}, debootstrap $bv (a private dockerd is started by the tests)"
}

[ "$(uname -s)" = Linux ] || skip "a private dockerd needs Linux (this is $(uname -s))"
[ "$(id -u)" = 0 ] || skip "a private dockerd needs root (run the tests as root, e.g. in CI)"

missing=$(need)
if [ -z "$missing" ]; then
    report_present
    exit 0
fi

[ "${LAB_NO_INSTALL:-0}" = 1 ] && skip "missing packages: $missing (LAB_NO_INSTALL=1: not installing; apt-get install --no-install-recommends $missing)"
command -v apt-get >/dev/null 2>&1 || skip "missing $missing and no apt-get here (the tier needs Debian or Ubuntu)"
. /etc/os-release 2>/dev/null || true
case " ${ID:-} ${ID_LIKE:-} " in
    *" debian "*|*" ubuntu "*) ;;
    *) skip "missing $missing; the tier needs Debian or Ubuntu (this is ${PRETTY_NAME:-unknown})" ;;
esac

export DEBIAN_FRONTEND=noninteractive
# Units that were enabled before the install stay as they were; the ones the install enables get disabled.
units="docker.service docker.socket containerd.service"
was_enabled=""
if command -v systemctl >/dev/null 2>&1; then
    for u in $units; do
        systemctl is-enabled --quiet "$u" 2>/dev/null && was_enabled="$was_enabled $u"
    done
fi

# No service starts during the install (invoke-rc.d and deb-systemd-invoke honour policy-rc.d).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, by the lab'"'"'s scripts/ensure-docker.sh: no service starts\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp "${TMPDIR:-/tmp}/ensure-docker.XXXXXX")
install() {
    apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1
}
say "installing: $missing (apt-get install --no-install-recommends; log: $log)"
ok=0
# Refresh the package lists first only if apt knows no candidate for one of them.
for p in $missing; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq >>"$log" 2>&1 || true
        break
    fi
done
# shellcheck disable=SC2086
if install $missing; then
    ok=1
else
    apt-get update -qq >>"$log" 2>&1 && install $missing && ok=1   # stale package lists
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for u in $units; do
        case " $was_enabled " in *" $u "*) continue ;; esac
        if systemctl is-enabled --quiet "$u" 2>/dev/null; then
            systemctl disable --quiet "$u" >>"$log" 2>&1 && say "disabled $u (the tests run their own dockerd; enable it yourself if you want a system Docker)"
        fi
    done
fi

if [ "$ok" != 1 ]; then
    skip "apt-get install $missing failed: $(tail -n 3 "$log" | tr '\n' ' ')"
fi
still=$(need)
[ -z "$still" ] || skip "still missing after the install: $still (see $log)"
rm -f "$log"
report_present
exit 0
