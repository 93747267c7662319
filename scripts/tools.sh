#!/usr/bin/env bash
# Install the command-line tools the tests use when they are missing: promtool and prometheus
# (Debian package `prometheus`), for the metrics exposition check and the real scrape test;
# systemd-analyze (package `systemd`), which checks the units the Ansible role writes.
# In CI (CI=true) a tool that cannot be installed fails the run; elsewhere it is a note, and
# the tests that need it skip.
set -u
if command -v promtool >/dev/null && command -v prometheus >/dev/null \
  && command -v systemd-analyze >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo -n"; fi
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q prometheus systemd >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 \
      && $SUDO apt-get install -y -q prometheus systemd >/dev/null 2>&1; }
  # The package may start its own server; the tests start theirs on a random port instead.
  if command -v systemctl >/dev/null; then $SUDO systemctl stop prometheus >/dev/null 2>&1 || true; fi
fi
if command -v promtool >/dev/null && command -v prometheus >/dev/null \
  && command -v systemd-analyze >/dev/null; then
  exit 0
fi
echo "note: promtool, prometheus or systemd-analyze is not installed (apt-get install prometheus systemd)" >&2
if [ "${CI:-}" = "true" ]; then exit 1; fi
exit 0
