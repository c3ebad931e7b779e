#!/usr/bin/env bash
# Make sure etcd and HAProxy are available for chapter 08 (automatic failover by consensus).
# Patroni itself is a Python package: `pip install -e .` installs it with the lab.
#
# Looks in the same places, in the same order, as lab/system/hatools.py (locate()):
#   $LAB_ETCD / $LAB_HAPROXY (when set, only there), the lab's Python's bin/ ($VIRTUAL_ENV,
#   this repository's .venv, $CONDA_PREFIX), PATH, then /usr/sbin, /usr/local/sbin,
#   /usr/local/bin, /opt/homebrew/bin, /opt/homebrew/sbin (Debian's HAProxy, Homebrew).
#
# Found:   prints "etcd <version>: <path>" and "HAProxy <version>: <path>" and exits 0.
# Missing: as root on Debian/Ubuntu, installs what is missing (`etcd-server`, `haproxy`) with
#          apt-get, without leaving their system services running or enabled (the lab runs its
#          own on random 127.0.0.1 ports), and looks again; otherwise exits 1 with one line
#          saying what to install. LAB_NO_INSTALL=1 never installs (just reports).
#
# Plain bash 3.2 (macOS) compatible.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

# Same wording as lab.system.hatools.PROGRAMS (and hatools.missing()'s line for each).
ETCD_HINT='etcd (the consensus store) not found: install it with `sudo apt-get install etcd-server` (Debian/Ubuntu), `conda install -c conda-forge etcd` or `brew install etcd`, or set LAB_ETCD'
HAPROXY_HINT='haproxy (the router) not found: install it with `sudo apt-get install haproxy` (Debian/Ubuntu), `sudo dnf install haproxy` (Fedora) or `brew install haproxy` (conda-forge has none), or set LAB_HAPROXY'

say() { printf '%s\n' "ensure-ha: $*" >&2; }

is_exe() { [ -f "$1" ] && [ -x "$1" ]; }

# locate PROGRAM VAR: the path hatools.locate() would find, or nothing (status 1).
locate() {
    local program=$1 var=$2 given d p
    given=$(eval "printf '%s' \"\${$var:-}\"")
    if [ -n "$given" ]; then
        # As hatools: a variable that is set is the only place looked at.
        [ -x "$given" ] && { printf '%s\n' "$given"; return 0; }
        return 1
    fi
    for d in "${VIRTUAL_ENV:-}" "$REPO/.venv" "${CONDA_PREFIX:-}"; do
        [ -n "$d" ] && is_exe "$d/bin/$program" && { printf '%s\n' "$d/bin/$program"; return 0; }
    done
    if p=$(type -P "$program" 2>/dev/null) && [ -n "$p" ]; then
        printf '%s\n' "$p"
        return 0
    fi
    for d in /usr/sbin /usr/local/sbin /usr/local/bin /opt/homebrew/bin /opt/homebrew/sbin; do
        is_exe "$d/$program" && { printf '%s\n' "$d/$program"; return 0; }
    done
    return 1
}

# First number in `etcd --version` / `haproxy -v`, like hatools.version().
tool_version() {
    local flag=--version v
    [ "$(basename "$1")" = haproxy ] && flag=-v
    v=$("$1" "$flag" 2>&1 | sed -n 's/^[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\).*/\1/p' | head -n 1)
    printf '%s\n' "${v:-?}"
}

ETCD="" HAPROXY="" LACKING="" PACKAGES=""

find_tools() {
    ETCD=$(locate etcd LAB_ETCD) || ETCD=""
    HAPROXY=$(locate haproxy LAB_HAPROXY) || HAPROXY=""
    LACKING="" PACKAGES=""
    if [ -z "$ETCD" ]; then LACKING=$ETCD_HINT; PACKAGES="etcd-server"; fi
    if [ -z "$HAPROXY" ]; then
        LACKING="${LACKING:+$LACKING; }$HAPROXY_HINT"
        PACKAGES="${PACKAGES:+$PACKAGES }haproxy"
    fi
    [ -z "$LACKING" ]
}

report_found() {
    printf 'etcd %s: %s\n' "$(tool_version "$ETCD")" "$ETCD"
    printf 'HAProxy %s: %s\n' "$(tool_version "$HAPROXY")" "$HAPROXY"
}

fail() {
    say "chapter 08 needs etcd and HAProxy: $LACKING"
    exit 1
}

# A LAB_ETCD/LAB_HAPROXY that names no program hides any installed one from the lab:
# installing would not help, so say so instead.
bad_variable() {
    local var value
    for var in LAB_ETCD LAB_HAPROXY; do
        value=$(eval "printf '%s' \"\${$var:-}\"")
        if [ -n "$value" ] && [ ! -x "$value" ]; then
            say "$var=$value is not an executable program: point it at one, or unset it"
            return 0
        fi
    done
    return 1
}

service_of() {
    case $1 in etcd-server) echo etcd ;; *) echo "$1" ;; esac
}

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0

# Debian's way to keep maintainer scripts from starting services: policy-rc.d exiting 101.
# An existing policy-rc.d is the administrator's and is left alone (containers ship one).
forbid_service_starts() {
    [ -e "$POLICY" ] && return 0
    printf '#!/bin/sh\n# written by scripts/ensure-ha.sh during apt-get install; removed after it\nexit 101\n' >"$POLICY" || return 0
    chmod 755 "$POLICY"
    OWN_POLICY=1
    trap 'allow_service_starts' EXIT
}

allow_service_starts() {
    if [ "$OWN_POLICY" = 1 ]; then
        rm -f "$POLICY"
        OWN_POLICY=0
    fi
}

# The lab runs etcd and HAProxy itself on random 127.0.0.1 ports: the system services the
# packages just installed stay stopped and disabled. Stopping goes through the service manager
# (systemd's unit, or the init script's pidfile), never by program name: the lab's own etcd
# and HAProxy processes are left alone.
quiet_services() {
    local pkg svc
    for pkg in $1; do
        svc=$(service_of "$pkg")
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            if systemctl is-active --quiet "$svc" 2>/dev/null || systemctl is-enabled --quiet "$svc" 2>/dev/null; then
                say "stopping and disabling the $svc system service (the lab runs its own)"
                systemctl disable --now --quiet "$svc" 2>/dev/null || say "could not disable $svc: systemctl disable --now $svc"
            fi
        elif [ -x "/etc/init.d/$svc" ]; then
            if [ -s "/run/$svc.pid" ] || [ -s "/var/run/$svc.pid" ]; then
                say "stopping the $svc system service (the lab runs its own)"
                "/etc/init.d/$svc" stop >/dev/null 2>&1 || say "could not stop $svc: /etc/init.d/$svc stop"
            fi
            command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1
        fi
    done
    return 0
}

apt_install() {
    # Refresh the package lists only when apt knows no candidate, or the install
    # failed on stale lists; at most once.
    local updated=0 pkg packages=$1 rc
    export DEBIAN_FRONTEND=noninteractive
    for pkg in $packages; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "apt-get update"
            apt-get update -qq || return 1
            updated=1
            break
        fi
    done
    forbid_service_starts
    say "installing for chapter 08: apt-get install -y -qq $packages"
    # shellcheck disable=SC2086
    apt-get install -y -qq $packages
    rc=$?
    if [ "$rc" != 0 ] && [ "$updated" = 0 ]; then
        say "apt-get install failed; refreshing the package lists and retrying"
        apt-get update -qq && apt-get install -y -qq $packages
        rc=$?
    fi
    allow_service_starts
    quiet_services "$packages"
    return "$rc"
}

if find_tools; then
    report_found
    exit 0
fi

if bad_variable; then
    fail
fi

if [ "${LAB_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if apt_install "$PACKAGES" && find_tools; then
        report_found
        exit 0
    fi
    find_tools
    fail
fi

fail
