#!/usr/bin/env bash
# rt/ is the ground floor: nothing in it includes or calls into sync/ or io/
# except through io/driver.h, the declared driver interface; io/ and sync/
# build on rt/ and never on each other. Checked on the includes of the
# sources and on the symbols the objects take from each other.
#
#   tests/layers_check.sh SOURCE_DIR OBJECT_DIR   (OBJECT_DIR: tern_obj.dir)
set -euo pipefail
src=$1 obj=$2
bad=0
complain() { echo "layers: $*"; bad=1; }

# includes
while IFS= read -r line; do
    complain "include crosses upward: $line"
done < <(grep -Hn '#include "\(io\|sync\)/' "$src"/rt/*.[ch] | grep -v '"io/driver.h"' || true)
while IFS= read -r line; do
    complain "io/ and sync/ include each other: $line"
done < <(grep -Hn '#include "sync/' "$src"/io/*.[ch]; grep -Hn '#include "io/' "$src"/sync/*.[ch] || true)
while IFS= read -r line; do
    complain "internal header included without its folder: $line"
done < <(grep -Hn '#include "[a-z_]*\.h"' "$src"/rt/*.[ch] "$src"/io/*.[ch] "$src"/sync/*.[ch] |
         grep -v '"tern\(_sync\|_io\)\?\.h"' || true)

# symbols
defined() { for o in "$obj/$1"/*.o; do nm --defined-only "$o" | awk '$2 ~ /[TDBR]/ {print $3}'; done | sort -u; }
defined io >"$obj/defs_io"
defined sync >"$obj/defs_sync"
for layer in rt io; do
    for o in "$obj/$layer"/*.o; do
        for s in $(nm -u "$o" | awk '{print $2}'); do
            if grep -qx "$s" "$obj/defs_sync"; then
                complain "$layer/$(basename "$o" .c.o) calls $s in sync/"
            elif [ "$layer" = rt ] && grep -qx "$s" "$obj/defs_io" &&
                 ! grep -qw "$s" "$src/io/driver.h"; then
                complain "rt/$(basename "$o" .c.o) calls $s in io/ outside io/driver.h"
            fi
        done
    done
done
for o in "$obj"/sync/*.o; do
    for s in $(nm -u "$o" | awk '{print $2}'); do
        grep -qx "$s" "$obj/defs_io" && complain "sync/$(basename "$o" .c.o) calls $s in io/"
    done
done
[ "$bad" -eq 0 ] && echo "layers: rt/ is the ground floor; io/ and sync/ stand on it alone"
exit "$bad"
