# inner.sh: runs the selected test files, inside pg_virtualenv when any of them needs PostgreSQL (run.sh calls it).
# shellcheck shell=bash
#
# Usage: bash tests/harness/inner.sh NAME...   where NAME is unit/test_x, fuzz/fuzz_x, integration/test_pg_driver,
# integration/test_x.sh or crash/test_x.sh. run.sh exports SLUICE_ROOT, SLUICE_BUILD, SLUICE,
# SLUICE_TEST_TMP, SLUICE_TEST_RESULTS and SLUICE_TEST_LOGDIR. It always exits 0 once it has started
# running tests, so that pg_virtualenv does not print its log dump after the summary: the counts in
# $SLUICE_TEST_RESULTS are the verdict.
set -uo pipefail

# shellcheck source=tap_run.sh
. "$SLUICE_ROOT/tests/harness/tap_run.sh"

# The pids of the lanes running test files at once (run_pool), for an interrupted run to stop.
LANES=()
trap '[[ -n $TAP_RUN_PID ]] && kill -TERM -- "-$TAP_RUN_PID" 2>/dev/null; ((${#LANES[@]})) && kill -TERM "${LANES[@]}" 2>/dev/null; exit 130' INT TERM

# Inside pg_virtualenv (PGPORT and PGVERSION are set, PG_CLUSTER_CONF_ROOT points at the throw-away
# cluster's configuration), tell the tests how to reach and restart the server.
setup_pg() {
    local cluster_line
    cluster_line=$(pg_lsclusters --no-header 2>/dev/null | awk -v v="$PGVERSION" '$1 == v && $2 == "regress"')
    export SLUICE_TEST_PGDATA SLUICE_TEST_PGLOG
    SLUICE_TEST_PGDATA=$(awk '{print $6}' <<<"$cluster_line")
    SLUICE_TEST_PGLOG=$(awk '{print $7}' <<<"$cluster_line")
    # pg_ctlcluster runs pg_ctl as the cluster's owner (postgres), so this works as root, and it waits
    # until the server accepts connections again. "--mode immediate" is pg_ctl's "-m immediate": no
    # shutdown checkpoint, so the next start runs crash recovery, like a server that lost power.
    export SLUICE_TEST_PGRESTART="pg_ctlcluster --mode immediate $PGVERSION regress restart"
    export SLUICE_TEST_PGSTOP="pg_ctlcluster --mode immediate $PGVERSION regress stop"
    export SLUICE_TEST_PGSTART="pg_ctlcluster $PGVERSION regress start"
    # Debian's psql, createdb, pg_dump and the like in /usr/bin are pg_wrapper, a Perl script that picks
    # a cluster's version: about 30 ms a call, and the tests call psql thousands of times (every probe
    # of wait_until). PGHOST and PGPORT name the server, so the tests call the version's own programs.
    export PATH="/usr/lib/postgresql/$PGVERSION/bin:$PATH"
    printf '# postgresql %s on %s:%s, data %s, log %s\n' "$PGVERSION" "$PGHOST" "$PGPORT" \
        "$SLUICE_TEST_PGDATA" "$SLUICE_TEST_PGLOG"
    if ! psql -XAtq -c 'select 1' >/dev/null; then
        tap_fail "postgresql" "the throw-away server does not answer (see the server log above)"
        return 1
    fi
}

# The pg driver test is a C program: it gets its own database through SLUICE_TEST_DB.
run_pg_driver() {
    local name=$1 exe="$SLUICE_BUILD/tests/test_pg_driver"
    if [[ ! -x $exe ]]; then
        tap_fail "$name" "$exe was not built"
        return
    fi
    dropdb --if-exists --force sl_pg_driver 2>/dev/null
    if ! createdb sl_pg_driver; then
        tap_fail "$name" "createdb sl_pg_driver failed"
        return
    fi
    SLUICE_TEST_DB="postgresql://$PGUSER@$PGHOST:$PGPORT/sl_pg_driver" tap_run "$name" "$exe"
}

run_one() {
    local name=$1
    case $name in
    integration/test_pg_driver)
        run_pg_driver "$name"
        ;;
    unit/*)
        if [[ -x $SLUICE_BUILD/tests/${name#unit/} ]]; then
            tap_run "$name" "$SLUICE_BUILD/tests/${name#unit/}"
        else
            tap_fail "$name" "$SLUICE_BUILD/tests/${name#unit/} was not built"
        fi
        ;;
    fuzz/*)
        tap_run "$name" bash "$SLUICE_ROOT/tests/fuzz/run_fuzz.sh" "${name#fuzz/}"
        ;;
    *.sh)
        tap_run "$name" bash "$SLUICE_ROOT/tests/$name"
        ;;
    *)
        tap_fail "$name" "inner.sh does not know how to run it"
        ;;
    esac
}

# runs_alone NAME: a test file that stops or restarts the shared server (it says so with a line
# "# sluice-test: alone") cannot share it with another file running at the same time.
runs_alone() {
    [[ $1 == *.sh ]] && grep -q '^# sluice-test: alone' "$SLUICE_ROOT/tests/$1"
}

# run_pool NAME...: run the files SLUICE_TEST_JOBS at a time (default 2), each in a lane of its own
# that stops its test's process group when interrupted. Each test file works in databases, temporary
# directories and ports of its own; their output lines interleave, each prefixed with its name.
run_pool() {
    local jobs=${SLUICE_TEST_JOBS:-2} running=0 name
    if ((jobs <= 1)); then
        for name in "$@"; do
            run_one "$name"
        done
        return
    fi
    for name in "$@"; do
        while ((running >= jobs)); do
            wait -n
            running=$((running - 1))
        done
        (
            trap '[[ -n $TAP_RUN_PID ]] && kill -TERM -- "-$TAP_RUN_PID" 2>/dev/null; exit 130' INT TERM
            run_one "$name"
        ) &
        LANES+=($!)
        running=$((running + 1))
    done
    wait
}

main() {
    local name shared=() alone=()
    if [[ -n ${PGPORT:-} && -n ${PGVERSION:-} ]]; then
        setup_pg
    fi
    # The longest first (the crash tests, then the fuzzers, then the other shell tests, the biggest
    # file first), so that the lanes end together: short files last fill the gaps, where a long one
    # last (the order of the names, test_workers.sh) ran on in one lane while the other sat idle. The
    # C tests take a second or two each. The files that restart the server after every other one.
    for name in "$@"; do
        if runs_alone "$name"; then
            alone+=("$name")
        elif [[ $name == crash/* ]]; then
            shared+=("$name")
        fi
    done
    for name in "$@"; do
        [[ $name == fuzz/* ]] && shared+=("$name")
    done
    mapfile -t -O "${#shared[@]}" shared < <(
        for name in "$@"; do
            [[ $name == crash/* || $name == fuzz/* ]] || runs_alone "$name" && continue
            if [[ $name == *.sh ]]; then
                printf '%s\t%s\n' "$(stat -c %s "$SLUICE_ROOT/tests/$name")" "$name"
            else
                printf '0\t%s\n' "$name"
            fi
        done | sort -t$'\t' -k1,1nr -s | cut -f2
    )
    run_pool "${shared[@]}"
    for name in "${alone[@]}"; do
        run_one "$name"
    done
    exit 0
}

main "$@"
