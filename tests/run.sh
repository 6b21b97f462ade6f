#!/usr/bin/env bash
# The whole test suite: a plain build, a ThreadSanitizer build and an
# AddressSanitizer+UBSan build, each running every Check suite under ctest
# (the I/O suites once per backend). The address build is also the fault
# injection build (-DTERN_FAULTS=ON), which adds the fault suite. Exits
# non-zero when any suite fails.
#
#   tests/run.sh                 all three builds
#   tests/run.sh plain           only some: plain, thread, address
#   tests/run.sh --repeat N      flake hunt: the concurrency suites (ctest
#                                label "concurrency") N times each under
#                                ThreadSanitizer and ASan+UBSan, while a CPU
#                                hog runs on every core; stops at the first
#                                failure or hang. Name builds to pick others.
#
# A green run on a quiet machine proves little: run the flake hunt (say
# --repeat 50) before declaring concurrency code done.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
tern_deps clang-format

repeat=0
builds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat)
            [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] ||
                { echo "--repeat needs a count" >&2; exit 2; }
            repeat=$2
            shift 2
            ;;
        *) builds+=("$1"); shift ;;
    esac
done
if [ ${#builds[@]} -eq 0 ]; then
    if [ "$repeat" -gt 0 ]; then builds=(thread address); else builds=(plain thread address); fi
fi
jobs=$(nproc 2>/dev/null || echo 2)

# The hog: one busy loop per core, so the suites run preempted, as they do
# on a loaded CI machine. Each ends by its own pid, and at the latest after
# an hour on its own.
hogs=()
stop_hogs() {
    for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${hogs[@]}"; do wait "$p" 2>/dev/null || true; done
    hogs=()
}
trap stop_hogs EXIT
start_hogs() {
    for _ in $(seq "$jobs"); do
        timeout 3600 sh -c 'while :; do :; done' &
        hogs+=($!)
    done
}

failed=()
for b in "${builds[@]}"; do
    case "$b" in
        plain) san="" ;;
        thread|address) san="$b" ;;
        *) echo "unknown build '$b' (plain, thread, address)" >&2; exit 2 ;;
    esac
    dir="build-test-$b"
    echo "== $b build in $dir"
    # The address build also carries the fault seams (rt/fault.h): idle
    # unless configured, so every suite runs as usual, while the fault
    # suite drives them with ASan watching for leaks. Every build has the
    # bench programs: the servers suite runs the example servers.
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_SANITIZE="$san" \
        -DTERN_FAULTS=$([ "$b" = address ] && echo ON || echo OFF) \
        -DTERN_BUILD_BENCH=ON >/dev/null
    cmake --build "$dir" -j "$jobs" >/dev/null
    if [ "$repeat" -gt 0 ]; then
        echo "== flake hunt: concurrency suites x$repeat under a CPU hog on $jobs cores"
        start_hogs
        start=$(date +%s)
        # the soak test is bounded by time, not count: many short soaks
        export TERN_SOAK_SECS=${TERN_SOAK_SECS:-2}
        # a hang fails that run: every suite has a TIMEOUT of 600 s, and
        # Check's own per-test limit is shorter
        if ! (cd "$dir" && ctest -L concurrency --repeat until-fail:"$repeat" -j "$jobs" \
                  --output-on-failure); then
            failed+=("$b")
        fi
        stop_hogs
        echo "== $b: flake hunt took $(($(date +%s) - start)) s"
    elif ! (cd "$dir" && ctest --output-on-failure -j "$jobs"); then
        failed+=("$b")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED builds: ${failed[*]}"
    exit 1
fi
echo "all test builds passed: ${builds[*]}$([ "$repeat" -gt 0 ] && echo " (x$repeat, concurrency suites)")"
