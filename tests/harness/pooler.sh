# pooler.sh: PgBouncer in transaction mode in front of a PostgreSQL server, for tests (sourced after lib.sh).
# shellcheck shell=bash
#
# pgb_start HOST PORT: Debian's pgbouncer (1.18), started as the postgres user (it refuses to run as
# root) on a free port, pool_mode = transaction, default_pool_size = 3, auth_type = trust towards its
# clients and, towards the server, the test server's password for $PGUSER and "app-secret" for
# sl_app (lib.sh's make_app_role); its "* =" line sends every database to the same name on HOST:PORT
# (HOST may be a socket directory). A server login that failed is tried again after 1 s, not 15 (a
# server down for a moment). Sets PGB_DIR and PGB_PORT; on failure PGB_ERR says why.
# pgb_point HOST PORT: every database to another server from now on (RELOAD), and the server
# connections to the old one closed as they are released (RECONNECT): a failover as the pooler sees it.
# pgb_stop: stop it and remove its directory.

PGB_DIR=""
PGB_PORT=""
PGB_ERR=""

_pgb_databases() {
    printf '[databases]\n* = host=%s port=%s\n' "$1" "$2"
}

pgb_start() {
    if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
        PGB_ERR="pgbouncer is not installed (hint: apt-get install pgbouncer; tests/run.sh does)"
        return 1
    fi
    PGB_DIR=$(mktemp -d /tmp/sluice-pgbouncer.XXXXXX)
    PGB_PORT=$(free_port)
    printf '"%s" "%s"\n"sl_app" "app-secret"\n' "$PGUSER" "${PGPASSWORD:-}" >"$PGB_DIR/userlist.txt"
    _pgb_databases "$1" "$2" >"$PGB_DIR/pgbouncer.ini"
    cat >>"$PGB_DIR/pgbouncer.ini" <<EOF_INI

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
server_login_retry = 1
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
admin_users = $PGUSER
EOF_INI
    chown -R postgres: "$PGB_DIR" && chmod 700 "$PGB_DIR"
    if ! runuser -u postgres -- /usr/sbin/pgbouncer -d "$PGB_DIR/pgbouncer.ini" >"$PGB_DIR/start.log" 2>&1; then
        PGB_ERR="pgbouncer did not start: $(cat "$PGB_DIR/start.log" "$PGB_DIR/pgbouncer.log" 2>/dev/null | tail -n 20)"
        return 1
    fi
    if ! poll_until 20 psql -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER" -d pgbouncer -XAtq -c "show version"; then
        PGB_ERR="pgbouncer does not answer on port $PGB_PORT: $(tail -n 20 "$PGB_DIR/pgbouncer.log" 2>/dev/null)"
        return 1
    fi
}

pgb_point() {
    local rest
    rest=$(sed -n '/^\[pgbouncer\]/,$p' "$PGB_DIR/pgbouncer.ini")
    { _pgb_databases "$1" "$2"; echo; echo "$rest"; } >"$PGB_DIR/pgbouncer.ini.new"
    chown postgres: "$PGB_DIR/pgbouncer.ini.new"
    mv "$PGB_DIR/pgbouncer.ini.new" "$PGB_DIR/pgbouncer.ini"
    psql -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER" -d pgbouncer -XAtq -c "RELOAD" -c "RECONNECT" >/dev/null
}

pgb_stop() {
    [[ -n $PGB_DIR && -f $PGB_DIR/pgbouncer.pid ]] && kill "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null
    [[ -n $PGB_DIR && ${SLUICE_TEST_KEEP:-0} != 1 ]] && rm -rf "$PGB_DIR"
    return 0
}
