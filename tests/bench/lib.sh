#!/usr/bin/env bash
# lib.sh: what the benchmarks share: a release build of sluice and a free port for their PostgreSQL.
# Sourced by tests/bench/bench_*.sh, which set ROOT (the repository), BUILD (the build dir) and die().

# build_release: build $BUILD as a release build without sanitizers; its log is kept only on failure.
build_release() {
    local log="$BUILD.log"
    echo "# building $BUILD (release, no sanitizers); log in $log"
    (
        cd "$ROOT" || exit
        if [[ -f $BUILD/build.ninja ]]; then
            meson configure "$BUILD" --buildtype=release -Db_sanitize=none || exit
        else
            meson setup "$BUILD" --buildtype=release || exit
        fi
        meson compile -C "$BUILD"
    ) >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        die "the release build failed (whole output in $log)"
    }
    rm -f "$log"
}

# free_port: a port nothing listens on, below Linux's ephemeral range (as tests/run.sh picks it).
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
