#!/usr/bin/env bash
# End-to-end benchmark: `marimo run` (marimo's own server) against `marimo-rs run` (this
# gateway in front of a marimo backend), same notebook, same machine, same load generator, one
# run. Prints a Markdown table: req/s, p50/p99 latency and the gateway/marimo ratio.
#
#   benches/e2e.sh [NOTEBOOK]   (env: DURATION=10s CONNECTIONS=32 THREADS=2 ROUNDS=3 WS_RUNS=30 SOAK=60)
#
# Needs wrk (Debian package `wrk`). Talks to 127.0.0.1 only; every process it starts is
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
NOTEBOOK=${1:-examples/notebooks/intro.py}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WS_RUNS=${WS_RUNS:-30}
ROUNDS=${ROUNDS:-3}
TOKEN=bench-token-0123456789

command -v wrk >/dev/null || { echo "e2e.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin marimo-rs
BIN=target/release/marimo-rs
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "$1/health" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "e2e.sh: $1 did not come up" >&2; exit 1
}
start_gateway() { # $1 = name, rest = flags; sets URL_<name>
    local name=$1; shift
    "$BIN" run --headless --port 0 "$@" "$NOTEBOOK" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    eval "PID_$name=$!"
    for _ in $(seq 1 1200); do
        [ -s "$WORK/$name.out" ] && break
        sleep 0.1
    done
    local url
    url=$(head -n1 "$WORK/$name.out" | sed 's/[?].*//; s:/$::')
    eval "URL_$name=$url"
    wait_health "$url"
}
start_marimo() { # $1 = name, rest = flags
    local name=$1; shift
    local port
    port=$(free_port)
    "$PYTHON" -m marimo run --headless --host 127.0.0.1 --port "$port" "$@" "$NOTEBOOK" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    eval "PID_$name=$!"
    eval "URL_$name=http://127.0.0.1:$port"
    wait_health "http://127.0.0.1:$port"
}

# The gateway provisions the managed virtualenv; marimo itself runs from the same one.
start_gateway gw --no-token
CACHE=${MARIMO_RS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/marimo-rs}
VERSION=$(grep -o 'MARIMO_VERSION: &str = "[^"]*"' src/notebook/python.rs | cut -d'"' -f2)
PYTHON=${MARIMO_RS_PYTHON:-$CACHE/marimo-$VERSION/bin/python}
start_marimo mo --no-token
start_gateway gwauth --token="$TOKEN"
start_marimo moauth --token --token-password="$TOKEN"
# Warm both pages (the gateway starts its backend on the first request).
for url in "$URL_gw" "$URL_mo"; do
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "$url/")" = 200 ] && break
        sleep 0.2
    done
done
ASSET=$(curl -s "$URL_mo/" | grep -o '\./assets/[^"]*\.js' | sed -n '1s:^\./::p')

run_wrk() { # $1 = url, rest = extra wrk args; prints "rps p50 p99"
    local url=$1; shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$WORK/wrk.txt" 2>&1 || true
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
    local non2xx
    non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk.txt")
    echo "${rps:-0} ${p50:-?} ${p99:-?} ${non2xx:-0}"
}

# The run with the median req/s of ROUNDS runs (lines "rps p50 p99 non2xx" on stdin).
median_run() { sort -g -k1,1 | awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }'; }

row() { # $1 = label, $2 = gateway url, $3 = marimo url, rest = wrk args
    local label=$1 g=$2 m=$3; shift 3
    # Interleaved rounds (gateway, marimo, gateway, marimo…) so that drift on the machine
    # (caches, other load) hits both alike; each side reports its median round.
    local gruns="" mruns=""
    for _ in $(seq 1 "$ROUNDS"); do
        gruns+="$(run_wrk "$g" "$@")"$'\n'
        mruns+="$(run_wrk "$m" "$@")"$'\n'
    done
    read -r grps gp50 gp99 gbad <<<"$(printf '%s' "$gruns" | median_run)"
    read -r mrps mp50 mp99 mbad <<<"$(printf '%s' "$mruns" | median_run)"
    local ratio
    ratio=$(awk -v a="$grps" -v b="$mrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    printf '| %s | %s | %s / %s | %s | %s / %s | %s× |\n' \
        "$label" "$grps" "$gp50" "$gp99" "$mrps" "$mp50" "$mp99" "$ratio"
    [ "$gbad" = 0 ] || echo "|  ↳ gateway non-2xx: $gbad | | | | | |"
}

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds per side, loopback; notebook $NOTEBOOK; marimo $VERSION"
echo
echo "| request | gateway req/s | gateway p50 / p99 | marimo req/s | marimo p50 / p99 | ratio |"
echo "|---|---|---|---|---|---|"
row "GET / (page)" "$URL_gw/" "$URL_mo/" -H 'Accept: text/html'
row "GET /api/version" "$URL_gw/api/version" "$URL_mo/api/version"
row "GET /favicon.ico (15 KB)" "$URL_gw/favicon.ico" "$URL_mo/favicon.ico"
row "GET /$ASSET (main bundle, $(curl -s -o /dev/null -w '%{size_download}' "$URL_mo/$ASSET") B)" "$URL_gw/$ASSET" "$URL_mo/$ASSET"
row "GET /$ASSET, Accept-Encoding: br, gzip" "$URL_gw/$ASSET" "$URL_mo/$ASSET" -H 'Accept-Encoding: br, gzip'
row "GET /api/version, no credentials (token on)" "$URL_gwauth/api/version" "$URL_moauth/api/version"

# WebSocket: connect → kernel-ready (sequential sessions), and 20 concurrent sessions each
# until `completed-run` (every cell executed); same Python client for both servers.
cat >"$WORK/ws.py" <<'PY'
import asyncio, json, statistics, sys, time, uuid
import websockets
async def session(base, until):
    t0 = time.perf_counter()
    async with websockets.connect(f"{base}/ws?session_id={uuid.uuid4()}", max_size=None) as ws:
        while True:
            m = json.loads(await ws.recv())
            if m["op"] == until:
                return (time.perf_counter() - t0) * 1000
async def main(base, runs, concurrent):
    ready = sorted([await session(base, "kernel-ready") for _ in range(runs)])
    t0 = time.perf_counter()
    done = sorted(await asyncio.gather(*[session(base, "completed-run") for _ in range(concurrent)]))
    wall = (time.perf_counter() - t0) * 1000
    p = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))]
    print(f"{statistics.median(ready):.1f} {p(ready, 0.99):.1f} {statistics.median(done):.0f} {p(done, 0.99):.0f} {wall:.0f}")
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
PY
read -r gws gws99 gcr gcr99 gwall <<<"$("$PYTHON" "$WORK/ws.py" "${URL_gw/http/ws}" "$WS_RUNS" 20)"
read -r mws mws99 mcr mcr99 mwall <<<"$("$PYTHON" "$WORK/ws.py" "${URL_mo/http/ws}" "$WS_RUNS" 20)"
printf '| WebSocket connect → kernel-ready, ms (%s sequential sessions) | | %s / %s | | %s / %s | %+.1f ms |\n' \
    "$WS_RUNS" "$gws" "$gws99" "$mws" "$mws99" "$(awk -v a="$gws" -v b="$mws" 'BEGIN {print a-b}')"
printf '| 20 concurrent WebSocket sessions → completed-run, ms (wall %s vs %s) | | %s / %s | | %s / %s | %s× |\n' \
    "$gwall" "$mwall" "$gcr" "$gcr99" "$mcr" "$mcr99" "$(awk -v a="$mwall" -v b="$gwall" 'BEGIN {printf "%.2f", a/b}')"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Gateway CPU per proxied request, and RSS over a soak of SOAK seconds of proxied load.
SOAK=${SOAK:-60}
TICKS=$(getconf CLK_TCK)
before=$(cpu_ticks "$PID_gw")
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SOAK}s" "$URL_gw/api/version" >"$WORK/soak.txt" 2>&1 &
WRK=$!
samples=""
for _ in $(seq 1 $((SOAK / 10))); do
    sleep 10
    samples="$samples $(rss "$PID_gw")"
done
wait "$WRK" || true
after=$(cpu_ticks "$PID_gw")
requests=$(awk '/requests in/ {print $1}' "$WORK/soak.txt")
echo
awk -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" -v s="$SOAK" 'BEGIN {
    printf "Gateway CPU per proxied /api/version request over a %ss soak: %.1f µs (%d requests, %.2f CPU-s)\n", s, t / hz * 1e6 / n, n, t / hz }'
echo "Gateway RSS every 10 s during the soak (KiB):$samples"
echo "Gateway RSS after the run: $(rss "$PID_gw") KiB (the gateway process only; its backend is a separate Python process)."
