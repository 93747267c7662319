#!/usr/bin/env bash
# The whole test suite, with branch coverage of core/ printed and enforced (>= 85%).
#
# With no arguments (CI through .ci/run, `make test`) it runs as three pytest sessions:
#   1. tests/ansible, in the background: the playbook tests mostly wait on ansible-playbook, pip
#      and the daemons they start (their own temporary roots, free ports, private Redis and
#      RabbitMQ, uniquely named PostgreSQL users and database: nothing another test uses);
#   2. at the same time, every other test except the cross-host cluster ones (-m "not cluster");
#   3. then the cluster tests (tests/e2e -m cluster) with nothing beside them: they run nine
#      engines in network namespaces and hold failovers to time limits.
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

echo "== every other test but the cluster ones"
(session main -m "not cluster" --ignore=tests/ansible tests)
judge main $?

wait "$playbooks_pid"
judge playbooks $?
playbooks_pid=""
echo "== tests/ansible (ran beside the above)"
cat "$work/playbooks.log"

echo "== the cross-host cluster tests, alone"
(session cluster -m cluster tests/e2e)
judge cluster $?

echo "== coverage of core/, all three parts"
"$VENV/bin/coverage" combine -q --data-file=.coverage "$work" || failed+=(coverage)
"$VENV/bin/coverage" report --data-file=.coverage --fail-under=$FAIL_UNDER || failed+=(coverage)

if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
