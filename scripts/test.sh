#!/usr/bin/env bash
# The whole test suite, with branch coverage of core/ printed and enforced (>= 85%).
set -u
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  --cov=core --cov-branch --cov-report=term --cov-fail-under=85 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a broken suite, not a green one" >&2
  exit 1
fi
exit "$rc"
