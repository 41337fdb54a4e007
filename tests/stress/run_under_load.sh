#!/usr/bin/env bash
# Run the primitive specs (spawn, fork, forkserver) and the supervision suite N times in
# a row while two CPU hogs compete for the cores; stop at the first failure.
#
#   tests/stress/run_under_load.sh [N]        # N defaults to 20
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3);
# HOGS the number of busy loops (default 2). Everything else pytest needs comes from
# pyproject.toml. See tests/stress/README.md.
set -uo pipefail
set -m  # jobs of their own: the pytest runs keep SIGINT, which cleanup forwards to them
cd "$(dirname "$0")/../.."

N=${1:-20}
HOGS=${HOGS:-2}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
LOG_DIR=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/topo-stress.XXXXXX")}

hogs=()
suite_pid=""
stop_hogs() {
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null
    done
    hogs=()
}
summarised=""
passed=0
start=$SECONDS
cleanup() {
    if [[ -n $suite_pid ]]; then  # interrupted in the middle of a round: as Ctrl-C
        kill -INT "$suite_pid" 2>/dev/null  # does, so that its fixtures stop what it ran
        wait "$suite_pid" 2>/dev/null
    fi
    stop_hogs
    if [[ -z $summarised ]]; then
        echo "SUMMARY: INTERRUPTED after $passed clean run(s) of $N, $((SECONDS - start)) s under $HOGS CPU hogs"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq "$HOGS"); do
    "$PYTHON" -c 'while True: pass' &
    hogs+=("$!")
done

# The primitive specs under all three start methods (test_spec_runs is spawn, the
# default; test_primitive_spec_runs_under is fork and forkserver), then the supervision
# suite (failures, signals, deadlocks, daemons).
run_suite() {
    case $1 in
        specs) exec "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/e2e/test_specs.py \
            -k "primitive_spec_runs_under or test_spec_runs" ;;
        supervision) exec "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/e2e/test_supervision.py ;;
    esac
}

start=$SECONDS
failed=""
for i in $(seq "$N"); do
    for name in specs supervision; do
        log="$LOG_DIR/$i-$name.log"
        t0=$SECONDS
        run_suite "$name" >"$log" 2>&1 &  # waited for, so that a signal is acted on at once
        suite_pid=$!
        wait "$suite_pid"
        rc=$?
        suite_pid=""
        echo "run $i/$N $name: $(tail -n 1 "$log") [exit $rc, $((SECONDS - t0)) s]"
        if ((rc != 0)); then
            failed="$i ($name, exit $rc, log $log)"
            break 2
        fi
    done
    passed=$i
done
stop_hogs

elapsed=$((SECONDS - start))
summarised=1
if [[ -n $failed ]]; then
    echo "SUMMARY: FAILED at run $failed after $passed clean run(s) of $N, ${elapsed} s under $HOGS CPU hogs"
    exit 1
fi
echo "SUMMARY: $passed of $N runs passed in a row, ${elapsed} s under $HOGS CPU hogs (logs in $LOG_DIR)"
