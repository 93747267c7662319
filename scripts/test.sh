#!/usr/bin/env bash
# The whole test suite, with branch coverage of core/ printed and enforced (>= 85%).
#
# With no arguments (CI through .ci/run, `make test`) it runs as four pytest sessions:
#   1. tests/ansible, in the background: the playbook tests mostly wait on ansible-playbook, pip
#      and the daemons they start (their own temporary roots, free ports, private Redis and
#      RabbitMQ, uniquely named PostgreSQL users and database: nothing another test uses);
#   2. at the same time, the tests that run on fake clocks and in-process engines only
#      (tests/unit, tests/contract, tests/tui but its two end-to-end files): CPU work whose
#      outcome does not depend on how busy the machine is;
#   3. once the playbooks are done, every test that waits on real services, processes and
#      faults (tests/integration, tests/e2e, tests/cli, ..., the TUI's tmux and attach runs,
#      -m "not cluster"), with nothing beside them: at load 12 one of them failed beside the
#      playbooks (docs/development.md);
#   4. then the cluster tests (tests/e2e -m cluster) alone: they run nine engines in network
#      namespaces and hold failovers to time limits.
# Every test still runs; each session keeps its own coverage data, and the combined total is
# what is printed and enforced. docs/development.md says why this is safe and what it saves.
#
# With arguments (a path, -k, -m, ...), one pytest session with them, as before.
set -u
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTEST=("$VENV/bin/python" -m pytest -q -p no:cacheprovider)
FAIL_UNDER=85

if [ "$#" -gt 0 ]; then
  "${PYTEST[@]}" --cov=core --cov-branch --cov-report=term --cov-fail-under=$FAIL_UNDER "$@"
  rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a broken suite, not a green one" >&2
    exit 1
  fi
  exit "$rc"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/agentdeck-test.XXXXXX")
playbooks_pid=""
finish() {
  # (an interrupted run leaves no playbook session behind: SIGINT lets its fixtures stop the
  # daemons they started)
  if [ -n "$playbooks_pid" ] && kill -0 "$playbooks_pid" 2>/dev/null; then
    kill -INT "$playbooks_pid" 2>/dev/null
    wait "$playbooks_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One part's pytest, with its own coverage data file.
session() {
  local name=$1
  shift
  COVERAGE_FILE="$work/.coverage.$name" exec "${PYTEST[@]}" --cov=core --cov-branch \
    --cov-report= "$@"
}

failed=()
# A part that failed, or collected nothing (5: a broken suite, not a green one), fails the run.
judge() {
  local name=$1 rc=$2
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests in part '$name': that is a broken suite" >&2
  fi
  if [ "$rc" -ne 0 ]; then
    failed+=("$name")
  fi
}

echo "== tests/ansible runs in the background beside the rest (its output follows the rest's)"
# (`trap - INT`: a background job starts with SIGINT ignored; restored, the pytest this
# subshell becomes tears its fixtures down on Ctrl-C or on finish's SIGINT)
(trap - INT && exec > "$work/playbooks.log" 2>&1 && session playbooks tests/ansible) &
playbooks_pid=$!

# Tests of the TUI that drive real processes and services: they run with the late part.
TUI_LIVE=(tests/tui/test_tmux_e2e.py tests/tui/test_attach_e2e.py)

echo "== the fake-clock tests: unit, contract, TUI (beside the playbooks)"
(session early -m "not cluster" tests/unit tests/contract tests/tui \
  "${TUI_LIVE[@]/#/--ignore=}")
judge early $?

wait "$playbooks_pid"
judge playbooks $?
playbooks_pid=""
echo "== tests/ansible (ran beside the above)"
cat "$work/playbooks.log"

# Every other folder of tests/ (a new one is taken here by default).
late=()
for dir in tests/*/; do
  case "$dir" in
    tests/ansible/ | tests/unit/ | tests/contract/ | tests/tui/ | tests/__*) ;;
    *) late+=("${dir%/}") ;;
  esac
done
echo "== the tests on real services and processes, but the cluster ones: ${late[*]} ${TUI_LIVE[*]}"
(session late -m "not cluster" "${late[@]}" "${TUI_LIVE[@]}")
judge late $?

echo "== the cross-host cluster tests, alone"
(session cluster -m cluster tests/e2e)
judge cluster $?

echo "== coverage of core/, all four parts"
"$VENV/bin/coverage" combine -q --data-file=.coverage "$work" || failed+=(coverage)
"$VENV/bin/coverage" report --data-file=.coverage --fail-under=$FAIL_UNDER || failed+=(coverage)

if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
