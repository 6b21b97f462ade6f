#!/usr/bin/env bash
# Installs what building tern needs on Debian 12, or says what is missing.
# Sourced by tests/run.sh and bench/run.sh.
tern_deps() {
    local need=(cmake gcc g++ make pkg-config liburing-dev libck-dev check "$@")
    local missing=()
    for p in "${need[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "== installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
            { echo "apt-get install ${missing[*]} failed" >&2; return 1; }
    else
        echo "tern needs these Debian packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
}
