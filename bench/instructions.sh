#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind (callgrind): a deterministic figure for
# A/B comparisons of the proxy path on a busy machine, where CPU times vary with the load.
#
# Each target runs alone under callgrind (the sidecar with `--workers 1`, nginx as one process)
# in front of an nginx upstream answering a fixed tools/list result, and gets BASE requests, then,
# in a second run, BASE + COUNT requests, all on one keep-alive connection (bench/loadgen, one
# repeated ES256 token). Instructions per request = the difference of the two runs' totals
# (every thread and process) divided by COUNT: start-up, warm-up and shutdown cancel out.
# Counts user-space instructions only (no kernel time, no cache misses), less the timing-driven
# entropy gathering of the crypto library's random generator at its first use.
#
# Targets: nginx (plain reverse proxy, upstream keepalive: the baseline), the sidecar with its
# audit trail on (the default) and off, and with tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set.
#
# Usage: bench/instructions.sh   env: INSTR_COUNT=2000 INSTR_BASE=200 INSTR_TARGETS=nginx,audit-on,audit-off
#   MCP_WARDEN_SIDECAR_BIN=path (default: a release build) INSTR_KEEP=1 (keep callgrind files)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

COUNT=${INSTR_COUNT:-2000}
BASE=${INSTR_BASE:-200}
TARGETS=${INSTR_TARGETS:-nginx,audit-on,audit-off}

apt_install nginx-light valgrind
[[ -x "$VENV/bin/python" ]] || "$ROOT/scripts/setup-peers" --no-apt
bench_binaries

DIR="$RUN_DIR/instructions-$$"
rm -rf "$DIR"
mkdir -p "$DIR/up/tmp" "$DIR/proxy/tmp" "$DIR/secrets"
UP_PORT=$(free_port)
PORT=$(free_port)
ADMIN_PORT=$(free_port)
RESOURCE="http://127.0.0.1:$PORT/mcp"
"$PY" "$ROOT/bench/bench.py" keys "$DIR" "$RESOURCE"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "${INSTR_KEEP:-}" ]] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TOOLS_LIST='{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echoes back the input","inputSchema":{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}}]}}'
BODY='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'

nginx_conf() { # nginx_conf DIR SERVER-BLOCK
  cat >"$1/nginx.conf" <<EOF
master_process off;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  keepalive_requests 1000000;
  $2
}
EOF
}

nginx_conf "$DIR/up" "
  server {
    listen 127.0.0.1:$UP_PORT;
    location = /jwks.json { default_type application/json; return 200 '$(cat "$DIR/jwks.json")'; }
    location / { default_type application/json; return 200 '$TOOLS_LIST'; }
  }"
nginx -c "$DIR/up/nginx.conf" -p "$DIR/up" &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/" 10

nginx_conf "$DIR/proxy" "
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 8; }
  server {
    listen 127.0.0.1:$PORT;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

# measure TARGET REQUESTS: runs TARGET under callgrind, sends REQUESTS on one connection, stops
# it and prints the instructions counted in all its threads.
measure() {
  local target=$1 requests=$2 out="$DIR/cg-$1-$2" pid ready
  mkdir -p "$out"
  case $target in
    nginx)
      valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p" \
        nginx -c "$DIR/proxy/nginx.conf" -p "$DIR/proxy" 2>"$out/valgrind.log" &
      pid=$!
      ready="http://127.0.0.1:$PORT/"
      ;;
    audit-on | audit-off | tracing)
      bench_policy "$out/policy.yaml" "$([[ $target == audit-off ]] && echo false || echo true)"
      local env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT)
      [[ $target == tracing ]] && env=(env)
      MCP_WARDEN_LOG=warn "${env[@]}" valgrind --tool=callgrind \
        --callgrind-out-file="$out/callgrind.%p" "$SIDECAR" --policy "$out/policy.yaml" \
        --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" --resource-url "$RESOURCE" --secrets-dir "$DIR/secrets" \
        --workers 1 --shutdown-delay 0 >"$out/sidecar.log" 2>"$out/valgrind.log" &
      pid=$!
      ready="http://127.0.0.1:$ADMIN_PORT/readyz"
      ;;
    *) die "unknown target $target" ;;
  esac
  local deadline=$((SECONDS + 120))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ready" 2>/dev/null)" =~ ^(200|404)$ ]]; do
    if ((SECONDS >= deadline)) || ! kill -0 "$pid" 2>/dev/null; then
      cat "$out"/*.log >&2
      die "$target did not start"
    fi
    sleep 0.5
  done
  local report
  report=$("$LOADGEN" tokens --url "$RESOURCE" --tokens "$DIR/token" --requests "$requests" \
    --connections 1 --body "$BODY")
  "$PY" - "$report" "$requests" <<'EOF' || { kill "$pid"; die "$target: not every request succeeded: $report"; }
import json, sys
r = json.loads(sys.argv[1])
sys.exit(0 if r.get("ok") == int(sys.argv[2]) else 1)
EOF
  kill -TERM "$pid"
  wait "$pid" || true
  # Less aws-lc's jitter-entropy gathering when its random generator is first seeded: hundreds
  # of millions of instructions whose count follows timing, not the work (it made the
  # difference of two runs swing by hundreds of instructions per request).
  local total jitter=0 f
  total=$(cat "$out"/callgrind.* | awk '/^summary:/ { n += $2 } END { print n }')
  for f in "$out"/callgrind.*; do
    jitter=$((jitter + $(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
      awk '/jent_measure_jitter/ { gsub(",", "", $1); n += $1 } END { print n + 0 }')))
  done
  echo $((total - jitter))
}

declare -A PER
for target in ${TARGETS//,/ }; do
  [[ $target == tracing && -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]] && continue
  log "$target: $BASE and $((BASE + COUNT)) requests under callgrind"
  low=$(measure "$target" "$BASE")
  high=$(measure "$target" $((BASE + COUNT)))
  PER[$target]=$(((high - low) / COUNT))
done

printf '%-28s %14s %10s\n' "target" "instr/request" "x nginx"
for target in ${TARGETS//,/ }; do
  [[ -n "${PER[$target]:-}" ]] || continue
  ratio=-
  [[ -n "${PER[nginx]:-}" ]] && ratio=$(awk -v a="${PER[$target]}" -v b="${PER[nginx]}" 'BEGIN { printf "%.2fx", a / b }')
  printf '%-28s %14s %10s\n' "$target" "${PER[$target]}" "$ratio"
done
