#!/usr/bin/env bash
# Make sure JupyterHub can run its proxy: configurable-http-proxy (npm), for a class on one server
# (hub/README.md) and the hub test tier (tests/test_hub.py).
#
# Present:   on PATH, or installed before in the lab's cache: prints one line with its version.
# Missing:   with npm, installs it into the lab's cache (no root needed, nothing system-wide):
#            npm install --prefix "${LAB_CACHE:-~/.cache/pglab}/hub" configurable-http-proxy
#            hub/jupyterhub_config.py looks there after PATH.
# Otherwise: prints what to install.  LAB_NO_INSTALL=1 never installs (just reports).
#
# ALWAYS exits 0, unless LAB_REQUIRE_HUB=1: the hub tests then skip themselves with the reason.
set -u

say() { printf 'ensure-hub: %s\n' "$*"; }
missing() {
    if [ "${LAB_REQUIRE_HUB:-0}" = 1 ]; then say "$*"; exit 1; fi
    say "the hub tests will be skipped: $*"; exit 0
}

cache="${LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pglab}"
prefix="$cache/hub"
local_chp="$prefix/node_modules/.bin/configurable-http-proxy"

report() { say "configurable-http-proxy ready: $1 ($("$1" --version 2>/dev/null | head -n 1))"; exit 0; }

if p=$(command -v configurable-http-proxy 2>/dev/null); then report "$p"; fi
if [ -x "$local_chp" ]; then report "$local_chp"; fi

hint="install Node.js and npm (sudo apt-get install npm), then: npm install --prefix '$prefix' configurable-http-proxy"
[ "${LAB_NO_INSTALL:-0}" = 1 ] && missing "no configurable-http-proxy (LAB_NO_INSTALL=1: not installing); $hint"
command -v npm >/dev/null 2>&1 || missing "no configurable-http-proxy and no npm; $hint"

say "installing configurable-http-proxy into $prefix (npm) ..."
mkdir -p "$prefix"
if ! npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error configurable-http-proxy >"$prefix/npm-install.log" 2>&1; then
    tail -n 5 "$prefix/npm-install.log" | sed 's/^/    /'
    missing "npm install failed (log: $prefix/npm-install.log); $hint"
fi
[ -x "$local_chp" ] || missing "npm installed no $local_chp; $hint"
report "$local_chp"
