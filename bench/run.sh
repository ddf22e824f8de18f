#!/usr/bin/env bash
# Benchmark: the upstream alone vs nginx (plain reverse proxy) vs mcp-warden-sidecar (JWT
# verification on), in one run with alternating rounds, all on 127.0.0.1.
#
# Upstream: nginx (1 worker) answering every POST with a fixed MCP tools/list result.
# nginx proxy: Debian nginx-light, 2 workers, upstream keepalive. Sidecar: release build, ES256
# token from a local key (JWKS served by the upstream nginx).
# Load: oha (cargo install oha into .run/tools when missing). Per target and round: throughput
# with 16 connections for BENCH_SECONDS, then latency at a fixed 1000 requests/s for BENCH_SECONDS;
# CPU seconds (utime+stime from /proc) of the proxy's processes over the fixed-rate phase and
# over the saturated phase, and their RSS. Prints medians and ratios.
#
# The sidecar writes its audit lines (spec.audit, on by default) to its log; BENCH_AUDIT=off turns
# them off to measure their cost. OTEL_EXPORTER_OTLP_ENDPOINT, when set, is passed on (tracing).
#
# Usage: bench/run.sh    env: BENCH_ROUNDS=3 BENCH_SECONDS=8 BENCH_AUDIT=on MCP_WARDEN_SIDECAR_BIN=path
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_PHASE=${BENCH_SECONDS:-8}
RATE=1000
CONNECTIONS=16

apt_install nginx-light
"$ROOT/scripts/setup-peers" --no-apt
OHA="$RUN_DIR/tools/bin/oha"
if [[ ! -x "$OHA" ]]; then
  log "installing oha into $RUN_DIR/tools (cargo install, a few minutes once)"
  cargo install --quiet --locked --root "$RUN_DIR/tools" oha
fi
if [[ -n "${MCP_WARDEN_SIDECAR_BIN:-}" ]]; then
  SIDECAR=$MCP_WARDEN_SIDECAR_BIN
else
  log "building the sidecar (release)"
  cargo build --quiet --release -p mcp-warden-sidecar
  SIDECAR="$ROOT/target/release/mcp-warden-sidecar"
fi

DIR="$RUN_DIR/bench"
rm -rf "$DIR"
mkdir -p "$DIR/up" "$DIR/proxy" "$DIR/secrets"
UP_PORT=$(free_port)
PROXY_PORT=$(free_port)
SIDECAR_PORT=$(free_port)
ADMIN_PORT=$(free_port)
RESOURCE="http://127.0.0.1:$SIDECAR_PORT/mcp"
"$VENV/bin/python" "$ROOT/bench/bench.py" keys "$DIR" "$RESOURCE"
TOKEN=$(cat "$DIR/token")

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TOOLS_LIST='{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echoes back the input","inputSchema":{"type":"object","properties":{"message":{"type":"string","description":"Message to echo"}},"required":["message"]}},{"name":"add","description":"Adds two numbers","inputSchema":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}}]}}'
JWKS=$(cat "$DIR/jwks.json")

nginx_conf() { # nginx_conf DIR WORKERS SERVER-BLOCK
  cat >"$1/nginx.conf" <<EOF
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  keepalive_requests 1000000;
  $3
}
EOF
  mkdir -p "$1/tmp"
}

nginx_conf "$DIR/up" 1 "
  server {
    listen 127.0.0.1:$UP_PORT;
    location = /jwks.json { default_type application/json; return 200 '$JWKS'; }
    location / { default_type application/json; return 200 '$TOOLS_LIST'; }
  }"
nginx_conf "$DIR/proxy" 2 "
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
cat >"$DIR/policy.yaml" <<EOF
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: bench}
spec:
  resource: {url: "$RESOURCE", scopesSupported: [mcp:tools]}
  mode: jwt
  jwt:
    issuer: https://bench.mcp-warden.invalid
    jwksUri: http://127.0.0.1:$UP_PORT/jwks.json
    algorithms: [ES256]
    requiredScopes: [mcp:tools]
  audit: {enabled: $([[ "${BENCH_AUDIT:-on}" == off ]] && echo false || echo true)}
EOF

nginx -c "$DIR/up/nginx.conf" -p "$DIR/up" &
PIDS+=($!)
nginx -c "$DIR/proxy/nginx.conf" -p "$DIR/proxy" &
PIDS+=($!)
MCP_WARDEN_LOG=warn "$SIDECAR" --policy "$DIR/policy.yaml" --upstream "http://127.0.0.1:$UP_PORT" \
  --listen "127.0.0.1:$SIDECAR_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
  --secrets-dir "$DIR/secrets" >"$DIR/sidecar.log" 2>&1 &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
wait_http "http://127.0.0.1:$UP_PORT/" 10
wait_http "http://127.0.0.1:$PROXY_PORT/" 10
deadline=$((SECONDS + 20))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" == 200 ]]; do
  ((SECONDS < deadline)) || { cat "$DIR/sidecar.log" >&2; die "the sidecar did not become ready"; }
  sleep 0.2
done

nginx_pids() { # the master and its workers
  local master
  master=$(cat "$1/nginx.pid")
  echo "$master" $(pgrep -P "$master")
}
target_url() {
  case $1 in
    direct) echo "http://127.0.0.1:$UP_PORT/mcp" ;;
    nginx) echo "http://127.0.0.1:$PROXY_PORT/mcp" ;;
    sidecar) echo "$RESOURCE" ;;
  esac
}
target_pids() {
  case $1 in
    direct) nginx_pids "$DIR/up" ;;
    nginx) nginx_pids "$DIR/proxy" ;;
    sidecar) echo "$SIDECAR_PID" ;;
  esac
}

BODY='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
oha_run() { # oha_run URL OUT.json SECONDS [extra oha flags]
  local url=$1 out=$2 secs=$3
  shift 3
  "$OHA" --no-tui --output-format json -z "${secs}s" -m POST \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -d "$BODY" "$@" "$url" >"$out"
}

# Every target must answer 200 with the tools/list result before we measure it.
for t in direct nginx sidecar; do
  got=$(curl -s -X POST "$(target_url $t)" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d "$BODY")
  [[ "$got" == "$TOOLS_LIST" ]] || die "$t answered: $got"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$RESOURCE" -d "$BODY")
[[ "$code" == 401 ]] || die "the sidecar let a request without a token through ($code)"

RESULTS="$DIR/results.jsonl"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for t in direct nginx sidecar; do
    url=$(target_url "$t")
    log "round $round/$ROUNDS: $t"
    oha_run "$url" /dev/null 2 -c "$CONNECTIONS"   # warm-up
    read -r sat0 _ _ < <("$VENV/bin/python" bench/bench.py procstat $(target_pids "$t"))
    oha_run "$url" "$DIR/tp-$t-$round.json" "$SECONDS_PER_PHASE" -c "$CONNECTIONS"
    read -r cpu0 _ _ < <("$VENV/bin/python" bench/bench.py procstat $(target_pids "$t"))
    oha_run "$url" "$DIR/lat-$t-$round.json" "$SECONDS_PER_PHASE" -c "$CONNECTIONS" -q "$RATE"
    read -r cpu1 rss hwm < <("$VENV/bin/python" bench/bench.py procstat $(target_pids "$t"))
    "$VENV/bin/python" - "$t" "$round" "$DIR/tp-$t-$round.json" "$DIR/lat-$t-$round.json" \
      "$sat0" "$cpu0" "$cpu1" "$rss" "$hwm" >>"$RESULTS" <<'EOF'
import json, sys
t, rnd, tp, lat, sat0, cpu0, cpu1, rss, hwm = sys.argv[1:]
tp, lat = json.load(open(tp)), json.load(open(lat))
def ok(d):
    codes = d.get("statusCodeDistribution", {})
    errors = {k: v for k, v in d.get("errorDistribution", {}).items()
              if k != "aborted due to deadline"}  # requests in flight when the phase ends
    return (sum(v for k, v in codes.items() if k == "200"),
            sum(v for k, v in codes.items() if k != "200") + sum(errors.values()))
ok_tp, bad_tp = ok(tp)
ok_lat, bad_lat = ok(lat)
secs = tp["summary"]["total"]
print(json.dumps({
    "target": t, "round": int(rnd),
    "rps": ok_tp / secs,
    "p50_ms": lat["latencyPercentiles"]["p50"] * 1000,
    "p99_ms": lat["latencyPercentiles"]["p99"] * 1000,
    "cpu_ms_per_1k": (float(cpu1) - float(cpu0)) * 1000 / (ok_lat / 1000) if ok_lat else None,
    "cpu_sat_ms_per_1k": (float(cpu0) - float(sat0)) * 1000 / (ok_tp / 1000) if ok_tp else None,
    "rss_mb": float(rss) / 1024, "hwm_mb": float(hwm) / 1024,
    "errors": bad_tp + bad_lat,
}))
EOF
  done
done

"$VENV/bin/python" bench/bench.py report "$RESULTS"
log "raw results in $DIR"
