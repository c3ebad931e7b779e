#!/usr/bin/env bash
# Run every chapter under nbval twice in a row: the English chapters (notebooks/NN_*.ipynb), then
# the Spanish ones (notebooks/es/), whose code cells are the English ones cell for cell
# (tests/test_i18n.py): the second run re-executes the same code on the state the first run left,
# in Spanish this time (the lab speaks the language of the notebook's folder).  The compose tier
# runs the English chapters twice (tests/test_notebooks_compose.py).  The notebooks
# get a lab home of their own (NBVAL_LAB_HOME, default .lab/nbval; the caller's
# LAB_HOME is ignored so a student's cluster is never touched), and its cluster
# is stopped and wiped afterwards, also when a run fails or is interrupted.
# Exits non-zero if either run fails (pytest's 5, "no tests collected", included)
# or the cluster could not be stopped.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PY=${PY:-$ROOT/.venv/bin/python}
export LAB_HOME=${NBVAL_LAB_HOME:-$ROOT/.lab/nbval}
# a cell that hangs (a commit waiting for a stopped synchronous standby...) fails after 300 s
# instead of holding CI until its own limit
NBVAL_ARGS=(--nbval-lax --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider)
RUNS=("notebooks/[0-9][0-9]_*.ipynb" "notebooks/es/[0-9][0-9]_*.ipynb")
NAMES=("English" "Spanish")

status=0

wipe() {
    if [ ! -d "$LAB_HOME" ]; then
        echo "== nothing to stop: $LAB_HOME does not exist"
        return 0
    fi
    echo "== $PY -m lab down --wipe   (LAB_HOME=$LAB_HOME)"
    if ! "$PY" -m lab down --wipe; then
        echo "test-notebooks: \`lab down --wipe\` failed: a server may still be running under $LAB_HOME" >&2
        return 1
    fi
}

finish() {
    trap - EXIT INT TERM
    wipe || { [ "$status" -ne 0 ] || status=1; }
    exit "$status"
}
trap finish EXIT
trap 'status=130; exit' INT
trap 'status=143; exit' TERM

# Start from a clean slate, whatever an interrupted earlier run left behind.
wipe || { status=1; exit; }

for run in 1 2; do
    # shellcheck disable=SC2206 # the glob is meant to expand here
    chapters=(${RUNS[$((run - 1))]})
    echo "== nbval run $run/2 (${NAMES[$((run - 1))]}, ${#chapters[@]} chapters): $PY -m pytest ${NBVAL_ARGS[*]} ${RUNS[$((run - 1))]}   (LAB_HOME=$LAB_HOME)"
    "$PY" -m pytest "${NBVAL_ARGS[@]}" "${chapters[@]}"
    rc=$?
    case $rc in
        0) ;;
        5) echo "test-notebooks: nbval run $run collected no notebooks (pytest exit 5)" >&2 ;;
        *) echo "test-notebooks: nbval run $run failed (pytest exit $rc)" >&2 ;;
    esac
    [ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc
done
exit "$status"
