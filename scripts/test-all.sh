#!/usr/bin/env bash
# `make test`'s two halves side by side: pytest's tiers (tests/) and every notebook twice under
# nbval (scripts/test-notebooks.sh).  They share nothing but the machine: the notebooks run in
# their own lab home (NBVAL_LAB_HOME) with their own port claims, and pytest's end-of-session check
# looks only for what its own session started.  One after the other they took ~45 + ~16 minutes on
# 2 cores; side by side the notebooks finish inside pytest's run.  LAB_TEST_SERIAL=1 runs them one
# after the other (to time one half alone, or on a machine with one core).
#
# The notebooks' output goes to a log printed when both are done; the exit status is pytest's, or
# else the notebooks'.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
export NBVAL_LAB_HOME=${NBVAL_LAB_HOME:-$ROOT/.lab/nbval}
mkdir -p "$ROOT/.lab"
log="$ROOT/.lab/test-notebooks.log"

run_pytest() {
    echo "== $PY -m pytest --durations=30 tests"
    "$PY" -m pytest --durations=30 tests
}

if [ "${LAB_TEST_SERIAL:-0}" = 1 ]; then
    run_pytest; rc=$?
    bash scripts/test-notebooks.sh; nbrc=$?
    [ "$rc" -ne 0 ] && exit "$rc"
    exit "$nbrc"
fi

echo "== the notebooks run beside pytest: scripts/test-notebooks.sh > $log"
bash scripts/test-notebooks.sh > "$log" 2>&1 &
nb=$!
# Interrupted: the notebooks' script stops its cluster on TERM (its trap), then we go.
trap 'kill -TERM "$nb" 2>/dev/null; wait "$nb"; exit 130' INT TERM

run_pytest; rc=$?
echo "== pytest done (exit $rc); waiting for the notebooks"
wait "$nb"; nbrc=$?
trap - INT TERM
echo "== the notebooks' runs (scripts/test-notebooks.sh, exit $nbrc):"
cat "$log"
[ "$rc" -ne 0 ] && exit "$rc"
exit "$nbrc"
