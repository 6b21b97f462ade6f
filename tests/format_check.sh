#!/usr/bin/env bash
# Hygiene the compiler does not check:
#  - every C source is laid out as .clang-format says (clang-format
#    --dry-run --Werror; run `clang-format -i FILE` to fix one);
#  - the macros and enum constants of the internal headers carry the
#    TERN__ prefix, so none can be taken for public API or collide with a
#    user's; only header guards and the build's own switches (TERN_TSAN,
#    TERN_ASAN, TERN_FAULTS) keep TERN_.
# Exits 77 (skipped) without clang-format.
#
#   tests/format_check.sh SOURCE_DIR
set -euo pipefail
cd "$1"
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 77; }
bad=0
mapfile -t files < <(find bench rt io sync tests -name '*.[ch]' -o -name '*.cpp' | sort)
clang-format --dry-run --Werror "${files[@]}" || bad=1

internal=$(ls rt/*.h io/*.h sync/*.h | grep -v '/tern\(_sync\|_io\)\?\.h$')
while IFS= read -r hit; do
    echo "format: internal name without the TERN__ prefix: $hit"
    bad=1
done < <(
    # #define NAME, and the constants of enums (one per line or several)
    for h in $internal; do
        grep -Hn '^#define [A-Za-z_]' "$h" | awk -v F="$h" '{split($0, a, " "); print F ": " a[2]}'
        awk -v F="$h" '/^(typedef )?enum/ {e = 1} e {print F ": " $0} /}/ {e = 0}' "$h" |
            grep -oE '^[^:]+: .*' | sed -E 's/\/\*.*//' |
            grep -oE '^[^:]+:|\b[A-Z][A-Z0-9_]+\b' | awk '/:$/ {f = $0; next} {print f " " $0}'
    done | sed -E 's/\(.*//' |
        grep -vE ': (tern__[a-z0-9_]+|TERN__[A-Z0-9_]+|TERN_[A-Z0-9_]*_H|TERN_TSAN|TERN_ASAN|TERN_FAULTS)$' || true
)
exit $bad
