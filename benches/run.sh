#!/usr/bin/env bash
# sudo bash benches/run.sh            # the full suite (about 20 minutes on 2 cores, of which
#                                     # about 8 for the profile-guided build, benches/pgo.sh)
# sudo SMALL=1 bash benches/run.sh    # smallest configuration, proves the scripts work
#                                     # (also: bash benches/run.sh --smoke)
#
# One command that measures lb side by side with the tool a user would pick instead, in the
# same run on the same machine, and prints one table (benches/README.md explains it):
#
#   schedulers  cargo bench -p lb-core (criterion), Maglev against the `maglev` crate
#   L4 proxy    lb-proxy/benches/l4_compare.sh: bulk throughput, 1 KiB req/s and p50/p99 with
#               keep-alive and a new connection per request; ours (splice, copy) against
#               HAProxy mode tcp (splice-auto, plain) and a direct connection; bulk with busy
#               polling, ours against HAProxy `busy-polling`, each alone on CPU 1
#   L4 extra    this script: CPU seconds per GiB forwarded (utime+stime of the proxy process
#               around one bulk transfer), RSS per idle connection at IDLE connections
#   HTTP        lb-proxy/benches/http_vs_haproxy.sh: ours against HAProxy mode http (and
#               our plain release build beside the profile-guided one)
#   failover    cargo bench -p lb-vrrp --bench failover: kill -9 and clean stop, ours against
#               keepalived, v2 advert_int 1, v3 0.1 and 0.01
#   health      benches/src/bin/health_compare.rs: backend death to Down, ours against
#               HAProxy check (keepalived's TCP_CHECK needs IPVS: not measurable here)
#   bfd         benches/src/bin/bfd_compare.rs: BFD peer death to session Down, ours against
#               keepalived's BFD daemon, each watching the other (50 ms x 3), in namespaces
#
# lb's proxies are measured as built for release by benches/pgo.sh (profile-guided);
# PGO=0 measures the plain `cargo build --release` instead.
#
# Every piece prints `RESULT<TAB>figure<TAB>side<TAB>value<TAB>unit` lines (one per round or
# trial); this script collects them into results.tsv and benches/report.py turns them into
# the table. Output directory: bench-results/<UTC date-time>[-small]/ (gitignored) with the
# table (table.md), results.tsv and each piece's raw log; the table is also printed and
# copied to bench-results/<UTC date-time>[-small].md.
#
# CPU placement (2 cores): load generators and backends on CPU 0, the proxy under test on
# CPU 1 (taskset), one thread each; criterion on CPU 1. Failover and health timings are
# protocol timers (milliseconds to seconds) and are not pinned.
#
# Needs root (network namespaces for failover, apt-get). Network traffic only on loopback
# and in namespaces the failover and bfd benches create (198.18.0.0/24). Every process this
# script starts is stopped by PID on exit; the failover and bfd benches remove their
# namespaces themselves.
#
# Environment: SMALL=1 (or --smoke), ONLY=piece,piece (schedulers, l4, l4-cpu-rss, http,
# failover, health, bfd), ROUNDS, TRIALS (failover), PGO=0 (measure the plain release build
# of lb instead of the profile-guided one), CARGO_TARGET_DIR
# (default /work/target-bench if that exists, else target/), NO_APT=1 (skip installing),
# BASE_PORT (default 26080: the L4 script uses BASE_PORT..+72 and
# +102..+(101 + 2 ROUNDS) for its busy-polling rounds, the HTTP script +200..+213, the
# CPU/RSS section +400..+441, the PGO training +461..+476). Keep them below the ephemeral
# range (ip_local_port_range, 32768+ by default): a client's TIME_WAIT on a listener's port
# makes that bind fail. Away from the pieces' own defaults, so that someone running one by
# hand does not collide.
set -euo pipefail

SMALL=${SMALL:-0}
[ "${1:-}" = --smoke ] && SMALL=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if [ -d /work/target-bench ]; then CARGO_TARGET_DIR=/work/target-bench; else CARGO_TARGET_DIR=$ROOT/target; fi
fi
export CARGO_TARGET_DIR
TARGET=$CARGO_TARGET_DIR
T_START=$(date +%s)

if [ "$SMALL" = 1 ]; then
    ROUNDS=${ROUNDS:-1} TRIALS=${TRIALS:-1}
    L4_DURATION=1 L4_BULK=$((256 << 20)) HTTP_DURATION=1 WARMUP=1
    CPU_BULK=$((256 << 20)) IDLE=500 HEALTH_ROUNDS=1
    FAILOVER_CASES=3:0.1 CRITERION_ARGS=(--quick --noplot '^pick/rr/')
    TAG=$(date -u +%Y-%m-%dT%H%M%SZ)-small
else
    ROUNDS=${ROUNDS:-3} TRIALS=${TRIALS:-5}
    L4_DURATION=3 L4_BULK=$((2 << 30)) HTTP_DURATION=4 WARMUP=1
    CPU_BULK=$((2 << 30)) IDLE=9950 HEALTH_ROUNDS=$((ROUNDS > 5 ? ROUNDS : 5))
    FAILOVER_CASES=2:1,3:0.1,3:0.01 CRITERION_ARGS=(--noplot '^pick/')
    TAG=$(date -u +%Y-%m-%dT%H%M%SZ)
fi
BASE_PORT=${BASE_PORT:-26080}
OUT=$ROOT/bench-results/$TAG
mkdir -p "$OUT"
RES=$OUT/results.tsv
: >"$RES"
WORK=$(mktemp -d /tmp/lb-bench-suite.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s +%4ds] %s\n' "$(date -u +%H:%M:%S)" $(($(date +%s) - T_START)) "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, apt-get)" >&2; exit 1; }

# --- 1. packages -------------------------------------------------------------------------
declare -A PKG_OF=([haproxy]=haproxy [keepalived]=keepalived [wrk]=wrk [nginx]=nginx-light
    [ip]=iproute2 [nft]=nftables [taskset]=util-linux [ps]=procps [curl]=curl
    [python3]=python3-minimal [ping]=iputils-ping)
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
missing=()
for tool in "${!PKG_OF[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${PKG_OF[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "${NO_APT:-0}" = 1 ] && { echo "missing packages: ${missing[*]}" >&2; exit 1; }
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Our ports must be free (someone else's run of a piece would otherwise answer for ours).
busy=$(ss -Hltn 2>/dev/null | awk -v lo="$BASE_PORT" -v hi=$((BASE_PORT + 476)) \
    '{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) print p }' | sort -u | tr '\n' ' ')
[ -z "$busy" ] || { echo "ports in use: $busy(set BASE_PORT to a free range)" >&2; exit 1; }

# --- 2. machine --------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (working tree has uncommitted changes)')"
    echo "cpus: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "kernel: $(uname -r)"
    echo "haproxy: $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}'), keepalived: $(keepalived -v 2>&1 | head -1 | awk '{print $2}'), nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///'), wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "configuration: $([ "$SMALL" = 1 ] && echo 'SMALL (smoke: 1 round, tiny durations — not figures to quote)' || echo full), rounds $ROUNDS, failover trials $TRIALS"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- 3. build ----------------------------------------------------------------------------
log "building release binaries (CARGO_TARGET_DIR=$TARGET)"
cargo build -q --release -j2 -p lb-proxy --example l4_tool --example http_proxy
cargo build -q --release -j2 -p lb-benches --bin health_compare --bin bfd_compare
cargo bench -q -j2 -p lb-core --no-run 2>/dev/null
cargo bench -q -j2 -p lb-vrrp --bench failover --no-run 2>/dev/null
# lb's proxies are measured as released: a profile-guided build (benches/pgo.sh: trained on
# loopback HTTP and L4 loads, then rebuilt with the profile). PGO=0 measures the plain
# release build instead. The HTTP section measures the plain build too, beside the PGO one,
# so that the table shows what PGO is worth.
REL=$TARGET/release
LB_BUILD="plain release build (PGO=0)"
# Built only when a piece that measures lb's proxies runs.
NEED_PROXIES=1
if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *,l4,* && ",$ONLY," != *,l4-cpu-rss,* && ",$ONLY," != *,http,* ]]; then
    NEED_PROXIES=0
fi
if [ "${PGO:-1}" = 1 ] && [ "$NEED_PROXIES" = 1 ]; then
    log "profile-guided build of the proxies (benches/pgo.sh)"
    if REL=$(BASE_PORT=$((BASE_PORT + 460)) EXAMPLES_ONLY=1 bash "$ROOT/benches/pgo.sh" 2>"$OUT/pgo.log" | tail -1) && [ -x "$REL/examples/l4_tool" ]; then
        LB_BUILD="profile-guided (benches/pgo.sh), the plain release build beside it in the HTTP rows"
    else
        log "PGO build failed (see $OUT/pgo.log): measuring the plain release build"
        REL=$TARGET/release
        LB_BUILD="plain release build (the PGO build failed, see pgo.log)"
    fi
fi
echo "lb build measured: $LB_BUILD" >>"$OUT/machine.txt"
TOOL=$REL/examples/l4_tool
T_BUILT=$(date +%s)

# Runs a piece, keeping its output in $OUT/NAME.log and its RESULT lines in results.tsv.
piece() { # piece NAME CMD...
    local name=$1 rc=0
    shift
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
    log "$name: $*"
    "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    grep -a -E '^(RESULT|NOTE)	' "$OUT/$name.log" >>"$RES" || true
    [ $rc = 0 ] || { log "$name FAILED (exit $rc), see $OUT/$name.log"; echo "FAILED	$name	exit $rc" >>"$RES"; }
    return 0
}

# --- 4. schedulers (criterion) ------------------------------------------------------------
# Criterion for the picks (no plots: they cost more than the measurements on 2 cores). The
# Maglev build and lookup against the maglev crate come from pick.rs's own summary (median of
# 5 each), not from its criterion group mh_build: the crate's build at 1000 backends takes
# ~0.5 s and criterion's 20 samples of it alone would take minutes.
sched() {
    rm -rf "$TARGET/criterion"
    local rc=0
    taskset -c 1 cargo bench -q -j2 -p lb-core --bench pick -- "${CRITERION_ARGS[@]}" >"$WORK/crit.out" 2>&1 || rc=$?
    cat "$WORK/crit.out"
    python3 "$ROOT/benches/report.py" criterion "$TARGET/criterion" "$WORK/crit.out"
    return $rc
}
piece schedulers sched

# --- 5. L4 proxy (l4_compare.sh), with p50 from a wrk shim --------------------------------
# l4_compare.sh prints p99 only; a `wrk` first on PATH runs the real one and keeps the output
# of each measured (--latency) run, in order, for p50. RSS per idle connection is measured
# in section 6 over several rounds (the script does one round), so IDLE stays small here.
REAL_WRK=$(command -v wrk)
mkdir -p "$WORK/shim"
cat >"$WORK/shim/wrk" <<EOF
#!/usr/bin/env bash
out=\$("$REAL_WRK" "\$@"); rc=\$?
printf '%s\n' "\$out"
case " \$* " in *" --latency "*) { echo "WRKRUN \$*"; printf '%s\n' "\$out"; } >>"$WORK/wrk.log" ;; esac
exit \$rc
EOF
chmod +x "$WORK/shim/wrk"
l4_inner() {
    PATH=$WORK/shim:$PATH ROUNDS=$ROUNDS DURATION=$L4_DURATION BULK_BYTES=$L4_BULK IDLE=200 BASE_PORT=$BASE_PORT L4_TOOL=$TOOL \
        bash "$ROOT/lb-proxy/benches/l4_compare.sh" 2>&1
}
l4() {
    local rc=0
    l4_inner >"$OUT/l4.log.part" || rc=$?
    cat "$OUT/l4.log.part"
    python3 "$ROOT/benches/report.py" l4 "$OUT/l4.log.part" "$WORK/wrk.log"
    rm -f "$OUT/l4.log.part"
    return $rc
}
piece l4 l4

# --- 6. L4 extra: CPU seconds per GiB forwarded, RSS per idle connection -------------------
# Same tools as l4_compare.sh (l4_tool source/bulk/hold/idle, HAProxy one thread), own ports.
L4X=$((BASE_PORT + 400))
SRC=$((L4X + 1)) HOLD=$((L4X + 2))
declare -A BULK_PORT=([lb-splice]=$((L4X + 10)) [lb-copy]=$((L4X + 20)) [hap-splice-auto]=$((L4X + 30)) [hap-plain]=$((L4X + 40)))
declare -A IDLE_PORT=([lb-splice]=$((L4X + 11)) [lb-copy]=$((L4X + 21)) [hap-splice-auto]=$((L4X + 31)) [hap-plain]=$((L4X + 41)))
declare -A PROXY_PID
BACKEND_PIDS=()
declare -A SIDE=([lb-splice]="ours splice-auto" [lb-copy]="ours copy" [hap-splice-auto]="haproxy splice-auto" [hap-plain]="haproxy plain")
wait_port() {
    local _
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, whole process
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
start_proxy() { # start_proxy TARGET: a fresh proxy process on CPU 1, PID in PROXY_PID
    local t=$1
    if [[ $t == lb-* ]]; then
        taskset -c 1 "$TOOL" proxy "${t#lb-}" \
            "127.0.0.1:${BULK_PORT[$t]}=127.0.0.1:$SRC" "127.0.0.1:${IDLE_PORT[$t]}=127.0.0.1:$HOLD" >/dev/null &
    else
        {
            printf 'global\n    nbthread 1\n    maxconn 9960\n    maxpipes 8\n'
            printf 'defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 900s\n    timeout server 900s\n'
            if [ "$t" = hap-splice-auto ]; then printf '    option splice-auto\n'; fi
            printf 'frontend bulk\n    bind 127.0.0.1:%s\n    default_backend src\n' "${BULK_PORT[$t]}"
            printf 'frontend idle\n    bind 127.0.0.1:%s\n    default_backend hold\n' "${IDLE_PORT[$t]}"
            printf 'backend src\n    server s 127.0.0.1:%s\nbackend hold\n    server h 127.0.0.1:%s\n' "$SRC" "$HOLD"
        } >"$WORK/$t.cfg"
        taskset -c 1 haproxy -db -f "$WORK/$t.cfg" 2>"$OUT/$t.err" &
    fi
    PROXY_PID[$t]=$!
    PIDS+=($!)
    wait_port "${BULK_PORT[$t]}" && wait_port "${IDLE_PORT[$t]}" ||
        { echo "$t did not start: $(cat "$OUT/$t.err" 2>/dev/null)"; return 1; }
}
stop_proxy() { # stop_proxy TARGET
    kill "${PROXY_PID[$1]}" 2>/dev/null || true
    wait "${PROXY_PID[$1]}" 2>/dev/null || true
}
l4x() {
    local t r pid before after g per ip hz
    hz=$(getconf CLK_TCK)
    taskset -c 0 "$TOOL" source "127.0.0.1:$SRC" >/dev/null &
    BACKEND_PIDS+=($!)
    PIDS+=($!)
    taskset -c 0 "$TOOL" hold "127.0.0.1:$HOLD" >/dev/null &
    BACKEND_PIDS+=($!)
    PIDS+=($!)
    for t in lb-splice lb-copy hap-splice-auto hap-plain; do
        start_proxy "$t" || return 1
    done
    echo "== CPU seconds per GiB forwarded: one $((CPU_BULK >> 20)) MiB stream backend -> client through the proxy (CPU 1); utime+stime of the proxy process, CLK_TCK $hz"
    for r in $(seq 1 "$ROUNDS"); do
        for t in lb-splice lb-copy hap-splice-auto hap-plain; do
            pid=${PROXY_PID[$t]}
            before=$(cpu_ticks "$pid")
            g=$(taskset -c 0 "$TOOL" bulk "127.0.0.1:${BULK_PORT[$t]}" "$CPU_BULK")
            after=$(cpu_ticks "$pid")
            per=$(awk -v d=$((after - before)) -v hz="$hz" -v b="$CPU_BULK" 'BEGIN { printf "%.3f", d / hz / (b / 1073741824) }')
            printf '  round %d %-16s %6s Gbit/s  %s CPU s/GiB\n' "$r" "$t" "$g" "$per"
            printf 'RESULT\tL4 CPU seconds per GiB forwarded\t%s\t%s\ts/GiB\n' "${SIDE[$t]}" "$per"
        done
    done
    # A fresh proxy process per round: memory freed by the previous round stays resident.
    echo "== RSS per idle established connection at $IDLE connections (client + backend socket each), fresh proxy each round"
    for t in lb-splice lb-copy hap-splice-auto hap-plain; do stop_proxy "$t"; done
    for r in $(seq 1 "$ROUNDS"); do
        for t in lb-splice hap-splice-auto; do
            start_proxy "$t" || return 1
            pid=${PROXY_PID[$t]}
            before=$(rss_kib "$pid")
            : >"$WORK/idle.out"
            taskset -c 0 "$TOOL" idle "127.0.0.1:${IDLE_PORT[$t]}" "$IDLE" >"$WORK/idle.out" 2>&1 &
            ip=$!
            PIDS+=($ip)
            for _ in $(seq 1 600); do
                grep -q established "$WORK/idle.out" && break
                kill -0 "$ip" 2>/dev/null || break
                sleep 0.2
            done
            grep -q established "$WORK/idle.out" || { echo "idle client failed for $t: $(cat "$WORK/idle.out")"; kill "$ip"; return 1; }
            sleep 2
            after=$(rss_kib "$pid")
            per=$(((after - before) * 1024 / IDLE))
            printf '  round %d %-16s RSS %6d KiB -> %6d KiB: %5d bytes per connection\n' "$r" "$t" "$before" "$after" "$per"
            printf 'RESULT\tL4 RSS per idle connection (at %d)\t%s\t%s\tB\n' "$IDLE" "${SIDE[$t]}" "$per"
            printf 'RESULT\tL4 proxy RSS with %d idle connections\t%s\t%s\tMiB\n' "$IDLE" "${SIDE[$t]}" \
                "$(awk -v k="$after" 'BEGIN { printf "%.1f", k / 1024 }')"
            kill "$ip"
            wait "$ip" 2>/dev/null || true
            stop_proxy "$t"
            sleep 1
        done
    done
}
piece l4-cpu-rss l4x
for p in "${PROXY_PID[@]}" "${BACKEND_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done

# --- 7. HTTP mode ------------------------------------------------------------------------
PLAIN_HTTP=
[ "$REL" != "$TARGET/release" ] && PLAIN_HTTP=$TARGET/release/examples/http_proxy
piece http env ROUNDS="$ROUNDS" BASE_PORT=$((BASE_PORT + 200)) DURATION="$HTTP_DURATION" WARMUP="$WARMUP" \
    LB_BIN="$REL/examples/http_proxy" LB_BIN_PLAIN="$PLAIN_HTTP" \
    bash "$ROOT/lb-proxy/benches/http_vs_haproxy.sh"

# --- 8. failover -------------------------------------------------------------------------
piece failover env LBV_TRIALS="$TRIALS" LBV_CASES="$FAILOVER_CASES" \
    cargo bench -q -j2 -p lb-vrrp --bench failover

# --- 9. health ---------------------------------------------------------------------------
piece health "$TARGET/release/health_compare" --rounds "$HEALTH_ROUNDS"

# --- 10. BFD -----------------------------------------------------------------------------
piece bfd "$TARGET/release/bfd_compare" --rounds "$HEALTH_ROUNDS"

# --- 11. the table -----------------------------------------------------------------------
T_END=$(date +%s)
{
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "suite time: $((T_END - T_START)) s (of which build $((T_BUILT - T_START)) s)"
} >>"$OUT/machine.txt"
python3 "$ROOT/benches/report.py" table "$RES" "$OUT/machine.txt" >"$OUT/table.md"
cp "$OUT/table.md" "$ROOT/bench-results/$TAG.md"
cat "$OUT/table.md"
log "table written to bench-results/$TAG.md (raw logs in bench-results/$TAG/)"
