#!/usr/bin/env bash
# A PostgreSQL cluster for the MLflow tracking server (`make server DB=postgres`), kept in a folder of the project.
#
#   scripts/postgres.sh start [DIR] [PORT]   initialise DIR if new, start it on 127.0.0.1:PORT (a running cluster is
#                                            reused), create the database `mlflow`, print its SQLAlchemy URL
#   scripts/postgres.sh stop [DIR]           stop the cluster in DIR
#
# DIR defaults to mlflow-server/postgres, PORT to 5433 (5432 is left to a system PostgreSQL). The superuser `mlflow`
# has a random password, kept in DIR.pgpass (mode 600); the URL names that file (libpq's `passfile`), so it holds no
# secret. TCP connections need the password; the Unix socket lies in DIR itself, reachable only by the cluster's
# owner. PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (created by apt's
# package), so DIR's parent folders must let that user through (o+x).
set -euo pipefail

command=${1:-start}
dir=$(realpath -m "${2:-mlflow-server/postgres}")
port=${3:-5433}
passfile="$dir.pgpass"

log() { echo "postgres.sh: $*" >&2; }
[[ $command == start || $command == stop ]] || { log "usage: $0 start|stop [DIR] [PORT]"; exit 2; }

# The server programs: Debian keeps them in /usr/lib/postgresql/VERSION/bin, out of PATH; elsewhere try PATH.
find_bin() {
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
    if [[ -n $newest && -x $newest/initdb ]]; then echo "$newest"
    elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then dirname "$(command -v initdb)"
    fi
}
bin=$(find_bin)
if [[ -z $bin && $command == start ]]; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing PostgreSQL (apt-get install postgresql)"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(find_bin)
    fi
    [[ -n $bin ]] || { log "PostgreSQL is not installed: sudo apt-get install postgresql (or your system's package)"; exit 1; }
fi
[[ -n $bin ]] || { log "PostgreSQL is not installed: nothing to stop"; exit 0; }

# Run a PostgreSQL program as the cluster's owner: the `postgres` user when we are root, else ourselves.
as_owner() {
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
running() { [[ -f $dir/PG_VERSION ]] && as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; }
sql() { as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U mlflow -d postgres -tA "$@"; }

if [[ $command == stop ]]; then
    if running; then as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >&2; else log "not running: $dir"; fi
    exit 0
fi

# Initialise the cluster once.
if [[ ! -f $dir/PG_VERSION ]]; then
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || { log "no 'postgres' user to own the cluster (apt's postgresql creates it)"; exit 1; }
        chown postgres: "$dir"
        runuser -u postgres -- test -w "$dir" ||
            { log "the postgres user cannot reach $dir: give its parent folders o+x, or choose another folder"; exit 1; }
    fi
    chmod 700 "$dir"
    log "initialising a cluster in $dir"
    as_owner "$bin/initdb" -D "$dir" -U mlflow -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi

# Start it (or reuse the running one, on the port it runs on: line 4 of postmaster.pid).
if running; then
    port=$(sed -n 4p "$dir/postmaster.pid")
    log "already running on 127.0.0.1:$port"
else
    if ! as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k '$dir'" start >&2; then
        log "could not start (port $port taken?); the log's end:"; tail -n 5 "$dir/server.log" >&2; exit 1
    fi
fi

# A password for TCP connections (set through the socket), kept where only we can read it.
if [[ ! -s $passfile ]]; then
    password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    (umask 077 && echo "*:*:*:mlflow:$password" >"$passfile")
    echo "ALTER ROLE mlflow PASSWORD '$password'" | sql >/dev/null
fi
for database in mlflow optuna; do  # optuna: shared Optuna studies (hparams_search.storage), tables apart from MLflow's
    [[ $(sql -c "SELECT 1 FROM pg_database WHERE datname = '$database'") == 1 ]] || sql -c "CREATE DATABASE $database"
done

log "Optuna studies for workers on several hosts: hparams_search.storage=postgresql+psycopg2://mlflow@127.0.0.1:$port/optuna?passfile=$passfile"

echo "postgresql+psycopg2://mlflow@127.0.0.1:$port/mlflow?passfile=$passfile"
