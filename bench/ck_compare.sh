#!/bin/sh
# Interleaved A/B comparison of one benchmark program built in several build
# trees (e.g. main and a variant with a part swapped for a concurrencykit
# structure). Runs A B C ... A B C ... ROUNDS times, so that a machine whose
# load drifts (a CPU hog, a test suite in the background) hits every variant
# alike, and prints per variant the median, the lower and upper quartile and
# the minimum of per_op_ns from the RESULT lines, over n runs.
#
# Usage: bench/ck_compare.sh [-n ROUNDS] [-w WORKLOAD] PROGRAM [ARGS...] -- BUILD_DIR...
#   bench/ck_compare.sh -n 15 spawn_many -- build build-variant
#   bench/ck_compare.sh spawn_many --workers 1 -- build build-variant
#   bench/ck_compare.sh -w ctxvar_set ctxvar -- build build-variant
# PROGRAM is looked up as BUILD_DIR/bench/PROGRAM. Build the trees in
# Release first. A program that prints several RESULT lines is read at the
# first one, or at the one of workload=WORKLOAD. The raw figures go to
# stderr as they come.
set -eu
rounds=9
workload='[^ ]*'
while [ $# -gt 0 ]; do
    case $1 in
    -n) rounds=$2; shift 2 ;;
    -w) workload=$2; shift 2 ;;
    *) break ;;
    esac
done
[ $# -ge 3 ] || {
    echo "usage: $0 [-n ROUNDS] [-w WORKLOAD] PROGRAM [ARGS...] -- BUILD_DIR..." >&2
    exit 2
}
prog=$1
shift
args=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    args="$args $1"
    shift
done
[ "${1:-}" = "--" ] || { echo "$0: missing -- before the build dirs" >&2; exit 2; }
shift
for d in "$@"; do
    [ -x "$d/bench/$prog" ] || { echo "$0: no $d/bench/$prog" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
r=1
while [ "$r" -le "$rounds" ]; do
    i=0
    for d in "$@"; do
        # shellcheck disable=SC2086 # args are words on purpose
        ns=$("$d/bench/$prog" $args 2>/dev/null |
             sed -n "s/^RESULT workload=$workload .* per_op_ns=\([0-9.]*\).*/\1/p" | head -n 1)
        [ -n "$ns" ] || { echo "$0: $d/bench/$prog printed no RESULT" >&2; exit 1; }
        echo "$ns" >>"$tmp/$i"
        echo "round $r $d $ns" >&2
        i=$((i + 1))
    done
    r=$((r + 1))
done
[ "$workload" = '[^ ]*' ] || args="$args (workload=$workload)"
echo "$prog$args: per_op_ns over $rounds interleaved rounds"
printf '%-40s %8s %8s %8s %8s\n' build median q1 q3 min
i=0
for d in "$@"; do
    sort -g "$tmp/$i" | awk -v d="$d" '{ v[NR] = $1 }
        END { n = NR
              med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
              printf "%-40s %8.2f %8.2f %8.2f %8.2f\n", d, med,
                     v[int((n + 3) / 4)], v[int((3 * n + 3) / 4)], v[1] }'
    i=$((i + 1))
done
