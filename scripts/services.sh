#!/usr/bin/env bash
# Start PostgreSQL, Redis and RabbitMQ on 127.0.0.1 when they are not already running.
# In CI (CI=true) a service that cannot be started fails the run.
set -u
fail=0
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done; return 1; }

if ! up 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_up 5432 || { echo "PostgreSQL did not start" >&2; fail=1; }
fi
if ! up 6379 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  wait_up 6379 || { echo "Redis did not start" >&2; fail=1; }
fi
if ! up 5672 && command -v rabbitmq-server >/dev/null; then
  rabbitmq-server -detached || true
  wait_up 5672 || { echo "RabbitMQ did not start" >&2; fail=1; }
fi
for p in 5432:PostgreSQL 6379:Redis 5672:RabbitMQ; do
  up "${p%%:*}" || echo "note: ${p#*:} is not running on 127.0.0.1:${p%%:*}" >&2
done
if [ "${CI:-}" = "true" ] && [ "$fail" -ne 0 ]; then exit 1; fi
exit 0
