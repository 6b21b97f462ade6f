#!/usr/bin/env bash
# tern's benchmark suite (see bench-contract.md). From the repository root:
#
#   bench/run.sh                      build (Release, build-bench/) and run every
#                                     workload REPS times; print a markdown table
#   bench/run.sh spawn_many timers    only these workloads
#   bench/run.sh ctxvars              context variables and generators, tern
#                                     beside CPython (see below); not in the
#                                     default set
#   bench/run.sh observe              the cost of the stall watchdog and the
#                                     poll-time histogram: the core workloads
#                                     with TERN_WATCHDOG=100 TERN_METRICS=1 and
#                                     without, interleaved; not in the default set
#   bench/run.sh --peers [workload...]
#                                     run tern beside Tokio and Go (and any other
#                                     peer) with the peer harness of PEERS_DIR, in
#                                     one table with ratios to tern
#
# Servers: tcp_echo and http run on both I/O backends (TERN_BACKEND=io_uring
# and =epoll), each run a fresh server on a free 127.0.0.1 port, stopped with
# SIGTERM afterwards; a run fails unless the server then exits 0.
#  - tcp_echo (bench-contract.md): driven by bench/loadgen (TCP_CONNS
#    connections, one 64-byte request in flight on each, every echo checked):
#    an unmeasured TCP_WARMUP_SECS session, then the measured one (0.5 s
#    warm-up, TCP_SECS s). Rows "tcp_echo (io_uring)" and "tcp_echo (epoll)":
#    requests/s, p50 and p99 latency. With --peers the harness runs it with
#    its own load generator, tern as two columns, tern-uring and tern-epoll,
#    and the ratios are to tern-uring (the other workloads of that run get the
#    same two columns).
#  - http: bench/http (keep-alive "Hello, World!") loaded with
#    `wrk -t$HTTP_THREADS -c$HTTP_CONNS -d${HTTP_SECS}s --latency` after an
#    unmeasured HTTP_WARMUP_SECS session; any socket error or non-2xx answer
#    fails the run. Needs wrk (Debian package `wrk`, installed with the
#    build dependencies when run as root), else it is skipped with
#    a note. With --peers the harness runs it with its own wrk settings,
#    beside hyper on Tokio, Go net/http, nginx and h2o, tern as tern-uring
#    and tern-epoll.
#
# Workloads: those of bench-contract.md, plus tern's own `mutex`: a root task
# spawns T tasks (default 100) that each increment one shared plain counter
# I times (default 10000) under one mutex, lock / increment / unlock per
# iteration, and joins them; one op = one lock + unlock; check: counter ==
# T*I. The peer harness does not know it, so with --peers this script builds
# and runs the peers' versions itself, REPS times interleaved with tern's:
# bench/peers/tokio_mutex.rs (tokio::sync::Mutex, built as src/bin/mutex.rs
# of the harness's Tokio crate) and bench/peers/go_mutex.go (sync.Mutex,
# GOMAXPROCS=2); their runs join the harness's in one report.
#
# The ctxvars group: bench/ctxvar (ctxvar_get and ctxvar_set with 1 and 100
# variables set, context_copy with 1, 100 and 10000), bench/gen (gen_handoff:
# one item through a generator, N = GEN_N) and bench/peers/py_ctx.py (the same
# in CPython with contextvars and an async generator, run with CPYTHON when
# it exists, else skipped), REPS times interleaved; each program prints a
# RESULT line per measurement. Its table: median ns/op of tern and CPython
# per measurement and their ratio. With --peers it runs after the harness,
# as http does (the harness does not know it).
#
# Environment (all optional):
#   REPS=5              runs per workload; each cell is the median
#   WORKERS=N           pass --workers N to tern's programs (default: theirs, 2)
#   RUN_TIMEOUT=180     seconds per run
#   BUILD_DIR=build-bench
#   PEERS=1             same as --peers
#   PEERS_DIR=../shared/peers   where the peer harness lives
#   PEER_RUNTIMES="tokio go"    the harness's built-in peers to run beside tern
#                               (it knows tokio go libuv asyncio uvloop nginx
#                               h2o); unset, http adds nginx and h2o
#   sizes, as in the peer harness: SPAWN_N YIELD_T YIELD_Y PP_R PP_H CHAIN_D
#   TIMERS_K TIMERS_MAX_MS MPSC_P MPSC_M MPSC_CAP IDLE_K; and MUTEX_T MUTEX_I
#   ctxvars: GEN_N=1000000 (items, both runtimes), CPYTHON=/usr/bin/python3
#   servers: TCP_CONNS=50 TCP_SECS=5 TCP_WARMUP_SECS=1 (also passed to the
#   harness); HTTP_CONNS=50 HTTP_SECS=5 HTTP_WARMUP_SECS=1 HTTP_THREADS=1
#
# Build dependencies (Debian packages): cmake gcc make pkg-config liburing-dev
# libck-dev check, python3 for the table, and wrk for http. Run as root, the
# script installs the missing ones with apt-get; otherwise it names them and
# exits 1 (for wrk alone it names it and skips http).
#
# Exit status: 0 when every run succeeded, 1 when a run failed (lost or
# duplicated work, a crash, a timeout) or the build did, 2 for bad arguments.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPS=${REPS:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
BUILD_DIR=${BUILD_DIR:-build-bench}
case $BUILD_DIR in /*) BUILD=$BUILD_DIR ;; *) BUILD=$ROOT/$BUILD_DIR ;; esac
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
PEER_RUNTIMES_SET=${PEER_RUNTIMES:+1}
PEER_RUNTIMES=${PEER_RUNTIMES:-tokio go}
WORKERS=${WORKERS:-}

TERN_WORKLOADS=(spawn_many yield_many ping_pong chained_spawn timers mpsc mutex idle_tasks tcp_echo
	http)
KNOWN_WORKLOADS=("${TERN_WORKLOADS[@]}" ctxvars observe) # these two: only when named
OBSERVE_WORKLOADS=(spawn_many yield_many chained_spawn ping_pong mpsc)
GEN_N=${GEN_N:-1000000}
CPYTHON=${CPYTHON:-/usr/bin/python3}
BACKENDS=(io_uring epoll)
TCP_CONNS=${TCP_CONNS:-50}
TCP_SECS=${TCP_SECS:-5}
TCP_WARMUP_SECS=${TCP_WARMUP_SECS:-1}
HTTP_CONNS=${HTTP_CONNS:-50}
HTTP_SECS=${HTTP_SECS:-5}
HTTP_WARMUP_SECS=${HTTP_WARMUP_SECS:-1}
HTTP_THREADS=${HTTP_THREADS:-1}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

want_peers=0
case ${PEERS:-} in 1 | yes | true) want_peers=1 ;; esac
workloads=()
for a in "$@"; do
	case $a in
	--peers) want_peers=1 ;;
	-h | --help) usage ;;
	-*) echo "bench/run.sh: unknown option '$a'" >&2; usage ;;
	*)
		if [[ " ${KNOWN_WORKLOADS[*]} " != *" $a "* ]]; then
			echo "bench/run.sh: unknown workload '$a' (know: ${KNOWN_WORKLOADS[*]})" >&2
			exit 2
		fi
		workloads+=("$a")
		;;
	esac
done
[ ${#workloads[@]} -gt 0 ] || workloads=("${TERN_WORKLOADS[@]}")
if ! [[ $REPS =~ ^[1-9][0-9]*$ ]]; then
	echo "bench/run.sh: REPS must be a positive integer" >&2
	exit 2
fi
for v in WORKERS GEN_N TCP_CONNS TCP_SECS HTTP_CONNS HTTP_SECS HTTP_THREADS; do
	if [ -n "${!v}" ] && ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
		echo "bench/run.sh: $v must be a positive integer" >&2
		exit 2
	fi
done
for v in TCP_WARMUP_SECS HTTP_WARMUP_SECS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
		echo "bench/run.sh: $v must be a whole number of seconds" >&2
		exit 2
	fi
done

log() { echo "bench/run.sh: $*" >&2; }

# ---- 1. build dependencies ---------------------------------------------------

have_cmd_pkg() { # PACKAGE COMMAND
	command -v "$2" >/dev/null 2>&1
}
have_lib_pkg() { # PACKAGE PKG-CONFIG-NAME
	if command -v dpkg-query >/dev/null 2>&1; then
		dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' && return 0
	fi
	command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$2"
}

missing=()
have_cmd_pkg cmake cmake || missing+=(cmake)
have_cmd_pkg gcc gcc || missing+=(gcc)
have_cmd_pkg make make || missing+=(make)
have_cmd_pkg pkg-config pkg-config || missing+=(pkg-config)
have_cmd_pkg python3 python3 || missing+=(python3)
have_lib_pkg liburing-dev liburing || missing+=(liburing-dev)
have_lib_pkg libck-dev ck || missing+=(libck-dev)
have_lib_pkg check check || missing+=(check)
# wrk loads the http workload: installed like the rest, but without it (and
# without root) the other workloads still run and http says it was skipped.
optional=()
have_cmd_pkg wrk wrk || optional+=(wrk)
if [ "$(id -u)" -ne 0 ]; then
	if [ ${#missing[@]} -gt 0 ]; then
		log "missing build dependencies: ${missing[*]}"
		log "install them (as root): apt-get install ${missing[*]} ${optional[*]}"
		exit 1
	fi
	[ ${#optional[@]} -eq 0 ] ||
		log "not installed: ${optional[*]} (apt-get install ${optional[*]}); http will be skipped"
elif [ $((${#missing[@]} + ${#optional[@]})) -gt 0 ]; then
	log "installing ${missing[*]} ${optional[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" "${optional[@]}"
fi
PY=$(command -v python3)

# ---- 2. Release build in build-bench/ ------------------------------------------

log "building tern (Release) in $BUILD"
mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTERN_BUILD_TESTS=OFF \
	-DTERN_BUILD_BENCH=ON -DTERN_SANITIZE= >"$BUILD/configure.log" 2>&1 || {
	cat "$BUILD/configure.log" >&2
	log "cmake configure failed"
	exit 1
}
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >&2 || {
	log "build failed"
	exit 1
}
BIN=$BUILD/bench

sizes_for() {
	case $1 in
	spawn_many) echo "${SPAWN_N:-1000000}" ;;
	yield_many) echo "${YIELD_T:-200} ${YIELD_Y:-1000}" ;;
	ping_pong) echo "${PP_R:-1000} ${PP_H:-100}" ;;
	chained_spawn) echo "${CHAIN_D:-1000000}" ;;
	timers) echo "${TIMERS_K:-100000} ${TIMERS_MAX_MS:-50}" ;;
	mpsc) echo "${MPSC_P:-4} ${MPSC_M:-250000} ${MPSC_CAP:-1024}" ;;
	mutex) echo "${MUTEX_T:-100} ${MUTEX_I:-10000}" ;;
	idle_tasks) echo "${IDLE_K:-100000}" ;;
	esac
}

# ---- servers: tcp_echo and http on each backend ------------------------------------
# run_servers WORKLOAD appends one record per run to $SRAW and keeps every
# output in $SLOGS; server_report prints their table.

wflags=()
[ -z "$WORKERS" ] || wflags=(--workers "$WORKERS")

free_port() { # the kernel's pick of a free 127.0.0.1 port
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server WORKLOAD BACKEND LOG: starts it in the background (SPID, PORT)
# and waits until it says it listens; returns 1 if it does not within 5 s.
start_server() {
	PORT=$(free_port)
	TERN_BACKEND=$2 timeout "$RUN_TIMEOUT" "$BIN/$1" ${wflags[@]+"${wflags[@]}"} "$PORT" \
		"$RUN_TIMEOUT" >"$3.server.out" 2>"$3.server.err" &
	SPID=$!
	for _ in $(seq 100); do
		grep -q '^INFO .* listening' "$3.server.out" 2>/dev/null && return 0
		kill -0 "$SPID" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# stop_server: SIGTERM; the server must then exit 0 (a clean stop).
stop_server() {
	kill -TERM "$SPID" 2>/dev/null || true
	wait "$SPID"
}

# drive_WORKLOAD PORT LOG: the load sessions; the measured RESULT goes to LOG.out.
drive_tcp_echo() {
	if [ "$TCP_WARMUP_SECS" -gt 0 ]; then
		"$BIN/loadgen" --port "$1" --conns "$TCP_CONNS" --secs "$TCP_WARMUP_SECS" \
			--warmup-ms 0 >"$2.warmup.out" 2>"$2.err" || return
	fi
	"$BIN/loadgen" --port "$1" --conns "$TCP_CONNS" --secs "$TCP_SECS" >"$2.out" 2>"$2.err"
}
drive_http() {
	local url=http://127.0.0.1:$1/
	if [ "$HTTP_WARMUP_SECS" -gt 0 ]; then
		wrk -t"$HTTP_THREADS" -c"$HTTP_CONNS" -d"${HTTP_WARMUP_SECS}s" "$url" \
			>"$2.warmup.out" 2>"$2.err" || return
	fi
	wrk -t"$HTTP_THREADS" -c"$HTTP_CONNS" -d"${HTTP_SECS}s" --latency "$url" >"$2.wrk" 2>"$2.err" ||
		return
	wrk_result "$2.wrk" >"$2.out" 2>>"$2.err"
}

# wrk's report as a RESULT line in the loadgen's keys; fails on any socket
# error or non-2xx/3xx answer, or when a figure is missing.
wrk_result() {
	"$PY" - "$1" "$HTTP_CONNS" "$HTTP_SECS" <<'PYEOF'
import re
import sys

text = open(sys.argv[1]).read()
scale = {"us": 1, "ms": 1e3, "s": 1e6}


def latency(pct):
    m = re.search(r"^\s*%s%%\s+([0-9.]+)(us|ms|s)\s*$" % pct, text, re.M)
    return float(m.group(1)) * scale[m.group(2)] if m else None


rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
total = re.search(r"^\s*(\d+) requests in ", text, re.M)
p50, p99 = latency(50), latency(99)
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors += int(bad.group(1)) if bad else 0
if None in (rps, total, p50, p99) or errors:
    sys.exit("wrk: %s" % ("%d errors" % errors if errors else "unexpected output"))
print(f"RESULT workload=http runtime=tern conns={sys.argv[2]} secs={sys.argv[3]} "
      f"req_per_s={float(rps.group(1)):.0f} p50_us={p50:.0f} p99_us={p99:.0f} "
      f"requests={total.group(1)} errors=0")
PYEOF
}

# run_servers WORKLOAD: REPS runs on each backend, interleaved.
run_servers() {
	local w=$1 be rep log rc src line
	if [ "$w" = http ] && ! command -v wrk >/dev/null 2>&1; then
		echo "RUN workload=http backend=- rep=0 status=na note=no-wrk" >>"$SRAW"
		log "  http: skipped: wrk is not installed (Debian package wrk)"
		return 0
	fi
	for rep in $(seq "$REPS"); do
		for be in "${BACKENDS[@]}"; do
			log=$SLOGS/$w.$be.$rep
			rc=0 src=0
			if start_server "$w" "$be" "$log"; then
				"drive_$w" "$PORT" "$log" || rc=$?
				stop_server || src=$?
				[ "$src" = 0 ] || [ "$rc" != 0 ] || rc=server-exit-$src
			else
				rc=no-listen
				kill "$SPID" 2>/dev/null || true
				wait "$SPID" 2>/dev/null || true
			fi
			line=$(grep '^RESULT ' "$log.out" 2>/dev/null | tail -n 1 || true)
			if [ "$rc" = 0 ] && [ -n "$line" ]; then
				echo "RUN workload=$w backend=$be rep=$rep status=ok $line" >>"$SRAW"
				log "  $w ($be) $rep/$REPS: $(echo "$line" | grep -oE '(req_per_s|p99_us)=[0-9.]+' | tr '\n' ' ')"
			else
				failed=1
				echo "RUN workload=$w backend=$be rep=$rep status=fail rc=$rc" >>"$SRAW"
				log "  $w ($be) $rep/$REPS: FAILED (rc=$rc): $(cat "$log.err" "$log.server.err" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
			fi
		done
	done
}

# server_report: the markdown table of $SRAW, a row per workload and backend.
server_report() {
	"$PY" - "$SRAW" "$TCP_CONNS" "$TCP_SECS" "$TCP_WARMUP_SECS" \
		"wrk -t$HTTP_THREADS -c$HTTP_CONNS -d${HTTP_SECS}s (+${HTTP_WARMUP_SECS} s warm-up session)" <<'PYEOF'
import statistics
import sys

raw, conns, secs, warm, wrk = sys.argv[1:]
rows = {}  # (workload, backend) -> list of dicts
for line in open(raw):
    kv = {}
    for t in line.split()[1:]:
        k, _, v = t.partition("=")
        kv.setdefault(k, v)
    rows.setdefault((kv["workload"], kv["backend"]), []).append(kv)


def med(runs, key):
    vals = [float(r[key]) for r in runs if key in r]
    return statistics.median(vals) if vals else None


print("| server | req/s | spread | p50 µs | p99 µs | runs ok |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for (w, be), runs in rows.items():
    if be == "-":
        print(f"| {w} | skipped: wrk is not installed | | | | |")
        continue
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        print(f"| {w} ({be}) | failed | | | | 0/{len(runs)} |")
        continue
    rps = [float(r["req_per_s"]) for r in ok]
    m = statistics.median(rps)
    spread = f"{(max(rps) - min(rps)) / m * 100:.0f} %" if len(rps) > 1 and m else ""
    print(f"| {w} ({be}) | {m:.0f} | {spread} | {med(ok, 'p50_us'):.0f} | "
          f"{med(ok, 'p99_us'):.0f} | {len(ok)}/{len(runs)} |")
print()
ran = {w for (w, be) in rows if be != "-"}
how = {"tcp_echo": f"tcp_echo: bench/loadgen, {conns} connections, 64-byte requests, "
                   f"{secs} s measured after a {warm} s warm-up session. ",
       "http": f"http: {wrk}. "}
print("Medians over the successful runs; spread is (max - min) / median of req/s. "
      + "".join(how[w] for w in ("tcp_echo", "http") if w in ran)
      + "Load generator and server share the machine's cores.")
PYEOF
}

# ---- the ctxvars group: tern's ctxvar and gen beside CPython's py_ctx.py -----------
# run_ctxvars appends one record per RESULT line (or per failed run) to $CRAW;
# ctxvars_report prints their table.

run_ctxvars() {
	local rep prog out rc
	local -a cmd
	[ -x "$CPYTHON" ] || log "  ctxvars: no $CPYTHON: tern only"
	for rep in $(seq "$REPS"); do
		for prog in ctxvar gen py_ctx; do
			case $prog in
			ctxvar) cmd=("$BIN/ctxvar" ${wflags[@]+"${wflags[@]}"}) ;;
			gen) cmd=("$BIN/gen" ${wflags[@]+"${wflags[@]}"} "$GEN_N") ;;
			py_ctx)
				[ -x "$CPYTHON" ] || continue
				cmd=("$CPYTHON" "$ROOT/bench/peers/py_ctx.py" 2000000 1000000 2000000 "$GEN_N")
				;;
			esac
			out=$CLOGS/$prog.$rep
			rc=0
			timeout "$RUN_TIMEOUT" "${cmd[@]}" >"$out.out" 2>"$out.err" || rc=$?
			if [ $rc -eq 0 ] && grep -q '^RESULT ' "$out.out"; then
				sed -n "s/^RESULT /RUN prog=$prog rep=$rep status=ok /p" "$out.out" >>"$CRAW"
				log "  $prog $rep/$REPS: $(grep -c '^RESULT ' "$out.out") measurements"
			else
				failed=1
				echo "RUN prog=$prog rep=$rep status=fail rc=$rc" >>"$CRAW"
				log "  $prog $rep/$REPS: FAILED (rc=$rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
			fi
		done
	done
}

ctxvars_report() {
	"$PY" - "$CRAW" "$GEN_N" <<'PYEOF'
import statistics
import sys

rows, fails = {}, []  # (workload, vars) -> runtime -> [per_op_ns]
for line in open(sys.argv[1]):
    kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
    if kv["status"] != "ok":
        fails.append(f"{kv['prog']} run {kv['rep']} (rc={kv.get('rc')})")
        continue
    key = (kv["workload"], kv.get("vars", ""))
    rows.setdefault(key, {}).setdefault(kv["runtime"], []).append(float(kv["per_op_ns"]))

print("| measurement | tern ns/op | CPython ns/op | CPython / tern |")
print("| --- | ---: | ---: | ---: |")
for (w, nv), by in rows.items():
    t, c = (statistics.median(by[r]) if r in by else None for r in ("tern", "cpython"))
    name = f"{w} (vars={nv})" if nv else w
    ratio = f"{c / t:.2f}" if t and c else ""
    print(f"| {name} | {'' if t is None else f'{t:.2f}'} | "
          f"{'' if c is None else f'{c:.2f}'} | {ratio} |")
print()
print(f"Medians of each program's runs. gen_handoff: N={sys.argv[2]} items. A ratio above "
      "1.00 means tern is faster. CPython's figures include its `for` loop (see the INFO "
      "line of py_ctx.py's output).")
if fails:
    print()
    print("Failed runs: " + ", ".join(fails))
PYEOF
}

# ---- the observe group: watchdog and metrics on against off ----------------------
# run_observe appends one record per run to $ORAW; observe_report prints the
# medians and the overhead of "on".

run_observe() {
	local rep w mode out rc line
	local -a sizes envs
	for w in "${OBSERVE_WORKLOADS[@]}"; do
		read -r -a sizes <<<"$(sizes_for "$w")"
		for rep in $(seq "$REPS"); do
			for mode in off on; do
				envs=()
				[ $mode = off ] || envs=(TERN_WATCHDOG=100 TERN_METRICS=1)
				out=$OLOGS/observe.$w.$mode.$rep
				rc=0
				env ${envs[@]+"${envs[@]}"} timeout "$RUN_TIMEOUT" "$BIN/$w" \
					${wflags[@]+"${wflags[@]}"} "${sizes[@]}" >"$out.out" 2>"$out.err" || rc=$?
				line=$(grep '^RESULT ' "$out.out" | tail -n 1 || true)
				if [ $rc -eq 0 ] && [ -n "$line" ]; then
					echo "RUN mode=$mode rep=$rep status=ok ${line#RESULT }" >>"$ORAW"
					log "  observe $w $mode $rep/$REPS: $(echo "$line" | grep -oE 'per_op_ns=[0-9.]+')"
				else
					failed=1
					echo "RUN mode=$mode rep=$rep status=fail workload=$w rc=$rc" >>"$ORAW"
					log "  observe $w $mode $rep/$REPS: FAILED (rc=$rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
				fi
			done
		done
	done
}

observe_report() {
	"$PY" - "$ORAW" <<'PYEOF'
import statistics
import sys

by = {}  # workload -> mode -> [per_op_ns]
order = []
for line in open(sys.argv[1]):
    kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
    if kv["status"] != "ok":
        continue
    w = kv["workload"]
    if w not in by:
        by[w] = {}
        order.append(w)
    by[w].setdefault(kv["mode"], []).append(float(kv["per_op_ns"]))
print("| workload | off ns/op | on ns/op | on / off | runs |")
print("| --- | ---: | ---: | ---: | ---: |")
for w in order:
    off, on = (by[w].get(m, []) for m in ("off", "on"))
    if not off or not on:
        continue
    a, b = statistics.median(off), statistics.median(on)
    print(f"| {w} | {a:.2f} | {b:.2f} | {b / a:.3f} | {len(off)}+{len(on)} |")
print()
print("on: TERN_WATCHDOG=100 (the stall watchdog's monitor thread, 100 ms threshold) and "
      "TERN_METRICS=1 (one poll in 64 timed into the histogram); off: neither (the "
      "counters are always kept). Medians of interleaved runs; on / off above 1 is the cost.")
PYEOF
}

# ---- 4. with --peers: the peer harness, tern as one more column ------------------

if [ $want_peers -eq 1 ]; then
	if [ ! -d "$PEERS_DIR" ] || [ ! -x "$PEERS_DIR/run.sh" ]; then
		log "no peer harness at $PEERS_DIR (set PEERS_DIR to the folder holding setup.sh and run.sh)"
		exit 1
	fi
	case $BIN in *' '*)
		log "the peer harness splits command templates on spaces: build path '$BIN' has one"
		exit 1
		;;
	esac
	# mutex, ctxvars and observe are tern's own groups, unknown to the
	# harness: it runs the contract's workloads and http, this script the rest
	harness_workloads=()
	run_mutex=0
	run_ctx=0
	run_obs=0
	for w in "${workloads[@]}"; do
		case $w in
		mutex) run_mutex=1 ;;
		ctxvars) run_ctx=1 ;;
		observe) run_obs=1 ;;
		*) harness_workloads+=("$w") ;;
		esac
	done
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/tern-peers.XXXXXX")
	if [ ${#harness_workloads[@]} -gt 0 ] || [ $run_mutex -eq 1 ]; then
		log "copying the peer harness $PEERS_DIR to $tmp"
		cp -r "$PEERS_DIR/." "$tmp/"
		rm -rf "$tmp/logs" # runs copied from PEERS_DIR: this run's logs are then alone there
		# setup.sh builds every src/bin/*.rs of the Tokio crate, so ours with them
		[ $run_mutex -eq 0 ] || cp "$ROOT/bench/peers/tokio_mutex.rs" "$tmp/tokio/src/bin/mutex.rs"
		log "setting up the peers ($tmp/setup.sh; installs Debian packages, so needs root the first time)"
		if ! (cd "$tmp" && ./setup.sh) >&2; then
			log "peer setup failed (as a non-root user, install the packages it names first)"
			exit 1
		fi
	fi
	GO=${GO:-$(command -v go || echo /usr/lib/go-1.19/bin/go)}
	if [ $run_mutex -eq 1 ] && ! (cd "$tmp" && GOPROXY=off GOFLAGS=-mod=mod GO111MODULE=on \
		"$GO" build -o "$tmp/go/bin/mutex" "$ROOT/bench/peers/go_mutex.go") >&2; then
		log "building bench/peers/go_mutex.go failed"
		exit 1
	fi
	tmpl="$BIN/{w}"
	[ -z "$WORKERS" ] || tmpl="$tmpl --workers $WORKERS"
	# tern's columns: one per backend when a server runs, else one (auto)
	declare -A tern_tmpl=([tern]="$tmpl")
	tern_cols=(tern)
	if [[ " ${harness_workloads[*]} " == *" http "* ]] && [ -z "$PEER_RUNTIMES_SET" ]; then
		PEER_RUNTIMES="$PEER_RUNTIMES nginx h2o"
	fi
	if [[ " ${harness_workloads[*]} " == *" tcp_echo "* ]] ||
		[[ " ${harness_workloads[*]} " == *" http "* ]]; then
		tern_tmpl=([tern-uring]="env TERN_BACKEND=io_uring $tmpl"
			[tern-epoll]="env TERN_BACKEND=epoll $tmpl")
		tern_cols=(tern-uring tern-epoll)
	fi
	extra=""
	for c in "${tern_cols[@]}"; do extra+="${extra:+;}$c=${tern_tmpl[$c]}"; done
	ratio_to=${tern_cols[0]}
	rc=0
	t_start=$(date +%s)

	# tern_only NAME LOGVAR RAWVAR WHAT TITLE RUN REPORT: one of tern's own
	# groups, which the harness does not know, run after it into the report
	tern_only() {
		local dir=$tmp/$1-logs
		mkdir -p "$dir"
		: >"$dir/raw.txt"
		printf -v "$2" '%s' "$dir"
		printf -v "$3" '%s' "$dir/raw.txt"
		failed=0
		log "running $1: $4; reps $REPS"
		$6
		[ $failed -eq 0 ] || rc=1
		{
			echo
			echo "## $5"
			echo
			$7
		} >>"$tmp/report.md"
	}

	# ctxvars, observe, then the report
	finish_peers() {
		[ $run_ctx -eq 0 ] || tern_only ctxvars CLOGS CRAW "tern and CPython" \
			"context variables and generators: tern and CPython" run_ctxvars ctxvars_report
		[ $run_obs -eq 0 ] || tern_only observe OLOGS ORAW \
			"tern with and without the watchdog and metrics" \
			"tern's watchdog and metrics: on against off" run_observe observe_report
		cat "$tmp/report.md"
		log "report: $tmp/report.md; every run's output: $tmp/logs/ $tmp/*-logs/"
		exit "$rc"
	}

	if [ ${#harness_workloads[@]} -gt 0 ]; then
		log "running the harness: peers $PEER_RUNTIMES + ${tern_cols[*]}; workloads ${harness_workloads[*]}; reps $REPS"
		(cd "$tmp" && env PEERS="$PEER_RUNTIMES" EXTRA_PEERS="$extra" RATIO_TO="$ratio_to" \
			REPS="$REPS" RUN_TIMEOUT="$RUN_TIMEOUT" OUT="$tmp/report.md" \
			TCP_CONNS="$TCP_CONNS" TCP_SECS="$TCP_SECS" TCP_WARMUP_SECS="$TCP_WARMUP_SECS" \
			./run.sh "${harness_workloads[@]}") >/dev/null || rc=$?
		if [ ! -s "$tmp/report.md" ]; then
			log "the peer harness failed (rc=$rc); its logs are under $tmp/logs"
			exit 1
		fi
	fi
	[ $run_mutex -eq 1 ] || finish_peers

	# mutex, as the harness runs a workload: REPS fresh processes per peer,
	# interleaved, records in its raw format, merged with its records
	mlogs=$tmp/mutex-logs
	mkdir -p "$mlogs"
	raw=$mlogs/raw.txt
	cat "$tmp"/logs/*/raw.txt >"$raw" 2>/dev/null || true
	declare -A mutex_cmd=([tokio]="$tmp/tokio/target/release/mutex" [go]="$tmp/go/bin/mutex")
	for c in "${tern_cols[@]}"; do mutex_cmd[$c]=${tern_tmpl[$c]//\{w\}/mutex}; done
	read -r -a peers <<<"$PEER_RUNTIMES ${tern_cols[*]}"
	read -r -a msizes <<<"$(sizes_for mutex)"
	log "running mutex: peers ${peers[*]}; reps $REPS"
	for rep in $(seq "$REPS"); do
		for p in "${peers[@]}"; do
			if [ -z "${mutex_cmd[$p]:-}" ]; then
				[ "$rep" -gt 1 ] || echo "RUN peer=$p workload=mutex rep=1 status=na" >>"$raw"
				continue
			fi
			read -r -a cmd <<<"${mutex_cmd[$p]}" # split on spaces, as the harness does
			out=$mlogs/$p.mutex.$rep
			prc=0
			timeout "$RUN_TIMEOUT" "${cmd[@]}" "${msizes[@]}" >"$out.out" 2>"$out.err" || prc=$?
			line=$(grep '^RESULT ' "$out.out" | tail -n 1 || true)
			if [ $prc -eq 0 ] && [ -n "$line" ]; then
				echo "RUN peer=$p workload=mutex rep=$rep status=ok $line" >>"$raw"
				log "  mutex $p $rep/$REPS: $(echo "$line" | grep -oE 'per_op_ns=[0-9.]+')"
			else
				rc=1
				echo "RUN peer=$p workload=mutex rep=$rep status=fail rc=$prc" >>"$raw"
				log "  mutex $p $rep/$REPS: FAILED (rc=$prc): $(tail -n 2 "$out.err" | tr '\n' ' ')"
			fi
		done
	done

	# the keys the harness's report.py reads, for the merged records
	meta=$mlogs/meta.txt
	{
		echo "date=$(date '+%Y-%m-%d %H:%M %Z')"
		echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1) ($(nproc) cores)"
		echo "kernel=$(uname -r)"
		echo "mem=$(free -g | awk '/^Mem:/{print $2" GiB"}')"
		echo "tokio=$(sed -n '/^name = "tokio"$/{n;s/^version = "\(.*\)"/\1/p}' "$tmp/tokio/Cargo.lock") (Debian librust-tokio-dev)"
		echo "go=$("$GO" version | awk '{print $3}' | sed 's/^go//')"
		echo "libuv=$(pkg-config --modversion libuv 2>/dev/null || true)"
		echo "python=$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')"
		echo "reps=$REPS"
		echo "elapsed_s=$(($(date +%s) - t_start))"
		echo "peers=${peers[*]}"
		echo "workloads=${harness_workloads[*]} mutex"
		sz=$(sed -n 's/^sizes=//p' "$tmp"/logs/*/meta.txt 2>/dev/null || true) # the harness's
		echo "sizes=${sz:+$sz; }mutex T=${msizes[0]} I=${msizes[1]}"
		echo "template.tokio=$tmp/tokio/target/release/{w}"
		echo "template.go=$tmp/go/bin/peers-go {w} (mutex: $tmp/go/bin/mutex)"
		for c in "${tern_cols[@]}"; do echo "template.$c=${tern_tmpl[$c]}"; done
	} >"$meta"
	"$PY" - "$tmp" "$meta" "$raw" "$ratio_to" >"$tmp/report.md" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import report  # the harness's; it knows the contract's workloads only
report.METRICS.append(("mutex", "per_op_ns", "ns per lock+unlock", "lower"))
sys.argv = ["report.py", sys.argv[2], sys.argv[3], sys.argv[4]]
report.main()
PYEOF
	finish_peers
fi

# ---- 3. tern's own workloads, REPS runs each --------------------------------------

STAMP=$(date +%Y-%m-%dT%H%M%S)
LOGDIR=$BUILD/bench-logs/$STAMP
mkdir -p "$LOGDIR"
RAW=$LOGDIR/raw.txt
SLOGS=$LOGDIR
SRAW=$LOGDIR/servers.txt
CLOGS=$LOGDIR
CRAW=$LOGDIR/ctxvars.txt
OLOGS=$LOGDIR
ORAW=$LOGDIR/observe.txt
: >"$ORAW"
: >"$RAW"
: >"$SRAW"
: >"$CRAW"
failed=0

log "workloads: ${workloads[*]}; reps: $REPS; logs: $LOGDIR"
for w in "${workloads[@]}"; do
	exe=$BIN/$w
	case $w in
	tcp_echo | http)
		run_servers "$w"
		continue
		;;
	ctxvars)
		run_ctxvars
		continue
		;;
	observe)
		run_observe
		continue
		;;
	esac
	if [ ! -x "$exe" ]; then
		echo "RUN workload=$w rep=0 status=na" >>"$RAW"
		log "  $w: n/a (no program)"
		continue
	fi
	read -r -a sizes <<<"$(sizes_for "$w")"
	for rep in $(seq "$REPS"); do
		out=$LOGDIR/$w.$rep
		rc=0
		timeout "$RUN_TIMEOUT" "$exe" ${wflags[@]+"${wflags[@]}"} "${sizes[@]}" \
			>"$out.out" 2>"$out.err" || rc=$?
		line=$(grep '^RESULT ' "$out.out" | tail -n 1 || true)
		if [ $rc -eq 77 ]; then
			echo "RUN workload=$w rep=$rep status=na" >>"$RAW"
			log "  $w: n/a (exit 77)"
			break
		elif [ $rc -ne 0 ] || [ -z "$line" ]; then
			failed=1
			echo "RUN workload=$w rep=$rep status=fail rc=$rc" >>"$RAW"
			log "  $w $rep/$REPS: FAILED (rc=$rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
		else
			# the runtime's counters of this run, keys prefixed "m_"
			mline=$(sed -n 's/^INFO metrics //p' "$out.out" | tail -n 1 | sed 's/\([^ =]*\)=/m_\1=/g')
			echo "RUN workload=$w rep=$rep status=ok $line $mline" >>"$RAW"
			log "  $w $rep/$REPS: $(echo "$line" | grep -oE '(per_op_ns|late_us|bytes_per_task)=[0-9.-]+' | tr '\n' ' ')$(echo "$mline" | grep -oE 'm_(steals|parks|budget_yields)=[0-9]+' | tr '\n' ' ')"
		fi
	done
done

{
	echo "date=$(date '+%Y-%m-%d %H:%M %Z')"
	echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1) ($(nproc) cores)"
	echo "kernel=$(uname -r)"
	echo "tern=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit')"
	echo "workers=${WORKERS:-2 (default)}"
	echo "reps=$REPS"
} >"$LOGDIR/meta.txt"

REPORT=$LOGDIR/report.md
"$PY" - "$LOGDIR/meta.txt" "$RAW" >"$REPORT" <<'PYEOF'
import statistics
import sys

meta = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
runs = {}  # workload -> list of dicts ("status", RESULT keys)
order = []
for line in open(sys.argv[2]):
    toks = line.split()
    if not toks or toks[0] != "RUN":
        continue
    kv = {}
    for t in toks[1:]:
        if "=" in t and t != "RESULT":
            k, v = t.split("=", 1)
            kv.setdefault(k, v)
    w = kv["workload"]
    if w not in runs:
        runs[w] = []
        order.append(w)
    runs[w].append(kv)


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def fmt(v, digits=None):
    if v is None:
        return ""
    if digits is not None:
        return f"{v:.{digits}f}"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def med(rows, key):
    vals = [num(r.get(key)) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


print("# tern benchmarks")
print()
print(f"{meta.get('date', '')}; {meta.get('cpu', '')}; Linux {meta.get('kernel', '')}; "
      f"tern {meta.get('tern', '')}; workers: {meta.get('workers', '')}; "
      f"median of {meta.get('reps', '')} runs per workload.")
print()
if not order:
    sys.exit(0)  # servers only: their table follows
print("| workload | n | ns/op | spread | ops/s | secs | late_us | bytes_per_task | runs ok |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
notes = []
for w in order:
    rows = runs[w]
    if any(r["status"] == "na" for r in rows):
        print(f"| {w} | n/a | | | | | | | |")
        continue
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        print(f"| {w} | failed | | | | | | | 0/{len(rows)} |")
        continue
    ns = [num(r.get("per_op_ns")) for r in ok]
    ns = [v for v in ns if v is not None]
    m = statistics.median(ns)
    spread = f"{(max(ns) - min(ns)) / m * 100:.0f} %" if m > 0 and len(ns) > 1 else ""
    n = ok[0].get("n", "")
    cells = [w, n, fmt(m), spread, fmt(med(ok, "ops_per_s"), 0), fmt(med(ok, "secs"), 3),
             fmt(med(ok, "late_us"), 1), fmt(med(ok, "bytes_per_task"), 0),
             f"{len(ok)}/{len(rows)}"]
    print("| " + " | ".join(cells) + " |")
print()
print("ns/op, ops/s, secs, late_us and bytes_per_task are medians over the successful "
      "runs; spread is (max - min) / median of ns/op: differences smaller than it are "
      "noise. late_us (timers) is the mean lateness of a wake-up in µs; bytes_per_task "
      "(idle_tasks) is the VmRSS growth per parked task.")

# The runtime's counters of each workload's median run, to explain a change.
keys = ["tasks_run", "steals", "stolen_tasks", "parks", "wakes", "inject_pulls", "lifo_hits",
        "local_hits", "budget_yields", "busy_ms", "io_submitted", "stalls"]
mrows = []
for w in order:
    ok = [r for r in runs[w] if r["status"] == "ok" and "m_tasks_run" in r]
    if not ok:
        continue
    ok.sort(key=lambda r: num(r.get("per_op_ns")) or 0)
    r = ok[(len(ok) - 1) // 2]
    mrows.append([w] + [r.get("m_" + k, "") for k in keys])
if mrows:
    print()
    print("Runtime counters of the median run (tern_runtime_metrics, summed over workers):")
    print()
    print("| workload | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    for row in mrows:
        print("| " + " | ".join(row) + " |")
PYEOF
if [ -s "$SRAW" ]; then
	{
		[ ! -s "$RAW" ] || echo
		server_report
	} >>"$REPORT"
fi
if [ -s "$CRAW" ]; then
	{
		echo
		ctxvars_report
	} >>"$REPORT"
fi
if [ -s "$ORAW" ]; then
	{
		echo
		observe_report
	} >>"$REPORT"
fi
cat "$REPORT"
log "report: $REPORT"
if [ $failed -ne 0 ]; then
	log "some runs failed (see the .err files in $LOGDIR)"
	exit 1
fi
