#!/usr/bin/env bash
# bash lb-proxy/benches/http_vs_haproxy.sh
#
# Side-by-side benchmark (not a timed test): requests/s and p50/p99 latency for 1 KiB responses
# through lb's HTTP mode (lb-proxy example `http_proxy`) and HAProxy `mode http`, in one run,
# in front of the same two nginx backends, with client keep-alive and without
# (`Connection: close` on every request). Both proxies keep backend connections alive
# (HAProxy's default `http-reuse safe`; lb's per-backend pool) and add the same client
# identity headers: X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Port (lb's defaults;
# HAProxy's `option forwardfor` and two `http-request set-header` lines).
#
# CPU placement: wrk and the nginx backends on CPU 0, the proxy under test on CPU 1
# (taskset), one thread each. Only loopback addresses are used; every process started here is
# stopped by PID on exit.
#
# The two proxies are measured alternately, ROUNDS times each per client mode, and the median
# round is reported, so that load from other processes on the machine hits both alike. Every
# other round runs them in reverse order (ABBA), so that a drift in the machine's speed over
# the run does not favour the one that always goes second.
#
# Environment: DURATION (seconds per run, default 10), WARMUP (seconds of unmeasured wrk
# before each run, default 2), ROUNDS (default 3), CONNS (wrk connections, default 50),
# BASE_PORT (default 18080; uses +1, +2 and +10..+13), CARGO_TARGET_DIR (where the example is built), ACCESS_LOG=1
# (both proxies log every request: lb to a file in its work directory, HAProxy `option
# httplog` to `log stdout` redirected to a file there), HTTP2=1 (instead of the two wrk
# modes, HTTP/2 with prior knowledge from h2load (Debian's nghttp2-client): H2_CONNS
# connections, default 10, with H2_STREAMS streams in flight on each, default 10; lb with
# `http2` on, HAProxy on a `bind … proto h2` frontend; both still speak HTTP/1.1 to nginx.
# h2load reports no percentiles: the latency columns are its mean and max per request),
# BACKEND_H2=1 (both proxies speak HTTP/2 to the backends: nginx `listen … http2` with
# prior knowledge, HAProxy `server … proto h2`, lb `LB_BACKEND_HTTP2=1`, lb-node's
# `backend_http2`; the clients as without it), LB_BIN (the lb binary to measure, instead of
# building the example: benches/run.sh passes its profile-guided build, benches/pgo.sh),
# LB_BIN_PLAIN (a second lb binary measured in the same alternation as "lb-plain", side
# "ours without PGO": the ordinary release build beside the PGO one).
#
# Besides the human-readable lines, every measured run prints
# `RESULT<TAB>figure<TAB>side<TAB>value<TAB>unit` lines (side: ours, haproxy, or "ours without
# PGO" for LB_BIN_PLAIN, named so because benches/run.sh gives it the plain build) that
# benches/run.sh aggregates.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
BASE=${BASE_PORT:-18080}
B1=$((BASE + 1)) B2=$((BASE + 2)) HAP=$((BASE + 10)) LB=$((BASE + 11))
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/lb-http-bench.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

H2=${HTTP2:-0}
BH2=${BACKEND_H2:-0}
NGINX_LISTEN=""
HAP_SERVER=""
[ "$BH2" = 1 ] && NGINX_LISTEN=" http2" && HAP_SERVER=" proto h2"
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
MODES="keepalive close"
[ "$H2" = 1 ] && MODES="h2"
TOOLS="haproxy wrk nginx taskset curl"
[ "$H2" = 1 ] && TOOLS="$TOOLS h2load"
for tool in $TOOLS; do
    pkg=$tool
    [ "$tool" = h2load ] && pkg=nghttp2-client
    [ "$tool" = taskset ] && pkg=util-linux
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install $pkg)" >&2; exit 1; }
done

if [ -z "${LB_BIN:-}" ]; then
    echo "building the lb example (release)..." >&2
    (cd "$ROOT" && cargo build -q --release -j2 -p lb-proxy --example http_proxy)
    LB_BIN=$TARGET/release/examples/http_proxy
fi
PLAIN=${LB_BIN_PLAIN:-}
PROXIES="haproxy lb"
[ -n "$PLAIN" ] && PROXIES="haproxy lb lb-plain"

. "$ROOT/benches/nginx_1k.sh"
nginx_1k_conf "$WORK" "127.0.0.1:$B1$NGINX_LISTEN" "127.0.0.1:$B2$NGINX_LISTEN"
taskset -c 0 nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
$([ "${ACCESS_LOG:-0}" = 1 ] && printf '    log stdout format raw local0\n')
defaults
    mode http
$([ "${ACCESS_LOG:-0}" = 1 ] && printf '    log global\n    option httplog\n')
    option forwardfor
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$HAP
    # The same three headers lb's HTTP mode writes by default, so both proxies send the
    # backends identical requests.
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend be
frontend fe_h2
    bind 127.0.0.1:$((HAP + 2)) proto h2
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:$B1$HAP_SERVER
    server b2 127.0.0.1:$B2$HAP_SERVER
EOF
taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.access.log" &
PIDS+=($!)
HAP_PID=$!

LB_LOG_ENV=()
[ "${ACCESS_LOG:-0}" = 1 ] && LB_LOG_ENV=(LB_ACCESS_LOG="$WORK/lb.access.log")
[ "$H2" = 1 ] && LB_LOG_ENV+=(LB_HTTP2=1)
[ "$BH2" = 1 ] && LB_LOG_ENV+=(LB_BACKEND_HTTP2=1)
env "${LB_LOG_ENV[@]}" taskset -c 1 "$LB_BIN" "127.0.0.1:$LB" "127.0.0.1:$B1" "127.0.0.1:$B2" 2>"$WORK/lb.err" &
PIDS+=($!)
LB_PID=$!
LBP=$((BASE + 13)) LBP_PID=
if [ -n "$PLAIN" ]; then
    PLAIN_ENV=("${LB_LOG_ENV[@]}")
    [ "${ACCESS_LOG:-0}" = 1 ] && PLAIN_ENV[0]=LB_ACCESS_LOG="$WORK/lb-plain.access.log"
    env "${PLAIN_ENV[@]}" taskset -c 1 "$PLAIN" "127.0.0.1:$LBP" "127.0.0.1:$B1" "127.0.0.1:$B2" 2>"$WORK/lb-plain.err" &
    PIDS+=($!)
    LBP_PID=$!
fi

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    exit 1
}
LB_PORTS="$LB"
[ -n "$PLAIN" ] && LB_PORTS="$LB $LBP"
for p in $B1 $B2 $HAP $LB_PORTS; do wait_port "$p"; done
for p in $HAP $LB_PORTS; do
    curl -fsS "http://127.0.0.1:$p/1k" | cmp -s - "$WORK/www/1k" || { echo "proxy on $p does not serve the file" >&2; exit 1; }
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, 10 ms clock ticks

# run NAME PORT MODE PID → prints "NAME MODE rps p99 p50 cpu_us_per_request errors"
run() {
    [ "$3" = h2 ] && { run_h2 "$@"; return; }
    local name=$1 port=$2 mode=$3 pid=$4 hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${hdr[@]}" "http://127.0.0.1:$port/1k" >/dev/null # warm-up
    local out a b
    a=$(ticks "$pid")
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "http://127.0.0.1:$port/1k")
    b=$(ticks "$pid")
    local rps p50 p99 errs reqs cpu
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    # The proxy's CPU time (user + system) per request: robust to load elsewhere.
    cpu=$(awk -v t=$((b - a)) -v n="$reqs" 'BEGIN { printf "%.1f", t * 10000 / n }')
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%-8s %-10s %12s %10s %10s %8s  %s\n' "$name" "$mode" "$rps" "$p99" "$p50" "$cpu" "$errs"
}

# run_h2 NAME PORT MODE PID → as run, with h2load; the latency columns are mean and max.
run_h2() {
    local name=$1 port=$2 mode=$3 pid=$4
    [ "$name" = haproxy ] && port=$((port + 2))
    local h2=(h2load -c"$H2_CONNS" -m"$H2_STREAMS" -t1)
    taskset -c 0 "${h2[@]}" -D "$WARMUP" "http://127.0.0.1:$port/1k" >/dev/null # warm-up
    local out a b
    a=$(ticks "$pid")
    out=$(taskset -c 0 "${h2[@]}" -D "$DURATION" "http://127.0.0.1:$port/1k")
    b=$(ticks "$pid")
    local rps mean max reqs cpu errs
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    read -r max mean < <(awk '/^time for request:/ {print $5, $6}' <<<"$out")
    reqs=$(awk '/^requests:/ {print $8}' <<<"$out")
    cpu=$(awk -v t=$((b - a)) -v n="$reqs" 'BEGIN { printf "%.1f", t * 10000 / n }')
    errs=$(awk '/^requests:/ && ($10 + $12 + $14) > 0 {print}' <<<"$out")
    [ -n "$(awk '/^status codes:/ && $5 + $7 + $9 > 0' <<<"$out")" ] && errs="$errs non-2xx"
    printf '%-8s %-10s %12s %10s %10s %8s  %s\n' "$name" "$mode" "$rps" "$max" "$mean" "$cpu" "$errs"
}

to_ms() { # 1.23ms / 456.00us / 1.2s → ms
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; print n }'
}

client="wrk -t1 -c$CONNS"
[ "$H2" = 1 ] && client="h2load -t1 -c$H2_CONNS -m$H2_STREAMS (HTTP/2, prior knowledge)"
backends="2 nginx backends"
[ "$BH2" = 1 ] && backends="2 nginx backends spoken to in HTTP/2 (h2c)"
echo "$client -d${DURATION}s, 1 KiB responses, $backends; wrk+nginx on CPU 0, proxy on CPU 1; $ROUNDS alternating rounds"
printf '%-8s %-10s %12s %10s %10s %8s\n' proxy client req/s p99 p50 "CPU µs/req"
results=()
for mode in $MODES; do
    for round in $(seq 1 "$ROUNDS"); do
        order=$PROXIES
        # Every other round in reverse order, so that a machine speeding up or slowing down
        # over the run favours neither side.
        [ $((round % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$PROXIES" | tac | tr '\n' ' ')
        for proxy in $order; do
            port=$HAP pid=$HAP_PID
            [ "$proxy" = lb ] && port=$LB pid=$LB_PID
            [ "$proxy" = lb-plain ] && port=$LBP pid=$LBP_PID
            line=$(run "$proxy" "$port" "$mode" "$pid")
            echo "$line"
            results+=("$line")
            side=haproxy
            [ "$proxy" = lb ] && side=ours
            [ "$proxy" = lb-plain ] && side="ours without PGO"
            read -r _ _ rps p99 p50 cpu _ <<<"$line"
            label=$mode
            [ "$BH2" = 1 ] && label="$mode to HTTP/2 backends"
            printf 'RESULT\thttp %s: req/s\t%s\t%s\treq/s\n' "$label" "$side" "$rps"
            if [ "$mode" = h2 ]; then
                printf 'RESULT\thttp %s: mean latency\t%s\t%s\tms\n' "$label" "$side" "$(to_ms "$p50")"
                printf 'RESULT\thttp %s: max latency\t%s\t%s\tms\n' "$label" "$side" "$(to_ms "$p99")"
            else
                printf 'RESULT\thttp %s: p50 latency\t%s\t%s\tms\n' "$label" "$side" "$(to_ms "$p50")"
                printf 'RESULT\thttp %s: p99 latency\t%s\t%s\tms\n' "$label" "$side" "$(to_ms "$p99")"
            fi
            printf 'RESULT\thttp %s: proxy CPU per request\t%s\t%s\tus\n' "$label" "$side" "$cpu"
        done
    done
done

# median NAME MODE COLUMN (3 = req/s, 4 = p99 in ms, 5 = CPU µs per request)
median() {
    printf '%s\n' "${results[@]}" | awk -v n="$1" -v m="$2" '$1 == n && $2 == m' |
        while read -r _ _ rps p99 _ cpu _; do echo "$rps $(to_ms "$p99") $cpu"; done |
        awk -v c="$(($3 - 2))" '{print $c}' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

if [ "${ACCESS_LOG:-0}" = 1 ]; then
    echo "access log lines written (lb, haproxy):"
    wc -l "$WORK/lb.access.log" "$WORK/haproxy.access.log" | head -2
    head -1 "$WORK/lb.access.log" "$WORK/haproxy.access.log"
fi
echo
echo "medians of $ROUNDS rounds:"
[ "$H2" = 1 ] && echo "(h2: h2load -c$H2_CONNS -m$H2_STREAMS; the p99 column is h2load's max, p50 its mean)"
for mode in $MODES; do
    hr=$(median haproxy "$mode" 3) lr=$(median lb "$mode" 3)
    hp=$(median haproxy "$mode" 4) lp=$(median lb "$mode" 4)
    hc=$(median haproxy "$mode" 5) lc=$(median lb "$mode" 5)
    awk -v m="$mode" -v hr="$hr" -v lr="$lr" -v hp="$hp" -v lp="$lp" -v hc="$hc" -v lc="$lc" 'BEGIN {
        printf "%-10s haproxy %9.0f req/s p99 %7.2f ms %5.1f us/req | lb %9.0f req/s p99 %7.2f ms %5.1f us/req | lb/haproxy req/s %.2f, p99 %.2f, CPU %.2f\n",
            m, hr, hp, hc, lr, lp, lc, lr / hr, lp / hp, lc / hc }'
    [ -n "$PLAIN" ] || continue
    pr=$(median lb-plain "$mode" 3) pp=$(median lb-plain "$mode" 4) pc=$(median lb-plain "$mode" 5)
    awk -v m="$mode" -v hr="$hr" -v pr="$pr" -v hp="$hp" -v pp="$pp" -v hc="$hc" -v pc="$pc" 'BEGIN {
        printf "%-10s lb without PGO %9.0f req/s p99 %7.2f ms %5.1f us/req | lb-plain/haproxy req/s %.2f, p99 %.2f, CPU %.2f\n",
            m, pr, pp, pc, pr / hr, pp / hp, pc / hc }'
done
