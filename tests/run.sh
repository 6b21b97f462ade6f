#!/usr/bin/env bash
# The whole test suite: a plain build, a ThreadSanitizer build and an
# AddressSanitizer+UBSan build, each running every Check suite under ctest
# (the I/O suites once per backend). The address build is also the fault
# injection build (-DTERN_FAULTS=ON), which adds the fault suite. Exits
# non-zero when any suite fails.
#
#   tests/run.sh            all three builds
#   tests/run.sh plain      only some: plain, thread, address
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
tern_deps

builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(plain thread address)
jobs=$(nproc 2>/dev/null || echo 2)
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
    # suite drives them with ASan watching for leaks.
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_SANITIZE="$san" \
        -DTERN_FAULTS=$([ "$b" = address ] && echo ON || echo OFF) \
        -DTERN_BUILD_BENCH=$([ "$b" = plain ] && echo ON || echo OFF) >/dev/null
    cmake --build "$dir" -j "$jobs" >/dev/null
    if ! (cd "$dir" && ctest --output-on-failure -j "$jobs"); then
        failed+=("$b")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED builds: ${failed[*]}"
    exit 1
fi
echo "all test builds passed: ${builds[*]}"
