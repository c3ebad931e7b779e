#!/usr/bin/env bash
# Make sure the crypto app's end-to-end test can load the dashboard in a headless browser:
# Debian's `chromium` (tests/test_app_browser.py runs it with --headless --no-sandbox ...).
#
# Present:   prints one line with its version.
# Missing:   as root on Debian/Ubuntu with apt-get, installs it with
#            `apt-get install --no-install-recommends chromium` (about 100 MB download).
# Otherwise: prints one line saying the browser test will be skipped, and what to install.
#            LAB_NO_INSTALL=1 never installs (just reports).
#
# ALWAYS exits 0: the browser test then skips itself with the reason.
set -u

say() { printf 'ensure-chromium: %s\n' "$*"; }
skip() { say "the headless browser test will be skipped: $*"; exit 0; }

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

find_browser() {
    local b
    for b in "${LAB_CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome; do
        [ -n "$b" ] && command -v "$b" >/dev/null 2>&1 && { command -v "$b"; return 0; }
    done
    return 1
}

report_present() {
    local v
    v=$("$1" --version 2>/dev/null | head -n 1)
    say "headless browser ready: ${v:-$1}"
}

if b=$(find_browser); then
    report_present "$b"
    exit 0
fi

hint="install Debian's chromium (sudo apt-get install --no-install-recommends chromium) or set LAB_CHROMIUM to a Chromium/Chrome binary"
[ "${LAB_NO_INSTALL:-0}" = 1 ] && skip "no chromium (LAB_NO_INSTALL=1: not installing); $hint"
[ "$(id -u)" = 0 ] || skip "no chromium and not root; $hint"
command -v apt-get >/dev/null 2>&1 || skip "no chromium and no apt-get here; $hint"
. /etc/os-release 2>/dev/null || true
case " ${ID:-} ${ID_LIKE:-} " in
    *" debian "*|*" ubuntu "*) ;;
    *) skip "no chromium; set-up installs it only on Debian/Ubuntu (this is ${PRETTY_NAME:-unknown}); $hint" ;;
esac

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp "${TMPDIR:-/tmp}/ensure-chromium.XXXXXX")
install() { apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1; }
say "installing chromium (apt-get install --no-install-recommends; log: $log)"
# Refresh the package lists first only if apt knows no candidate.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq >>"$log" 2>&1 || true
fi
if ! install; then
    apt-get update -qq >>"$log" 2>&1 && install || skip "apt-get install chromium failed: $(tail -n 3 "$log" | tr '\n' ' ')"
fi
b=$(find_browser) || skip "chromium still missing after the install (see $log)"
rm -f "$log"
report_present "$b"
exit 0
