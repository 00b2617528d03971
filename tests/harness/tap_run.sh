# tap_run.sh: runs one test file, streams its TAP output and records its counts (sourced by run.sh, inner.sh).
# shellcheck shell=bash
#
# Needs SLUICE_TEST_RESULTS (a file, one line per test file: name, passed, failed, seconds, note) and
# SLUICE_TEST_LOGDIR (each file's whole output is kept there as NAME.log). SLUICE_TEST_TIMEOUT bounds one
# file in seconds (default 900). When SLUICE_TEST_PGLOG names the server log, a failing file also shows
# what the server logged while it ran.

# The pid of the running test's process group leader, so an interrupted run can kill the whole group.
TAP_RUN_PID=""

# tap_run NAME CMD...: run CMD with stdin closed and stderr merged into stdout, print each line as it comes
# prefixed with "[NAME] ", then count its TAP lines and append them to $SLUICE_TEST_RESULTS.
tap_run() {
    local name=$1
    shift
    local log="$SLUICE_TEST_LOGDIR/${name//\//_}.log"
    local pglog_from=0 started=$SECONDS rc

    if [[ -n ${SLUICE_TEST_PGLOG:-} && -f $SLUICE_TEST_PGLOG ]]; then
        pglog_from=$(stat -c %s "$SLUICE_TEST_PGLOG")
    fi
    printf '# --- %s\n' "$name"
    # timeout makes itself a process group leader: on timeout it kills the test and every process the test
    # started. The output goes to a file rather than a pipe so that a process the test leaked cannot hold
    # the pipe open and hang the run; tail follows the file until the test exits.
    : >"$log"
    timeout -k 10 "${SLUICE_TEST_TIMEOUT:-900}" "$@" </dev/null >>"$log" 2>&1 &
    TAP_RUN_PID=$!
    # Bash reports a job killed by a signal ("Aborted ...") on its stderr; the status says it already.
    {
        tail -n +1 -s 0.1 -f --pid="$TAP_RUN_PID" "$log" | sed -u "s|^|[$name] |"
        wait "$TAP_RUN_PID"
        rc=$?
    } 2>/dev/null
    # Whatever the test left running (a background runner it forgot) must not leak into the next test.
    kill -KILL -- "-$TAP_RUN_PID" 2>/dev/null
    TAP_RUN_PID=""
    tap_record "$name" "$log" "$rc" "$((SECONDS - started))"
    if [[ $(tail -n 1 "$SLUICE_TEST_RESULTS" | cut -f3) != 0 && $pglog_from -gt 0 ]]; then
        tap_server_log "$name" "$pglog_from"
    fi
    return 0
}

# tap_server_log NAME OFFSET: what the server logged since OFFSET, if anything (last 40 lines).
tap_server_log() {
    local excerpt
    excerpt=$(tail -c "+$(($2 + 1))" "$SLUICE_TEST_PGLOG" | tail -n 40)
    [[ -n $excerpt ]] || return 0
    printf '# --- %s: the server log while it ran (last 40 lines):\n' "$1"
    sed 's/^/#     /' <<<"$excerpt"
}

# tap_record NAME LOG RC SECONDS: count LOG's TAP lines, add file-level failures, append to the results.
# A file counts as failing, even with no "not ok" line, when it exits non-zero (a crash, a sanitizer
# report, a timeout), reports nothing, or runs a different number of tests than its plan says.
# A skipped test counts as a failure: in this suite nothing may be skipped for want of a server.
tap_record() {
    local name=$1 log=$2 rc=$3 secs=$4
    local oks skips not_oks plan passed failed note=""

    oks=$(grep -cE '^ok( |$)' "$log")
    skips=$(grep -cE '^ok( |$).*#[[:space:]]*[Ss][Kk][Ii][Pp]' "$log")
    not_oks=$(grep -cE '^not ok( |$)' "$log")
    plan=$(sed -nE 's/^1\.\.([0-9]+).*/\1/p' "$log" | tail -n 1)
    passed=$((oks - skips))
    failed=$((not_oks + skips))

    ((skips > 0)) && note+="$skips skipped (a skip counts as a failure); "
    if ((rc == 124 || rc == 137)); then
        note+="timed out after ${secs}s (limit ${SLUICE_TEST_TIMEOUT:-900}s); "
    elif ((rc != 0)); then
        note+="exited with status $rc; "
    fi
    if ((oks + not_oks == 0)); then
        note+="reported no test results (testing nothing is a failure); "
    elif [[ -z $plan ]]; then
        note+="printed no TAP plan (stopped early?); "
    elif ((plan != oks + not_oks)); then
        note+="plan says $plan tests but $((oks + not_oks)) ran; "
    fi
    # One extra failure for a broken file that reported no failing test itself, so it cannot pass unseen.
    if [[ -n $note && $failed -eq 0 ]]; then
        failed=1
    fi
    note=${note%; }
    printf '%s\t%d\t%d\t%d\t%s\n' "$name" "$passed" "$failed" "$secs" "$note" >>"$SLUICE_TEST_RESULTS"
    printf '# --- %s: %d passed, %d failed (%ds)%s\n' "$name" "$passed" "$failed" "$secs" "${note:+: $note}"
}

# tap_fail NAME NOTE: record a file that could not be run at all as one failure.
tap_fail() {
    printf '%s\t0\t1\t0\t%s\n' "$1" "$2" >>"$SLUICE_TEST_RESULTS"
    printf '# --- %s: not run: %s\n' "$1" "$2"
}
