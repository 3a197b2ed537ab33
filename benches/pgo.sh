#!/usr/bin/env bash
# bash benches/pgo.sh
#
# Profile-guided release build (PGO, LLVM instrumentation profiles) of lb's data-path
# binaries: lb-node and lbctl (package lb-bins) and the benchmark examples l4_tool and
# http_proxy. How rustc itself, Clang and CPython are built for release: the compiler lays
# out the hot paths (hyper's parser and dispatch, tokio's scheduler, our forwarding) by what a
# training run measured, instead of by guesses. Measured on the HTTP keep-alive workload
# (benches/README.md): about a quarter fewer user-space instructions per request and a third
# of the instruction-cache misses (callgrind).
#
# Steps, each in its own target directory under $CARGO_TARGET_DIR/pgo so that the ordinary
# release build is left alone:
#   1. llvm-profdata from rustup's llvm-tools component (installed if missing; it must match
#      rustc's LLVM, so Debian's llvm packages will not do);
#   2. an instrumented build (-Cprofile-generate) into pgo/gen;
#   3. training, on loopback only, against two nginx backends serving a 1 KiB file (CPU
#      placement as the benchmarks: load and backends on CPU 0, the proxy on CPU 1): the
#      http_proxy example and lb-node (an HTTP and a TCP virtual server) under wrk, with
#      keep-alive and with a new connection per request; l4_tool in splice-auto and copy mode
#      under the same wrk loads and a bulk transfer. Each trained process is stopped with
#      the signal it exits cleanly on, which writes its profile;
#   4. the profiles merged into pgo/lb-<content hash>.profdata;
#   5. the optimised build (-Cprofile-use) into pgo/use.
#
# Both builds name the host target (--target), so that the flags reach only the binaries
# and their crates, not build scripts and procedural macros, which run during the build.
#
# Output: $CARGO_TARGET_DIR/pgo/use/<host triple>/release/{lb-node,lbctl,examples/l4_tool,
# examples/http_proxy}. The last line printed is that release directory.
#
# Environment: CARGO_TARGET_DIR (default target/), BASE_PORT (default 27080; uses +1..+16),
# TRAIN_SECONDS (per wrk run, default 5), NO_RUSTUP=1 (do not install llvm-tools),
# EXAMPLES_ONLY=1 (build and train only the two examples, what benches/run.sh measures:
# lb-node's instrumented build alone takes several minutes on 2 cores).
# Needs wrk, nginx and taskset (Debian: wrk, nginx-light, util-linux). Every process started
# here is stopped by PID on exit, and its work directory removed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PGO=$TARGET/pgo
BASE=${BASE_PORT:-27080}
SECS=${TRAIN_SECONDS:-5}
B1=$((BASE + 1)) B2=$((BASE + 2)) HTTP_EX=$((BASE + 10)) NODE_HTTP=$((BASE + 11))
NODE_TCP=$((BASE + 12)) L4_SPLICE=$((BASE + 13)) L4_COPY=$((BASE + 14)) SRC=$((BASE + 15))
L4_BULK=$((BASE + 16))
WORK=$(mktemp -d /tmp/lb-pgo.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[pgo %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# --- 1. llvm-profdata matching rustc's LLVM ------------------------------------------------
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    [ "${NO_RUSTUP:-0}" = 1 ] && { echo "no $profdata (rustup component add llvm-tools)" >&2; exit 1; }
    log "installing rustup's llvm-tools component (llvm-profdata)"
    rustup component add llvm-tools >&2
fi
[ -x "$profdata" ] || { echo "no $profdata after installing llvm-tools" >&2; exit 1; }

BINS=(-p lb-proxy --example l4_tool --example http_proxy)
[ "${EXAMPLES_ONLY:-0}" = 1 ] || BINS+=(-p lb-bins --bin lb-node --bin lbctl)

# --- 2. instrumented build --------------------------------------------------------------
rm -rf "$PGO/raw"
mkdir -p "$PGO/raw"
log "instrumented build (pgo/gen)"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$PGO/raw" CARGO_TARGET_DIR=$PGO/gen \
    cargo build -q --release -j2 --target "$host" "${BINS[@]}")
GEN=$PGO/gen/$host/release

# --- 3. training ------------------------------------------------------------------------
. "$ROOT/benches/nginx_1k.sh"
nginx_1k_conf "$WORK" "127.0.0.1:$B1" "127.0.0.1:$B2"
taskset -c 0 nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

wait_port() {
    local _
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    return 1
}
# forget PID: a process stopped and reaped is no longer cleanup's to kill (its PID may be
# reused by then).
forget() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
# stop PID SIGNAL: the trained process exits on its own and writes its profile (within 10 s,
# else it is killed and the training fails).
stop() {
    forget "$1"
    kill "-$2" "$1"
    local _
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1"
        wait "$1" 2>/dev/null || true
        echo "trained process $1 did not exit on SIG$2" >&2
        return 1
    fi
    wait "$1" || { echo "trained process $1 did not exit cleanly" >&2; return 1; }
}
# load PORT: wrk with keep-alive, then with a new connection per request.
load() {
    local out hdr
    for hdr in "" "Connection: close"; do
        out=$(taskset -c 0 wrk -t1 -c50 -d"${SECS}s" ${hdr:+-H "$hdr"} "http://127.0.0.1:$1/1k")
        log "  :$1 ${hdr:-keep-alive}: $(awk '/^Requests\/sec/ {print $2}' <<<"$out") req/s"
        grep -q "Non-2xx\|Socket errors" <<<"$out" && { echo "$out" >&2; return 1; }
    done
    return 0
}

wait_port "$B1"
wait_port "$B2"

log "training the http_proxy example"
taskset -c 1 "$GEN/examples/http_proxy" "127.0.0.1:$HTTP_EX" "127.0.0.1:$B1" "127.0.0.1:$B2" 2>"$WORK/http_proxy.err" &
pid=$!
PIDS+=($pid)
wait_port "$HTTP_EX"
load "$HTTP_EX"
stop "$pid" TERM || { cat "$WORK/http_proxy.err" >&2; exit 1; }

log "training l4_tool (splice-auto, copy; wrk and a bulk transfer)"
taskset -c 0 "$GEN/examples/l4_tool" source "127.0.0.1:$SRC" >/dev/null &
src=$!
PIDS+=($src)
taskset -c 1 "$GEN/examples/l4_tool" proxy splice "127.0.0.1:$L4_SPLICE=127.0.0.1:$B1" \
    "127.0.0.1:$L4_BULK=127.0.0.1:$SRC" >/dev/null &
pid=$!
PIDS+=($pid)
taskset -c 1 "$GEN/examples/l4_tool" proxy copy "127.0.0.1:$L4_COPY=127.0.0.1:$B2" >/dev/null &
pid2=$!
PIDS+=($pid2)
wait_port "$SRC"
wait_port "$L4_SPLICE"
wait_port "$L4_COPY"
load "$L4_SPLICE"
load "$L4_COPY"
gbit=$(timeout 120 taskset -c 0 "$GEN/examples/l4_tool" bulk "127.0.0.1:$L4_BULK" $((1 << 30)))
log "  bulk: $gbit Gbit/s"
stop "$pid" INT
stop "$pid2" INT
kill "$src" # the bulk source: not a trained path, and it has no clean exit
wait "$src" 2>/dev/null || true
forget "$src"

if [ "${EXAMPLES_ONLY:-0}" != 1 ]; then
    log "training lb-node (an HTTP and a TCP virtual server)"
    cat >"$WORK/node.toml" <<EOF
[global]
router_id = "pgo"
admin_socket = "$WORK/admin.sock"
nbthread = 1

[[virtual_server]]
listen = "127.0.0.1:$NODE_HTTP"
protocol = "http"
[[virtual_server.backend]]
address = "127.0.0.1:$B1"
[[virtual_server.backend]]
address = "127.0.0.1:$B2"

[[virtual_server]]
listen = "127.0.0.1:$NODE_TCP"
[[virtual_server.backend]]
address = "127.0.0.1:$B1"
[[virtual_server.backend]]
address = "127.0.0.1:$B2"
EOF
    # Its own pid and dump files: not the default /run/lb-node.pid of a node on this host.
    taskset -c 1 "$GEN/lb-node" -p "$WORK/lb-node.pid" --data-file "$WORK/data" --stats-file "$WORK/stats" \
        "$WORK/node.toml" 2>"$WORK/node.err" &
    pid=$!
    PIDS+=($pid)
    wait_port "$NODE_HTTP"
    wait_port "$NODE_TCP"
    load "$NODE_HTTP"
    load "$NODE_TCP"
    "$GEN/lbctl" --socket "$WORK/admin.sock" status >/dev/null
    stop "$pid" TERM || { cat "$WORK/node.err" >&2; exit 1; }
fi

# --- 4. merge ---------------------------------------------------------------------------
# Named by its content: cargo tracks RUSTFLAGS, not the file they name, so a new profile under
# the old name would leave the previous optimised build in place.
rm -f "$PGO"/lb-*.profdata # earlier runs' profiles
"$profdata" merge -o "$PGO/merged.profdata" "$PGO"/raw/*.profraw
PROF=$PGO/lb-$(sha256sum "$PGO/merged.profdata" | cut -c1-16).profdata
mv "$PGO/merged.profdata" "$PROF"
log "merged $(ls "$PGO"/raw/*.profraw | wc -l) profiles into $PROF"

# --- 5. optimised build -------------------------------------------------------------------
log "profile-guided build (pgo/use)"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$PROF" CARGO_TARGET_DIR=$PGO/use \
    cargo build -q --release -j2 --target "$host" "${BINS[@]}")
echo "$PGO/use/$host/release"
