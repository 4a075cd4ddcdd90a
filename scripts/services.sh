#!/usr/bin/env bash
# Make sure the local Redis and PostgreSQL the tests and the demo use are up; start what is
# missing (Debian's packages, as on this project's machines). The S3 server (moto) is started
# by the test session or the demo itself.
set -uo pipefail
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! redis_up && command -v redis-server >/dev/null; then
  echo "starting redis-server" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
# RabbitMQ for the broker failover tests (they make a vhost of their own on it). Optional:
# a machine without it skips those tests.
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) >/dev/null 2>&1; }
if ! rabbit_up && [ -x /usr/sbin/rabbitmq-server ]; then
  echo "starting rabbitmq-server" >&2
  /usr/sbin/rabbitmq-server -detached >/dev/null 2>&1 || true
fi
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  echo "starting postgresql" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
for _ in $(seq 1 30); do
  if redis_up && pg_up; then exit 0; fi
  sleep 1
done
redis_up || echo "redis is not reachable on 127.0.0.1:6379" >&2
pg_up || echo "postgresql is not reachable on 127.0.0.1:5432" >&2
exit 1
