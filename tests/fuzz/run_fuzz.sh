#!/usr/bin/env bash
# run_fuzz.sh: builds the libFuzzer targets with clang in a build dir of their own and runs each for a bounded time.
#
# Usage: bash tests/fuzz/run_fuzz.sh [TARGET...]   (TARGET: fuzz_job, fuzz_snap, fuzz_http; default all three)
#
# Prints TAP (tests/run.sh runs it as fuzz/fuzz_job, fuzz/fuzz_snap and fuzz/fuzz_http). For each target: the build, a
# replay of its committed seeds (tests/fuzz/corpus/TARGET, which holds every input that once crashed
# it), then SLUICE_FUZZ_SECONDS of fuzzing. Any crash, leak, sanitizer report or hang fails it; the
# input is kept in $BUILD/fuzz-artifacts/ (replay one: $BUILD/tests/fuzz/TARGET FILE). Inputs that
# reach new code go to $BUILD/fuzz-corpus/TARGET and are kept between runs; the seeds are never written.
#   SLUICE_FUZZ_SECONDS   seconds of fuzzing per target (default 20); a long run:
#                         SLUICE_FUZZ_SECONDS=3600 bash tests/fuzz/run_fuzz.sh
#   SLUICE_FUZZ_BUILD     the build dir (default build-fuzz in the work tree): CC=clang, -Dc_args=-fsanitize=fuzzer-no-link,
#                         address and undefined sanitizers; the gcc builds are left alone
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${SLUICE_FUZZ_BUILD:-"$ROOT/build-fuzz"}
SECONDS_EACH=${SLUICE_FUZZ_SECONDS:-20}
TARGETS=("$@")
((${#TARGETS[@]} > 0)) || TARGETS=(fuzz_job fuzz_snap fuzz_http)
N=0
FAILED=0

ok() {
    N=$((N + 1))
    echo "ok $N - $*"
}

not_ok() {
    N=$((N + 1))
    FAILED=$((FAILED + 1))
    echo "not ok $N - $1"
    [[ -n ${2:-} && -f $2 ]] && tail -n 60 "$2" | sed 's/^/#   /'
}

# Configure once, then build only the targets (the lock keeps two runs from sharing ninja).
build() {
    local log="$BUILD/fuzz-build.log"
    mkdir -p "$BUILD"
    (
        flock 9
        if [[ ! -f $BUILD/build.ninja ]]; then
            # shellcheck disable=SC2054 # the commas belong to meson's option value
            CC=clang meson setup "$BUILD" -Dc_args=-fsanitize=fuzzer-no-link -Db_sanitize=address,undefined -Db_lundef=false \
                -Dbuildtype=debugoptimized || exit
        fi
        # meson compile looks targets up before it regenerates: a target added since needs this first
        ninja -C "$BUILD" build.ninja || exit
        meson compile -C "$BUILD" "${TARGETS[@]/#/tests/fuzz/}"
    ) 9>"/tmp/sluice-fuzz-build-$(id -u)-$(cksum <<<"$BUILD" | cut -d' ' -f1).lock" >"$log" 2>&1
    local rc=$?
    ((rc == 0)) && ok "build: ${TARGETS[*]} (clang, libFuzzer, address and undefined sanitizers)" && return 0
    not_ok "build of ${TARGETS[*]} failed (whole output in $log)" "$log"
    return 1
}

# A sanitizer report is a failure even where the exit status would not say so.
clean_log() {
    ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|SUMMARY: ' "$1"
}

# Replay the committed seeds: every input that ever crashed a target stays a regression test.
replay() {
    local target=$1 exe=$2 log="$BUILD/fuzz-logs/$1.replay.log" seeds=$ROOT/tests/fuzz/corpus/$1
    local count
    count=$(find "$seeds" -type f | wc -l)
    mkdir -p "$BUILD/fuzz-artifacts"
    "$exe" -runs=0 -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$BUILD/fuzz-artifacts/$target-replay-" \
        "$seeds" >"$log" 2>&1
    local rc=$?
    if ((rc == 0)) && ((count > 0)) && clean_log "$log"; then
        ok "$target: $count seed inputs replayed"
    else
        not_ok "$target: replaying $count seeds of tests/fuzz/corpus/$target exited $rc (log: $log)" "$log"
    fi
}

fuzz() {
    local target=$1 exe=$2 log="$BUILD/fuzz-logs/$1.log" corpus=$BUILD/fuzz-corpus/$1 runs dict=()
    mkdir -p "$corpus" "$BUILD/fuzz-artifacts"
    [[ -f $ROOT/tests/fuzz/$target.dict ]] && dict=(-dict="$ROOT/tests/fuzz/$target.dict")
    "$exe" "${dict[@]}" -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$BUILD/fuzz-artifacts/$target-" \
        "$corpus" "$ROOT/tests/fuzz/corpus/$target" >"$log" 2>&1
    local rc=$?
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    if ((rc == 0)) && clean_log "$log"; then
        ok "$target: ${runs:-?} runs in ${SECONDS_EACH}s, no crash, leak or sanitizer report"
    else
        not_ok "$target: failed after ${runs:-?} runs (exit $rc; input kept in $BUILD/fuzz-artifacts/, log: $log)" "$log"
    fi
}

main() {
    local target exe
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:disable_coredump=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    command -v llvm-symbolizer-14 >/dev/null && export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14)}
    if build; then
        mkdir -p "$BUILD/fuzz-logs"
        for target in "${TARGETS[@]}"; do
            exe=$BUILD/tests/fuzz/$target
            replay "$target" "$exe"
            fuzz "$target" "$exe"
        done
    fi
    echo "1..$N"
    ((FAILED == 0))
}

main
