#!/usr/bin/env bash
# run.sh: the test command: installs what is missing, builds with sanitizers, provisions PostgreSQL, runs every test.
#
# Usage: bash tests/run.sh [--fast] [PATTERN...]
#
#   PATTERN   run only the test files whose name contains it (names look like unit/test_job,
#             integration/test_pg_driver, integration/test_smoke.sh, crash/test_kill.sh, fuzz/fuzz_job, format)
#   --fast    leave out the crash tests, the fuzzers and the format check (for quick local runs; CI never
#             uses it)
#
# The last line printed is always "N passed, N failed"; the exit status is 0 only when nothing failed.
# Each test file's whole output is kept under build-test/test-logs/. Environment knobs:
#   SLUICE_TEST_TIMEOUT   seconds one test file may take before it is killed and failed (default 900)
#   SLUICE_TEST_JOBS      test files run at once against the one server (default 2; 1 runs them one by
#                         one); a file marked "# sluice-test: alone" (it restarts the server) runs last, alone
#   SLUICE_TEST_KEEP=1    keep the per-test work directories (/tmp/sluice-test.*) for a look afterwards
#   SLUICE_TEST_PGVERSION the PostgreSQL major version to provision (default 15)
#   SLUICE_FUZZ_SECONDS   how long each libFuzzer target runs (default 20; see tests/fuzz/run_fuzz.sh, which
#                         builds them with clang in build-fuzz/)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${SLUICE_TEST_BUILD:-"$ROOT/build-test"}
PG_MAJOR=${SLUICE_TEST_PGVERSION:-15}
# What the build and the tests need on a Debian 12 machine; CI starts from one that may have none of it.
DEPS=(gcc libc6-dev pkg-config meson ninja-build libuv1-dev libpq-dev libsqlite3-dev libjansson-dev sqlite3
    "postgresql-$PG_MAJOR" postgresql-common postgresql-contrib postgresql-client-common
    clang-format procps jq
    iproute2 # test_dburl.sh: ss shows the keepalive timers of sluice's connections
    pgbouncer # test_pooler.sh: Debian's PgBouncer (1.18) in transaction mode in front of the test server
    chromium man-db bsdutils # test_observe.sh: a report rendered headless, the man page read, a terminal (script)
    clang libclang-rt-14-dev llvm-14 # the fuzzers: clang 14, its libFuzzer runtime, llvm-symbolizer
    python3 # the shell tests read JSON with Debian's python3 (see main)
    python3-flask-migrate python3-flask-sqlalchemy python3-psycopg2) # test_flask.sh: a real Flask app

usage() {
    sed -n '3,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

FAST=0
PATTERNS=()
for arg in "$@"; do
    case $arg in
    --fast) FAST=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "run.sh: unknown option \"$arg\" (hint: bash tests/run.sh --help)" >&2
        exit 2
        ;;
    *) PATTERNS+=("$arg") ;;
    esac
done

cd "$ROOT" || exit 2
mkdir -p "$BUILD/test-logs"
# One log directory per run, so two runs at once (two developers' shells) do not mix their logs.
SLUICE_TEST_LOGDIR=$(mktemp -d "$BUILD/test-logs/$(date +%Y%m%d-%H%M%S)-XXXX")
SLUICE_TEST_RESULTS="$SLUICE_TEST_LOGDIR/results.tsv"
SLUICE_TEST_TMP=$(mktemp -d /tmp/sluice-test.XXXXXX)
: >"$SLUICE_TEST_RESULTS"
export SLUICE_ROOT="$ROOT" SLUICE_BUILD="$BUILD" SLUICE="$BUILD/sluice"
export SLUICE_TEST_LOGDIR SLUICE_TEST_RESULTS SLUICE_TEST_TMP
# Older runs' logs pile up; keep the last ten.
ls -1dt "$BUILD"/test-logs/*/ 2>/dev/null | tail -n +11 | xargs -r rm -rf

# shellcheck source=harness/tap_run.sh
. "$ROOT/tests/harness/tap_run.sh"

cleanup() {
    [[ ${SLUICE_TEST_KEEP:-0} == 1 ]] || rm -rf "$SLUICE_TEST_TMP"
}
trap cleanup EXIT
trap '[[ -n $TAP_RUN_PID ]] && kill -TERM -- "-$TAP_RUN_PID" 2>/dev/null; exit 130' INT TERM

# selected NAME: whether NAME passes the PATTERN filter.
selected() {
    local pattern
    ((${#PATTERNS[@]} == 0)) && return 0
    for pattern in "${PATTERNS[@]}"; do
        [[ $1 == *"$pattern"* ]] && return 0
    done
    return 1
}

# Print "N passed, N failed" from the results (the last line of every run) and exit with the verdict.
summarize() {
    local passed failed
    read -r passed failed < <(awk -F'\t' '{p += $2; f += $3} END {print p + 0, f + 0}' "$SLUICE_TEST_RESULTS")
    if ((failed > 0)); then
        echo "# ==== failures (whole outputs in $SLUICE_TEST_LOGDIR):"
        awk -F'\t' '$3 > 0 {print $1 "\t" $5}' "$SLUICE_TEST_RESULTS" | while IFS=$'\t' read -r name note; do
            echo "#   $name${note:+: $note}"
            grep -E '^not ok( |$)|^ok .*# *[Ss][Kk][Ii][Pp]' "$SLUICE_TEST_LOGDIR/${name//\//_}.log" 2>/dev/null |
                head -n 20 | sed 's/^/#       /'
        done
    fi
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit
}

missing_packages() {
    local pkg
    for pkg in "${DEPS[@]}"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    done
}

# Install what is missing; skip apt entirely when nothing is, so local runs stay fast.
install_deps() {
    local missing log="$SLUICE_TEST_LOGDIR/apt.log"
    command -v dpkg-query >/dev/null || return 0
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    echo "# installing: ${missing[*]}"
    if [[ $(id -u) != 0 ]]; then
        tap_fail "deps" "missing packages: ${missing[*]} (hint: sudo apt-get install -y ${missing[*]})"
        return 1
    fi
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } \
        </dev/null >"$log" 2>&1; then
        tail -n 30 "$log" | sed 's/^/#   /'
        tap_fail "deps" "apt-get install ${missing[*]} failed (whole output in $log)"
        return 1
    fi
}

# The sanitizer build every test runs against. -Db_lundef=false: clang's sanitizers need it, and it does
# no harm with gcc. The lock keeps two runs at once from running ninja in the same directory.
build() {
    local log="$SLUICE_TEST_LOGDIR/build.log" rc
    # shellcheck disable=SC2054 # the commas belong to meson's option value
    local opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true)
    echo "# --- build: $BUILD (meson, address+undefined sanitizers, -Werror)"
    (
        flock 9
        if [[ -f $BUILD/build.ninja ]]; then
            meson configure "$BUILD" "${opts[@]}" || exit
        else
            meson setup "$BUILD" "${opts[@]}" || exit
        fi
        meson compile -C "$BUILD"
    ) 9>"/tmp/sluice-build-$(id -u)-$(cksum <<<"$BUILD" | cut -d' ' -f1).lock" >"$log" 2>&1
    rc=$?
    if ((rc != 0)); then
        # The compiler's own diagnostics first, then the end of the log for meson's.
        grep -E '(error|warning):|ERROR:' "$log" | head -n 40 | sed 's/^/[build] /'
        tail -n 15 "$log" | sed 's/^/[build] /'
        printf 'build\t0\t1\t0\tmeson failed (whole output in %s)\n' "$log" >>"$SLUICE_TEST_RESULTS"
        return 1
    fi
    printf 'build\t1\t0\t0\t\n' >>"$SLUICE_TEST_RESULTS"
    echo "# --- build: ok"
}

# Every test file by name, in the order they run: unit tests and fuzzers need nothing, the rest need
# PostgreSQL.
list_tests() {
    local f
    for f in "$BUILD"/tests/test_*; do
        [[ -f $f && -x $f && $f != */test_pg_driver ]] && echo "unit/${f##*/}"
    done
    if ((FAST == 0)); then
        echo "fuzz/fuzz_job"
        echo "fuzz/fuzz_snap"
        echo "fuzz/fuzz_http"
    fi
    echo "integration/test_pg_driver"
    for f in tests/integration/*.sh; do
        [[ -f $f ]] && echo "${f#tests/}"
    done
    if ((FAST == 0)); then
        for f in tests/crash/*.sh; do
            [[ -f $f ]] && echo "${f#tests/}"
        done
    fi
}

# Clang-format over the C sources and headers; one counted test, the last before the summary.
check_format() {
    local log="$SLUICE_TEST_LOGDIR/format.log" files bad
    mapfile -t files < <(find runner jobs checkpoints include tests -name '*.[ch]' 2>/dev/null | sort)
    echo "# --- format"
    if ! command -v clang-format >/dev/null; then
        tap_fail "format" "clang-format is not installed (hint: apt-get install clang-format)"
        return
    fi
    ((${#files[@]} == 0)) && { tap_fail "format" "no C files found"; return; }
    clang-format --dry-run -Werror "${files[@]}" >"$log" 2>&1
    if [[ -s $log ]]; then
        bad=$(grep -oE '^[^:]+\.[ch]:' "$log" | sort -u | tr -d ':' | tr '\n' ' ')
        echo "[format] not ok 1 - clang-format: ${bad% } (hint: clang-format -i FILE)"
        grep -A3 -m 10 'error:' "$log" | head -n 30 | sed 's/^/[format] #   /'
        printf 'format\t0\t1\t0\tclang-format: %s\n' "${bad% }" >>"$SLUICE_TEST_RESULTS"
    else
        echo "[format] ok 1 - clang-format: ${#files[@]} files"
        printf 'format\t1\t0\t0\t\n' >>"$SLUICE_TEST_RESULTS"
    fi
}

main() {
    local tests=() pg_tests=0 name
    install_deps || summarize
    build || summarize

    # ASan: leaks fail the test (LeakSanitizer works here, also as root in CI) and every report aborts, so a
    # sanitizer finding can never pass as a plain exit status. UBSan: stop at the first finding, with a trace.
    # Freed memory waits in a quarantine of 16 MB before reuse (use after free still caught), not 256 MB: a
    # long run touched fresh pages until it had 256 MB, and the page faults were half its CPU (64 MB still
    # cost a runner of 400 chunks a fifth more time than 16).
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:disable_coredump=1:quarantine_size_mb=16"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    # The shell tests run python3 hundreds of times to read JSON. A version manager's shim first on the
    # PATH (pyenv's, on the machines CI runs on) costs about 0.4 s of CPU a call, Debian's python3 35 ms.
    if [[ -x /usr/bin/python3 ]]; then
        mkdir -p "$BUILD/test-bin" && ln -sfn /usr/bin/python3 "$BUILD/test-bin/python3"
        export PATH="$BUILD/test-bin:$PATH"
    fi
    # No core files in the work tree; soft limit only, so pg_ctl -c may still raise it for the server.
    ulimit -S -c 0

    while IFS= read -r name; do
        selected "$name" && tests+=("$name")
    done < <(list_tests)
    for name in "${tests[@]}"; do
        [[ $name == unit/* || $name == fuzz/* ]] || pg_tests=1
    done

    if ((${#tests[@]} > 0 && pg_tests == 0)); then
        bash "$ROOT/tests/harness/inner.sh" "${tests[@]}"
    elif ((${#tests[@]} > 0)); then
        run_in_pg_virtualenv "${tests[@]}"
    fi
    if ((FAST == 0)) && selected format; then
        check_format
    fi
    if ((${#tests[@]} == 0)) && ! { ((FAST == 0)) && selected format; }; then
        # A pattern that matches nothing tests nothing, and that is a failure.
        tap_fail "selection" "no test file matches: ${PATTERNS[*]:-(none)}"
    fi
    summarize
}

# One throw-away cluster for the whole run. -t keeps its files in a temp dir even as root, so a run
# killed before it could clean up leaves no /etc/postgresql/*/regress behind to block the next one;
# a random free port lets two runs live side by side. A server that fails to start (a port taken
# between the check and the bind) gets one more try on another port. fsync=off: a commit still writes
# its WAL to the kernel before it returns (synchronous_commit stays on), so a server killed or
# restarted -m immediate loses nothing; only a crash of the machine would, and that ends the run anyway.
run_in_pg_virtualenv() {
    local rc before name attempt
    if ! command -v pg_virtualenv >/dev/null; then
        tap_fail "postgresql" "pg_virtualenv is missing (hint: apt-get install postgresql-common)"
        return
    fi
    before=$(wc -l <"$SLUICE_TEST_RESULTS")
    for attempt in 1 2; do
        # The filter ignores Ctrl-C and TERM so that it outlives pg_virtualenv's cleanup: were it to die
        # first, pg_virtualenv would die of SIGPIPE on "Dropping cluster" and leave the server running.
        PGPORT=$(free_port) pg_virtualenv -t -o fsync=off -v "$PG_MAJOR" bash "$ROOT/tests/harness/inner.sh" "$@" 2>&1 |
            (
                trap '' INT TERM
                exec grep --line-buffered -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
            )
        rc=${PIPESTATUS[0]}
        (($(wc -l <"$SLUICE_TEST_RESULTS") == before)) || break
        echo "# pg_virtualenv exited with status $rc before running any test (attempt $attempt of 2)"
    done
    if (($(wc -l <"$SLUICE_TEST_RESULTS") == before)); then
        # No server means none of these ran: each one is a failure, not a skip.
        for name in "$@"; do
            tap_fail "$name" "pg_virtualenv exited with status $rc before running it (no server?)"
        done
    elif ((rc != 0)); then
        tap_fail "postgresql" "pg_virtualenv exited with status $rc: the run was cut short"
    fi
}

# A port nothing listens on, below Linux's ephemeral range (32768 and up) so that no client
# connection can be holding it either.
free_port() {
    local port _
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [[ ! -e /var/run/postgresql/.s.PGSQL.$port ]]; then
            echo "$port"
            return
        fi
    done
    echo 5432
}

main
