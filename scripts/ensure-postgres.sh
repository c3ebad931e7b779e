#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (>= 13) are available to the lab.
#
# Looks in the same places, in the same order, as lab/binaries.py:
#   $PG_BIN, `$PG_CONFIG --bindir`, `pg_config --bindir`, `postgres`/`initdb` on
#   PATH, the newest /usr/lib/postgresql/<N>/bin (Debian/Ubuntu), $CONDA_PREFIX/bin,
#   Homebrew's keg-only postgresql@N, Postgres.app.
# A directory counts only if it holds every server tool the lab runs.
#
# Found:   prints "PostgreSQL <version> server binaries: <dir>" and exits 0.
# Missing: as root on Debian/Ubuntu, installs the `postgresql` package with apt-get
#          and looks again; otherwise exits 1 with what to install.
#          LAB_NO_INSTALL=1 never installs (just reports).
#
# Plain bash 3.2 (macOS) compatible.
set -u

MIN_MAJOR=13
REQUIRED="postgres initdb pg_ctl pg_basebackup psql pg_isready"
# Same wording as lab.system.binaries.INSTALL_HINT.
INSTALL_HINT='install the PostgreSQL server (>= 13): `sudo apt-get install postgresql` (Debian/Ubuntu), `brew install postgresql@16` (macOS), or `conda install -c conda-forge postgresql`; or point PG_BIN at the directory holding `postgres` and `initdb`'

say() { printf '%s\n' "ensure-postgres: $*" >&2; }

# Resolve symlinks like Python's Path.resolve() (readlink -f is missing on old macOS).
resolve() {
    readlink -f "$1" 2>/dev/null && return
    realpath "$1" 2>/dev/null && return
    python3 -c 'import os, sys; print(os.path.realpath(sys.argv[1]))' "$1" 2>/dev/null && return
    printf '%s\n' "$1"
}

has_server() {
    local dir=$1 tool
    for tool in $REQUIRED; do
        [ -f "$dir/$tool" ] && [ -x "$dir/$tool" ] || return 1
    done
}

missing_tools() {
    local dir=$1 tool out=""
    for tool in $REQUIRED; do
        [ -f "$dir/$tool" ] && [ -x "$dir/$tool" ] || out="$out $tool"
    done
    printf '%s\n' "${out# }"
}

pg_config_bindir() {
    "$1" --bindir 2>/dev/null | head -n 1
}

# Every place looked at, in order, one directory per line.
candidates() {
    local d p tool
    [ -n "${PG_BIN:-}" ] && printf '%s\n' "$PG_BIN"
    if [ -n "${PG_CONFIG:-}" ]; then
        d=$(pg_config_bindir "$PG_CONFIG")
        [ -n "$d" ] && printf '%s\n' "$d"
    fi
    if p=$(command -v pg_config 2>/dev/null); then
        d=$(pg_config_bindir "$p")
        [ -n "$d" ] && printf '%s\n' "$d"
    fi
    for tool in postgres initdb; do
        if p=$(command -v "$tool" 2>/dev/null); then
            case $p in /*) dirname "$(resolve "$p")" ;; esac
        fi
    done
    if [ -d /usr/lib/postgresql ]; then
        # Numeric names only (15, 9.6), newest first.
        ls -1 /usr/lib/postgresql 2>/dev/null \
            | grep -E '^[0-9]+(\.[0-9]+)?$' \
            | sort -t. -k1,1nr -k2,2nr \
            | while read -r v; do printf '%s\n' "/usr/lib/postgresql/$v/bin"; done
    fi
    [ -n "${CONDA_PREFIX:-}" ] && printf '%s\n' "$CONDA_PREFIX/bin"
    # Homebrew's keg-only postgresql@N (newest first), then Postgres.app (macOS)
    for prefix in /opt/homebrew/opt /usr/local/opt; do
        [ -d "$prefix" ] || continue
        ls -1 "$prefix" 2>/dev/null | grep -E '^postgresql@[0-9]+$' | sort -t@ -k2,2nr \
            | while read -r k; do printf '%s\n' "$prefix/$k/bin"; done
    done
    printf '%s\n' /Applications/Postgres.app/Contents/Versions/latest/bin
    return 0
}

# First number (with optional minor) in `postgres --version`, like lab.system.binaries.server_version.
server_version() {
    "$1/postgres" --version 2>/dev/null | head -n 1 \
        | sed -n 's/^[^0-9]*\([0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\).*/\1/p'
}

FOUND_DIR=""
FOUND_VERSION=""
TOO_OLD=""

find_server() {
    local dir version major list
    FOUND_DIR="" FOUND_VERSION="" TOO_OLD=""
    if [ -n "${PG_BIN:-}" ] && ! has_server "$PG_BIN"; then
        say "PG_BIN=$PG_BIN lacks: $(missing_tools "$PG_BIN") (looking elsewhere)"
    fi
    list=$(candidates)
    while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        has_server "$dir" || continue
        version=$(server_version "$dir")
        [ -n "$version" ] || continue
        major=${version%%.*}
        if [ "$major" -lt "$MIN_MAJOR" ]; then
            [ -n "$TOO_OLD" ] || TOO_OLD="PostgreSQL $version at $dir"
            continue
        fi
        FOUND_DIR=$dir
        FOUND_VERSION=$version
        return 0
    done <<EOF
$list
EOF
    return 1
}

report_found() {
    printf 'PostgreSQL %s server binaries: %s\n' "$FOUND_VERSION" "$FOUND_DIR"
}

# Homebrew's postgresql@N is keg-only: installed, but not on PATH.
brew_hint() {
    local d
    [ "$(uname -s 2>/dev/null)" = Darwin ] || return 0
    for d in /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin; do
        if has_server "$d"; then
            say "Homebrew's PostgreSQL is installed but not on PATH: export PG_BIN=$d (or \`brew link --force ${d%/bin}\`)"
            return 0
        fi
    done
}

apt_install() {
    # Refresh the package lists only when apt knows no candidate, or the install
    # failed on stale lists; at most once.
    local updated=0
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache policy postgresql 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update"
        apt-get update -qq || return 1
        updated=1
    fi
    say "installing PostgreSQL: apt-get install -y -qq postgresql"
    if apt-get install -y -qq postgresql; then
        return 0
    fi
    [ "$updated" = 1 ] && return 1
    say "apt-get install failed; refreshing the package lists and retrying"
    apt-get update -qq || return 1
    apt-get install -y -qq postgresql
}

fail() {
    if [ -n "$TOO_OLD" ]; then
        say "$TOO_OLD is too old (the lab needs >= $MIN_MAJOR): $INSTALL_HINT"
    else
        say "no PostgreSQL server binaries found: $INSTALL_HINT"
    fi
    exit 1
}

if find_server; then
    report_found
    exit 0
fi

if [ "${LAB_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if apt_install && find_server; then
        report_found
        exit 0
    fi
    fail
fi

brew_hint
fail
