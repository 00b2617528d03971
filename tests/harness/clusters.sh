# clusters.sh: more PostgreSQL servers beside the test's own, for tests of a fleet (sourced after lib.sh).
# shellcheck shell=bash
#
# cluster_start NAME: initdb (as postgres: the server refuses root) into a temp dir, start a server on a
# free port listening on its own socket dir only, trusting local connections; sets CLUSTER_URL[NAME]
# (a postgresql:// URL for user postgres, database postgres) and CLUSTER_DIR[NAME]. cluster_stop NAME
# stops it at once (-m immediate, like a crash), cluster_restart NAME starts it again, and
# clusters_drop (run by the EXIT trap the first cluster_start installs) removes them all.
# CLUSTER_LISTEN=127.0.0.1 makes the next ones listen on TCP there too, restarts included (trusted, as
# initdb -A trust writes pg_hba.conf), not on their socket alone.
#
# own_server: the rest of the test file runs on a cluster of its own ("own", on 127.0.0.1) instead of
# the shared test server, with pg_restart, pg_stop and pg_start acting on it: a file that restarts and
# stops its server need not run alone. Call it at the file's top level, before the first run_test.

CL_BIN=/usr/lib/postgresql/${PGVERSION:-15}/bin
declare -A CLUSTER_URL=() CLUSTER_DIR=() CLUSTER_PORT=() CLUSTER_ADDR=()

_cl_as_postgres() {
    runuser -u postgres -- "$@"
}

clusters_drop() {
    local name
    for name in "${!CLUSTER_DIR[@]}"; do
        # one a test stopped already fails pg_ctl, and the EXIT trap runs under the test's set -e
        _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$name]}/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "${CLUSTER_DIR[$name]}"
    done
}

cluster_start() {
    local name=$1 dir port
    dir=$(mktemp -d /tmp/sluice-cluster.XXXXXX)
    port=$(free_port)
    chown postgres: "$dir" && chmod 700 "$dir"
    if ! _cl_as_postgres "$CL_BIN/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1; then
        fail "initdb for cluster $name failed: $(tail -n 5 "$dir/initdb.log")"
        return 1
    fi
    CLUSTER_DIR[$name]=$dir
    CLUSTER_PORT[$name]=$port
    CLUSTER_ADDR[$name]=${CLUSTER_LISTEN:-}
    CLUSTER_URL[$name]="postgresql://postgres@/postgres?host=$dir&port=$port"
    ((${#CLUSTER_DIR[@]} == 1)) && trap 'clusters_drop; _t_teardown' EXIT
    cluster_restart "$name"
}

cluster_restart() {
    local name=$1 dir=${CLUSTER_DIR[$1]}
    if ! _cl_as_postgres "$CL_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p ${CLUSTER_PORT[$name]} -k $dir -c listen_addresses='${CLUSTER_ADDR[$name]:-}' -c fsync=off -c max_connections=40" start \
        >"$dir/pg_ctl.log" 2>&1; then
        fail "cluster $name does not start: $(tail -n 5 "$dir/server.log" 2>/dev/null)"
        return 1
    fi
}

cluster_stop() {
    _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -m immediate -w stop >/dev/null 2>&1
}

# cluster_true NAME SQL: a boolean query on the cluster, for wait_until and if (as sql_true). A
# "wait_until N test "$(cluster_q ...)" = X" would ask once, before the wait, and wait in vain.
cluster_true() {
    [[ $(cluster_q "$1" "$2" 2>/dev/null) == t ]]
}

# cluster_q NAME [DB] SQL: SQL on the cluster (unaligned, no headers, stops at the first error).
cluster_q() {
    local name=$1 db=postgres
    (($# == 3)) && { db=$2; shift; }
    psql -h "${CLUSTER_DIR[$name]}" -p "${CLUSTER_PORT[$name]}" -U postgres -d "$db" -XAtq -v ON_ERROR_STOP=1 -c "$2"
}

own_server() {
    CLUSTER_LISTEN=127.0.0.1 cluster_start own || exit 1
    trap 'clusters_drop; _t_file_cleanup' EXIT
    export PGHOST=127.0.0.1 PGPORT=${CLUSTER_PORT[own]} PGUSER=postgres PGDATABASE=postgres
    unset PGPASSWORD
    export SLUICE_TEST_PGRESTART=_own_restart SLUICE_TEST_PGSTOP=_own_stop SLUICE_TEST_PGSTART=_own_start
}

_own_restart() {
    _own_stop
    _own_start
}

_own_stop() {
    cluster_stop own
}

_own_start() {
    cluster_restart own
}
