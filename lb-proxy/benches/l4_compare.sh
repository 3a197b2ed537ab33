#!/usr/bin/env bash
# bash lb-proxy/benches/l4_compare.sh
#
# L4 side-by-side benchmark (not a timed test), in one run on loopback:
#   1. bulk throughput (one TCP stream, backend → client) — direct; lb with splice-auto
#      (default `ForwardMode::Auto`), always splicing (`ForwardMode::Splice`) and copying;
#      HAProxy `mode tcp` plain, with `option splice-auto`, and with
#      `option splice-request` + `option splice-response`;
#   2. requests/s and p99 latency for 1 KiB responses from nginx, wrk with keep-alive and
#      with a new connection per request (`Connection: close`), same six targets;
#   1b. bulk throughput with busy polling (HAProxy `busy-polling`, our LB_BUSY_POLLING=1),
#      each busy proxy alone on CPU 1, splice-auto, pipes of BUSY_PIPE bytes — and direct;
#   3. resident memory per idle established connection (client + backend socket) at
#      IDLE connections, lb vs HAProxy.
#
# CPU placement: load generators (wrk, the bulk client, the idle client) and backends
# (nginx, the bulk source, the idle holder) on CPU 0; the proxy under test on CPU 1
# (taskset). Both proxies run one thread (HAProxy `nbthread 1`, lb on a current-thread
# runtime). Targets are measured alternately ROUNDS times and the median is reported, so
# load from other processes hits all alike. Every process started here is stopped by PID.
#
# Environment: ROUNDS (default 3), DURATION (wrk seconds, default 8), CONNS (wrk
# connections, default 50), BULK_BYTES (default 8 GiB), IDLE (idle connections, default
# 9950: each costs the proxy two descriptors and the hard limit is 20 000 per process, so
# no single-process proxy can hold 10 000; section 3 starts one lb and one HAProxy
# (maxconn IDLE + 10, maxpipes 8) of its own with only the idle frontend),
# BUSY_PIPE (pipe bytes in 1b, default 1 MiB), BASE_PORT (default 23080), CARGO_TARGET_DIR,
# L4_TOOL (the l4_tool binary to use instead of building it: benches/run.sh passes its
# profile-guided build, benches/pgo.sh; the same binary is also the source and clients).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
BULK_BYTES=${BULK_BYTES:-$((8 << 30))}
IDLE=${IDLE:-9950}
BUSY_PIPE=${BUSY_PIPE:-1048576}
BASE=${BASE_PORT:-23080}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/lb-l4-bench.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in haproxy wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

TOOL=${L4_TOOL:-}
if [ -z "$TOOL" ]; then
    echo "building l4_tool (release)..." >&2
    (cd "$ROOT" && cargo build -q --release -j2 -p lb-proxy --example l4_tool)
    TOOL=$TARGET/release/examples/l4_tool
fi

# Ports: backends, then per target kind (bulk, http, idle) one frontend per proxy.
SRC=$((BASE + 1)) WEB=$((BASE + 2)) HOLD=$((BASE + 3))
declare -A BULK_PORT HTTP_PORT IDLE_PORT
BULK_PORT[direct]=$SRC HTTP_PORT[direct]=$WEB
i=10
for t in lb-splice lb-splice-always lb-copy hap-plain hap-splice-auto hap-splice-rr; do
    BULK_PORT[$t]=$((BASE + i)) HTTP_PORT[$t]=$((BASE + i + 1)) IDLE_PORT[$t]=$((BASE + i + 2))
    i=$((i + 10))
done
TARGETS=(direct lb-splice lb-splice-always lb-copy hap-plain hap-splice-auto hap-splice-rr)

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    exit 1
}

# --- backends on CPU 0 ---
. "$ROOT/benches/nginx_1k.sh"
nginx_1k_conf "$WORK" "127.0.0.1:$WEB backlog=4096"
taskset -c 0 nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
taskset -c 0 "$TOOL" source "127.0.0.1:$SRC" >/dev/null &
PIDS+=($!)
taskset -c 0 "$TOOL" hold "127.0.0.1:$HOLD" >/dev/null &
PIDS+=($!)

# --- proxies on CPU 1 ---
declare -A PROXY_PID
start_lb() { # start_lb NAME MODE
    taskset -c 1 "$TOOL" proxy "$2" \
        "127.0.0.1:${BULK_PORT[$1]}=127.0.0.1:$SRC" \
        "127.0.0.1:${HTTP_PORT[$1]}=127.0.0.1:$WEB" \
        "127.0.0.1:${IDLE_PORT[$1]}=127.0.0.1:$HOLD" >/dev/null &
    PROXY_PID[$1]=$!
    PIDS+=($!)
}
start_haproxy() { # start_haproxy NAME "OPTIONS"
    {
        echo "global"
        echo "    nbthread 1"
        echo "    maxconn 8900"
        echo "    maxpipes 512"
        echo "defaults"
        echo "    mode tcp"
        echo "    timeout connect 5s"
        echo "    timeout client 900s"
        echo "    timeout server 900s"
        printf '%s\n' "$2"
        echo "frontend bulk"
        echo "    bind 127.0.0.1:${BULK_PORT[$1]}"
        echo "    default_backend src"
        echo "frontend web"
        echo "    bind 127.0.0.1:${HTTP_PORT[$1]}"
        echo "    default_backend web"
        echo "frontend idle"
        echo "    bind 127.0.0.1:${IDLE_PORT[$1]}"
        echo "    default_backend hold"
        echo "backend src"
        echo "    server s 127.0.0.1:$SRC"
        echo "backend web"
        echo "    server w 127.0.0.1:$WEB"
        echo "backend hold"
        echo "    server h 127.0.0.1:$HOLD"
    } >"$WORK/$1.cfg"
    taskset -c 1 haproxy -db -f "$WORK/$1.cfg" 2>"$WORK/$1.err" &
    PROXY_PID[$1]=$!
    PIDS+=($!)
}
start_lb lb-splice splice
start_lb lb-splice-always splice-always
start_lb lb-copy copy
start_haproxy hap-plain ""
start_haproxy hap-splice-auto "    option splice-auto"
start_haproxy hap-splice-rr "    option splice-request
    option splice-response"
for t in "${TARGETS[@]}"; do
    wait_port "${BULK_PORT[$t]}"
    wait_port "${HTTP_PORT[$t]}"
    curl -fsS "http://127.0.0.1:${HTTP_PORT[$t]}/1k" | cmp -s - "$WORK/www/1k" ||
        { echo "$t does not serve the file" >&2; exit 1; }
done

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; print n }'
}
declare -A R

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, 10 ms clock ticks
echo "== 1. bulk: one stream of $((BULK_BYTES >> 30)) GiB backend → client, Gbit/s (client+source on CPU 0, proxy on CPU 1)"
for r in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        pid=${PROXY_PID[$t]:-}
        a=0
        [ -n "$pid" ] && a=$(ticks "$pid")
        g=$(taskset -c 0 "$TOOL" bulk "127.0.0.1:${BULK_PORT[$t]}" "$BULK_BYTES")
        cpu=0
        # Proxy CPU time (user + system) per GiB moved: robust to other load on the machine.
        [ -n "$pid" ] && cpu=$((($(ticks "$pid") - a) * 10 * (1 << 30) / BULK_BYTES))
        R[bulk,$t]+="$g " R[cpu,$t]+="$cpu "
        printf '  round %d %-16s %8s Gbit/s  proxy CPU %5d ms/GiB\n' "$r" "$t" "$g" "$cpu"
    done
done

echo "== 1b. bulk with busy polling (HAProxy \`busy-polling\`), $((BULK_BYTES >> 30)) GiB, Gbit/s: each busy proxy alone on CPU 1, started for its transfer and stopped after, pipes of $BUSY_PIPE bytes"
# A busy-polling proxy holds its CPU while it has a connection, so two of them cannot share
# CPU 1: each is started for its own transfer (the proxies above are idle meanwhile), on a
# port of its own per round. Both splice-auto with the same pipe size (HAProxy
# tune.pipesize, our LB_PIPE_SIZE).
BP=
start_busy() { # start_busy NAME PORT
    case $1 in
    lb-busy)
        LB_BUSY_POLLING=1 LB_PIPE_SIZE=$BUSY_PIPE taskset -c 1 "$TOOL" proxy splice \
            "127.0.0.1:$2=127.0.0.1:$SRC" >/dev/null &
        ;;
    hap-busy)
        printf '%s\n' "global" "    nbthread 1" "    busy-polling" "    tune.pipesize $BUSY_PIPE" \
            "    maxpipes 64" "defaults" "    mode tcp" "    timeout connect 5s" \
            "    timeout client 900s" "    timeout server 900s" "    option splice-auto" \
            "frontend bulk" "    bind 127.0.0.1:$2" "    default_backend src" \
            "backend src" "    server s 127.0.0.1:$SRC" >"$WORK/hap-busy.cfg"
        taskset -c 1 haproxy -db -f "$WORK/hap-busy.cfg" 2>"$WORK/hap-busy.err" &
        ;;
    esac
    BP=$!
    PIDS+=($BP)
    wait_port "$2"
}
for r in $(seq 1 "$ROUNDS"); do
    g=$(taskset -c 0 "$TOOL" bulk "127.0.0.1:$SRC" "$BULK_BYTES")
    R[busy,direct]+="$g "
    printf '  busy round %d %-16s %8s Gbit/s\n' "$r" direct "$g"
    k=0
    for t in lb-busy hap-busy; do
        port=$((BASE + 100 + 2 * r + k))
        k=$((k + 1))
        start_busy "$t" "$port"
        sleep 0.3
        g=$(taskset -c 0 "$TOOL" bulk "127.0.0.1:$port" "$BULK_BYTES")
        kill "$BP"
        wait "$BP" 2>/dev/null || true
        # Gone: out of the cleanup list, whose kill could otherwise hit a reused PID.
        for i in "${!PIDS[@]}"; do
            if [ "${PIDS[$i]}" = "$BP" ]; then unset 'PIDS[i]'; fi
        done
        R[busy,$t]+="$g "
        printf '  busy round %d %-16s %8s Gbit/s\n' "$r" "$t" "$g"
    done
done

echo "== 2. wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB responses from nginx (wrk+nginx on CPU 0, proxy on CPU 1)"
for mode in keepalive close; do
    hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    for r in $(seq 1 "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            url="http://127.0.0.1:${HTTP_PORT[$t]}/1k"
            taskset -c 0 wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$url" >/dev/null
            out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "$url")
            rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
            p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
            errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
            R[rps,$mode,$t]+="$rps " R[p99,$mode,$t]+="$p99 "
            printf '  %-9s round %d %-16s %10s req/s  p99 %7s ms %s\n' "$mode" "$r" "$t" "$rps" "$p99" "$errs"
        done
    done
done

echo "== 3. RSS per idle established connection at $IDLE connections (client + backend socket each)"
# Fresh proxies with only the idle frontend, so that buffers left by sections 1 and 2 do not
# count, and HAProxy's descriptor budget (2 × maxconn + 2 × maxpipes) fits the 20 000 limit.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_PORT[lb-idle]=$((BASE + 90)) IDLE_PORT[hap-idle]=$((BASE + 91))
taskset -c 1 "$TOOL" proxy splice "127.0.0.1:${IDLE_PORT[lb-idle]}=127.0.0.1:$HOLD" >/dev/null &
PROXY_PID[lb-idle]=$!
PIDS+=($!)
cat >"$WORK/hap-idle.cfg" <<EOF
global
    nbthread 1
    maxconn $((IDLE + 10))
    maxpipes 8
defaults
    mode tcp
    timeout connect 5s
    timeout client 900s
    timeout server 900s
    option splice-auto
frontend idle
    bind 127.0.0.1:${IDLE_PORT[hap-idle]}
    default_backend hold
backend hold
    server h 127.0.0.1:$HOLD
EOF
taskset -c 1 haproxy -db -f "$WORK/hap-idle.cfg" 2>"$WORK/hap-idle.err" &
PROXY_PID[hap-idle]=$!
PIDS+=($!)
wait_port "${IDLE_PORT[lb-idle]}"
wait_port "${IDLE_PORT[hap-idle]}"
for t in lb-idle hap-idle; do
    pid=${PROXY_PID[$t]}
    before=$(rss_kib "$pid")
    taskset -c 0 "$TOOL" idle "127.0.0.1:${IDLE_PORT[$t]}" "$IDLE" >"$WORK/idle.out" &
    ip=$!
    PIDS+=($ip)
    for _ in $(seq 1 600); do grep -q established "$WORK/idle.out" 2>/dev/null && break; sleep 0.2; done
    grep -q established "$WORK/idle.out" || { echo "idle client failed for $t" >&2; exit 1; }
    sleep 2
    after=$(rss_kib "$pid")
    per=$(((after - before) * 1024 / IDLE))
    R[rss,$t]=$per
    printf '  %-16s RSS %6d KiB → %6d KiB: %5d bytes per connection\n' "$t" "$before" "$after" "$per"
    kill "$ip"
    wait "$ip" 2>/dev/null || true
    sleep 1
done

echo
echo "== summary (medians of $ROUNDS rounds; ratios against direct and HAProxy splice-auto)"
m() { printf '%s\n' ${R[$1]} | median; }
d=$(m "bulk,direct")
h=$(m "bulk,hap-splice-auto")
for t in "${TARGETS[@]}"; do
    awk -v t="$t" -v v="$(m "bulk,$t")" -v d="$d" -v h="$h" 'BEGIN {
        printf "  bulk %-16s %7.2f Gbit/s  %.2fx direct  %.2fx hap-splice-auto", t, v, v / d, v / h }'
    [ "$t" != direct ] && printf '  proxy CPU %5s ms/GiB' "$(m "cpu,$t")"
    echo
done
for mode in keepalive close; do
    for t in "${TARGETS[@]}"; do
        awk -v t="$t" -v mode="$mode" -v r="$(m "rps,$mode,$t")" -v p="$(m "p99,$mode,$t")" \
            -v hr="$(m "rps,$mode,hap-splice-auto")" -v hp="$(m "p99,$mode,hap-splice-auto")" 'BEGIN {
            printf "  %-9s %-16s %9.0f req/s (%.2fx hap-splice-auto)  p99 %6.2f ms (%.2fx)\n", mode, t, r, r / hr, p, p / hp }'
    done
done
d=$(m "busy,direct")
for t in lb-busy hap-busy; do
    awk -v t="$t" -v v="$(m "busy,$t")" -v d="$d" -v h="$(m "busy,hap-busy")" 'BEGIN {
        printf "  bulk %-16s %7.2f Gbit/s  %.2fx direct (%.2f)  %.2fx hap-busy  (busy polling, alone on CPU 1)\n", t, v, v / d, d, v / h }'
done
awk -v l="${R[rss,lb-idle]}" -v h="${R[rss,hap-idle]}" 'BEGIN {
    printf "  idle RSS per connection: lb %d B, haproxy %d B (lb/haproxy %.2f)\n", l, h, l / h }'
