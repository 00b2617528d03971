#!/usr/bin/env bash
# test_layers.sh: no folder includes a header of a folder above it (README "Development": the layers).
#
# The layers, top to bottom; a file may include the headers of its own folder and of any folder
# ranked below it, never of one ranked above it or beside it (the same rank):
#
#   6 cli          runner/cli/          include/sluice/cli/
#   5 engine       runner/engine/       include/sluice/engine/
#   4 services     runner/services/     include/sluice/services/     (beside the engine, below it)
#   3 db           runner/db/           include/sluice/db/
#   2 jobs         jobs/                include/sluice/jobs/         (jobs and checkpoints side by side)
#   2 checkpoints  checkpoints/         include/sluice/checkpoints/
#   1 base         runner/base/         include/sluice/base/
#
# A private header (`#include "up_internal.h"`) must sit in the including file's own folder.
# tests/meson.build copies this script into the build as test_layers, so tests/run.sh finds it beside
# the C unit tests. It prints TAP; the second test plants a forbidden include in a copy of the tree
# and checks that the first test's check names it.
set -uo pipefail

ROOT=${SLUICE_ROOT:-@SOURCE_ROOT@}

declare -A RANK=([cli]=6 [engine]=5 [services]=4 [db]=3 [jobs]=2 [checkpoints]=2 [base]=1)

# folder_of PATH: the layer a source or header belongs to (relative to the root), or "" for none.
folder_of() {
    case $1 in
    runner/*/*) local rest=${1#runner/} && echo "${rest%%/*}" ;;
    include/sluice/*/*) local rest=${1#include/sluice/} && echo "${rest%%/*}" ;;
    jobs/*) echo jobs ;;
    checkpoints/*) echo checkpoints ;;
    *) echo "" ;;
    esac
}

# check_tree DIR: print one line per forbidden include under DIR ("file:line: ..."), nothing when none.
check_tree() {
    local dir=$1 file rel from lineno target to
    while IFS= read -r file; do
        rel=${file#"$dir"/}
        from=$(folder_of "$rel")
        if [[ -z $from || -z ${RANK[$from]:-} ]]; then
            echo "$rel: a source outside the layers (hint: move it into one of: ${!RANK[*]})"
            continue
        fi
        while IFS=: read -r lineno target; do
            if [[ $target == sluice/* ]]; then
                to=$(folder_of "include/$target")
                if [[ -z $to || -z ${RANK[$to]:-} || ! -f $dir/include/$target ]]; then
                    echo "$rel:$lineno: includes \"$target\", which is no header of a layer"
                elif [[ $to != "$from" ]] && ((RANK[$to] >= RANK[$from])); then
                    echo "$rel:$lineno: $from includes $to (\"$target\"): $to is not below $from"
                fi
            elif [[ ! -f $(dirname "$file")/$target ]]; then
                echo "$rel:$lineno: includes the private header \"$target\" of another folder"
            fi
        done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" |
            sed -E 's/^([0-9]+):[^"]*"([^"]*)".*/\1:\2/')
    done < <(find "$dir/runner" "$dir/jobs" "$dir/checkpoints" "$dir/include/sluice" -name '*.[ch]' -o -name '*.inc' |
        sort)
}

echo "1..2"

bad=$(check_tree "$ROOT")
nfiles=$(find "$ROOT/runner" "$ROOT/jobs" "$ROOT/checkpoints" "$ROOT/include/sluice" -name '*.[ch]' | wc -l)
if [[ -z $bad && $nfiles -gt 0 ]]; then
    echo "ok 1 - no folder includes one above it ($nfiles files)"
else
    echo "not ok 1 - forbidden includes (a lower layer reaches up; hint: move the code down, or pass what it needs in)"
    [[ $nfiles -gt 0 ]] || echo "#   no source found under $ROOT"
    printf '%s\n' "$bad" | sed 's/^/#   /'
fi

# The check bites: a copy of the tree where base includes the engine's header must fail, naming it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$ROOT/runner" "$ROOT/jobs" "$ROOT/checkpoints" "$ROOT/include" "$tmp/"
printf '#include "sluice/engine/run.h"\n' >>"$tmp/runner/base/util.c"
planted=$(check_tree "$tmp")
if grep -q '^runner/base/util.c:[0-9]*: base includes engine ("sluice/engine/run.h")' <<<"$planted"; then
    echo "ok 2 - a planted include of the engine in base is named"
else
    echo "not ok 2 - a planted include of the engine in base went unnoticed"
    printf '%s\n' "$planted" | sed 's/^/#   /'
fi
