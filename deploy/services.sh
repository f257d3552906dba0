#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 when they are down (Debian packages, as root).
set -euo pipefail

wait_for() {
    local name="$1" check="$2"
    for _ in $(seq 1 30); do
        if eval "$check" >/dev/null 2>&1; then
            echo "$name is up"
            return 0
        fi
        sleep 1
    done
    echo "error: $name did not come up on 127.0.0.1" >&2
    return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping"
