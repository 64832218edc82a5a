#!/usr/bin/env bash
# End-to-end benchmark: `marimo run` (marimo's own server) against `marimo-rs` (this gateway in
# front of marimo backends), same notebooks, same machine, same load generator, one run; the
# gateway's own answers (frontend file, refused credentials) also against a bare hyper server
# answering the same bytes from memory (benches/bare_hyper.rs). Prints Markdown tables.
#
#   benches/e2e.sh [NOTEBOOK]
#   env: DURATION=10s CONNECTIONS=32 THREADS=2 ROUNDS=3 WS_RUNS=30 SOAK=60 FIRST_PAGES=5
#        FIRST_PAUSE=4 BARE_THREADS=same|multi
#
# Needs wrk (Debian package `wrk`), curl and python3. Builds what it runs (release). Talks to
# 127.0.0.1 only; every process it starts is stopped by PID on exit, and its files are in one
# temporary folder, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
NOTEBOOK=${1:-examples/notebooks/intro.py}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WS_RUNS=${WS_RUNS:-30}
ROUNDS=${ROUNDS:-3}
SOAK=${SOAK:-60}
FIRST_PAGES=${FIRST_PAGES:-5}
FIRST_PAUSE=${FIRST_PAUSE:-4}
TOKEN=bench-token-0123456789

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "e2e.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --features cli --bin marimo-rs
BIN=$TARGET/release/marimo-rs
BARE=$(cargo build --release --quiet --bench bare_hyper --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bare_hyper" and m.get("executable"):
        print(m["executable"])')
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
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
first_line() { # $1 = file: waits for the URL line a server prints, echoes its origin
    for _ in $(seq 1 1200); do
        [ -s "$1" ] && break
        sleep 0.1
    done
    head -n1 "$1" | sed -E 's#^(https?://[^/?]*).*#\1#'
}
start_gateway() { # $1 = name, rest = arguments after the subcommand; sets URL_<name>, PID_<name>
    local name=$1; shift
    "$BIN" "$@" --headless --port 0 >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    eval "PID_$name=$!"
    local url
    url=$(first_line "$WORK/$name.out")
    eval "URL_$name=$url"
    wait_health "$url"
}
start_marimo() { # $1 = name, rest = arguments after `run`
    local name=$1; shift
    local port
    port=$(free_port)
    "$PYTHON" -m marimo run --headless --host 127.0.0.1 --port "$port" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    eval "PID_$name=$!"
    eval "URL_$name=http://127.0.0.1:$port"
    wait_health "http://127.0.0.1:$port"
}
children() { ps -o pid= --ppid "$1" | tr -d ' '; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The gateway provisions the managed virtualenv; marimo itself runs from the same one.
start_gateway gw run --no-token "$NOTEBOOK"
CACHE=${MARIMO_RS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/marimo-rs}
VERSION=$(grep -o 'MARIMO_VERSION: &str = "[^"]*"' src/notebook/python.rs | cut -d'"' -f2)
PYTHON=${MARIMO_RS_PYTHON:-$CACHE/marimo-$VERSION/bin/python}
start_marimo mo --no-token "$NOTEBOOK"
start_gateway gwauth run --token="$TOKEN" "$NOTEBOOK"
start_marimo moauth --token --token-password="$TOKEN" "$NOTEBOOK"
# Warm both pages (the gateway starts its backend on the first request).
for url in "$URL_gw" "$URL_mo"; do
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "$url/")" = 200 ] && break
        sleep 0.2
    done
done
ASSET=$(curl -s "$URL_mo/" | grep -o '\./assets/[^"]*\.js' | sed -n '1s:^\./::p')
ASSET_BYTES=$(curl -s -o /dev/null -w '%{size_download}' "$URL_mo/$ASSET")

# The bare hyper server answers what the gateway answered, recorded.
curl -s -D "$WORK/asset.head" -o "$WORK/asset.body" "$URL_gw/$ASSET"
curl -s -D "$WORK/reject.head" -o "$WORK/reject.body" "$URL_gwauth/api/version"
# It runs on the runtime the `marimo-rs` command picks on this machine (one thread with at most
# two CPUs, see src/bin/marimo-rs/main.rs), so that the ratio compares code, not thread counts;
# BARE_THREADS=multi gives it Tokio's multi-thread runtime instead.
BARE_RUNTIME=()
if [ "${BARE_THREADS:-same}" = same ] && [ "$(nproc)" -le 2 ]; then BARE_RUNTIME=(--current-thread); fi
"$BARE" "${BARE_RUNTIME[@]}" "/$ASSET=$WORK/asset" "/api/version=$WORK/reject" >"$WORK/bare.out" 2>"$WORK/bare.err" &
PIDS+=($!)
URL_bare=$(first_line "$WORK/bare.out")

run_wrk() { # $1 = url, rest = extra wrk args; prints "rps p50 p99 non2xx"
    local url=$1; shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$WORK/wrk.txt" 2>&1 || true
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk.txt")
    echo "${rps:-0} ${p50:-?} ${p99:-?} ${non2xx:-0}"
}

# The run with the median req/s of ROUNDS runs (lines "rps p50 p99 non2xx" on stdin).
median_run() { sort -g -k1,1 | awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

row() { # $1 = label, $2 = gateway url, $3 = marimo url, $4 = bare url or "", rest = wrk args
    local label=$1 g=$2 m=$3 b=$4; shift 4
    # Interleaved rounds (gateway, marimo, bare, gateway…) so that drift on the machine
    # (caches, other load) hits all alike; each side reports its median round.
    local gruns="" mruns="" bruns=""
    for _ in $(seq 1 "$ROUNDS"); do
        gruns+="$(run_wrk "$g" "$@")"$'\n'
        mruns+="$(run_wrk "$m" "$@")"$'\n'
        [ -z "$b" ] || bruns+="$(run_wrk "$b" "$@")"$'\n'
    done
    read -r grps gp50 gp99 gbad <<<"$(printf '%s' "$gruns" | median_run)"
    read -r mrps mp50 mp99 _ <<<"$(printf '%s' "$mruns" | median_run)"
    local bare="— | —"
    if [ -n "$b" ]; then
        read -r brps _ _ _ <<<"$(printf '%s' "$bruns" | median_run)"
        bare="$brps | $(ratio "$grps" "$brps")×"
    fi
    printf '| %s | %s | %s / %s | %s | %s / %s | %s× | %s |\n' \
        "$label" "$grps" "$gp50" "$gp99" "$mrps" "$mp50" "$mp99" "$(ratio "$grps" "$mrps")" "$bare"
    [ "$gbad" = 0 ] || echo "|  ↳ gateway non-2xx: $gbad | | | | | | | |"
}

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds per side, loopback; notebook $NOTEBOOK; marimo $VERSION; $(nproc) CPUs; bare hyper runtime: ${BARE_RUNTIME[*]:-multi-thread}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| request | gateway req/s | gateway p50 / p99 | marimo req/s | marimo p50 / p99 | gateway / marimo | bare hyper req/s | gateway / bare |"
echo "|---|---|---|---|---|---|---|---|"
row "GET / (notebook page)" "$URL_gw/" "$URL_mo/" "" -H 'Accept: text/html'
row "GET /api/version (proxied)" "$URL_gw/api/version" "$URL_mo/api/version" ""
row "GET /favicon.ico (15 KB)" "$URL_gw/favicon.ico" "$URL_mo/favicon.ico" ""
row "GET /$ASSET (main bundle, $ASSET_BYTES B)" "$URL_gw/$ASSET" "$URL_mo/$ASSET" "$URL_bare/$ASSET"
row "GET /$ASSET, Accept-Encoding: br, gzip" "$URL_gw/$ASSET" "$URL_mo/$ASSET" "" -H 'Accept-Encoding: br, gzip'
row "GET /api/version, no credentials (token on)" "$URL_gwauth/api/version" "$URL_moauth/api/version" "$URL_bare/api/version"

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
printf '| WebSocket connect → kernel-ready, ms (%s sequential sessions; p50 / p99) | | %s / %s | | %s / %s | %+.1f ms | | |\n' \
    "$WS_RUNS" "$gws" "$gws99" "$mws" "$mws99" "$(awk -v a="$gws" -v b="$mws" 'BEGIN {print a-b}')"
printf '| 20 concurrent WebSocket sessions → completed-run, ms (wall %s vs %s) | | %s / %s | | %s / %s | %s× | | |\n' \
    "$gwall" "$mwall" "$gcr" "$gcr99" "$mcr" "$mcr99" "$(ratio "$mwall" "$gwall")"

# The first page of notebooks nobody opened yet, in directory mode: the time from the first
# request until marimo's page arrives, as a browser gets it (a "starting" page reloads after
# its Retry-After). FIRST_PAUSE seconds between notebooks, as between users opening them,
# leaves the warm pool time to refill. Median of FIRST_PAGES notebooks per side.
mkdir -p "$WORK/gwdir" "$WORK/modir"
for i in $(seq 1 "$FIRST_PAGES"); do
    cp "$NOTEBOOK" "$WORK/gwdir/nb$i.py"
    cp "$NOTEBOOK" "$WORK/modir/nb$i.py"
done
start_gateway gwdir serve --no-token --dir "/apps=$WORK/gwdir"
start_marimo modir --no-token "$WORK/modir"
sleep "$FIRST_PAUSE"
POOL=$(children "$PID_gwdir" | tr '\n' ' ')
cat >"$WORK/first.py" <<'PY'
import statistics, sys, time, urllib.error, urllib.request
def first_page(url):
    t0 = time.perf_counter()
    while True:
        request = urllib.request.Request(url, headers={"Accept": "text/html"})
        try:
            with urllib.request.urlopen(request) as response:
                if b"__MARIMO_MOUNT_CONFIG__" in response.read():
                    return (time.perf_counter() - t0) * 1000
        except urllib.error.HTTPError as error:
            time.sleep(int(error.headers.get("Retry-After", "1")))
pattern, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
times = []
for i in range(1, count + 1):
    times.append(first_page(pattern.replace("{}", str(i))))
    time.sleep(pause)
print(f"{statistics.median(times):.0f} {' '.join(f'{t:.0f}' for t in times)}")
PY
read -r gfirst gfirsts <<<"$(python3 "$WORK/first.py" "$URL_gwdir/apps/nb{}/" "$FIRST_PAGES" "$FIRST_PAUSE")"
read -r mfirst mfirsts <<<"$(python3 "$WORK/first.py" "$URL_modir/?file=nb{}.py" "$FIRST_PAGES" "$FIRST_PAUSE")"
printf '| first page of a never-opened notebook, directory mode, ms (median of %s: %s vs %s) | | %s | | %s | %s× | | |\n' \
    "$FIRST_PAGES" "$gfirsts" "$mfirsts" "$gfirst" "$mfirst" "$(ratio "$gfirst" "$mfirst")"

# Gateway CPU per proxied request, and RSS over a soak of SOAK seconds of proxied load.
TICKS=$(getconf CLK_TCK)
before=$(cpu_ticks "$PID_gw")
switches() { cat /proc/"$PID_gw"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
switches_before=$(switches)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SOAK}s" "$URL_gw/api/version" >"$WORK/soak.txt" 2>&1 &
WRK=$!
samples=""
for _ in $(seq 1 $((SOAK / 10))); do
    sleep 10
    samples="$samples $(rss "$PID_gw")"
done
wait "$WRK" || true
after=$(cpu_ticks "$PID_gw")
switches_after=$(switches)
requests=$(awk '/requests in/ {print $1}' "$WORK/soak.txt")
echo
awk -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" -v s="$SOAK" -v cs=$((switches_after - switches_before)) 'BEGIN {
    printf "Gateway CPU per proxied /api/version request over a %ss soak: %.1f µs (%d requests, %.2f CPU-s, %.2f voluntary context switches per request)\n", s, t / hz * 1e6 / n, n, t / hz, cs / n }'
echo "Gateway RSS every 10 s during the soak (KiB):$samples"
echo "Gateway RSS after the run: $(rss "$PID_gw") KiB (the gateway process only; its backend and warm pool process are separate)."
echo "Warm pool of the directory gateway before its first notebook: $(for pid in $POOL; do printf '%s KiB ' "$(rss "$pid" 2>/dev/null || echo gone)"; done)(one waiting Python each)."

# Memory with 100 notebook mounts that were never opened (benches/idle_mounts.rs: requests
# that start no backend, then the process's RSS). No backend starts there, so no warm pool
# either: the pool's processes are the ones reported above.
cargo bench --quiet --bench idle_mounts 2>/dev/null | grep '^idle_mounts:' || echo "idle_mounts: failed"
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
