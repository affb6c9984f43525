#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's `postgresql` package) for the tests and the
# benchmarks, and prints its URL on the last line of its output:
#   url=$(./tools/postgres.sh start DIR | tail -n 1)   # postgres://longproto@127.0.0.1:PORT/longproto
#   ./tools/postgres.sh stop DIR
# DIR is a new or empty directory; the cluster, its socket and its log live there. The
# server runs as the unprivileged user `postgres` (it refuses to run as root) and listens
# on a free port of 127.0.0.1 only, with trust authentication for loopback.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
    echo "PostgreSQL is not installed: apt-get install postgresql (./tools/test.sh does)" >&2
    exit 1
fi

as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        # an unprivileged user runs the server as itself
        "$@"
    fi
}

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

case "$cmd" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "$bin/initdb" -D "$dir/data" -U longproto --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    # fsync stays on: the store's guarantees are measured on a durable server
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c shared_buffers=256MB" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U longproto longproto
    echo "postgres://longproto@127.0.0.1:$port/longproto"
    ;;
stop)
    [ -d "$dir/data" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
