#!/usr/bin/env bash
# Benchmarks of the sidecar's hot paths, each against a baseline measured in the same run, all on
# 127.0.0.1; prints one table at the end (bench/bench.py report). Modes (BENCH_ONLY, comma-separated;
# default all):
#
# proxy  The upstream alone vs nginx (plain reverse proxy) vs the sidecar (JWT verification on, one
#        repeated ES256 token), alternating rounds. Upstream: nginx (1 worker) answering every POST
#        with a fixed MCP tools/list result. nginx proxy: nginx-light, 2 workers, upstream keepalive.
#        Load: oha (cargo install into .run/tools when missing), 16 connections. Per round, a
#        saturated phase and then a phase at a fixed 1000 requests/s, each in BENCH_TURNS
#        (4) turns that add up to BENCH_SECONDS, the targets taking each turn one after another
#        (after a turn 0 not counted: warm-up, and the machine settles); CPU seconds (schedstat
#        from /proc) of the proxy's processes over each turn, and their RSS after the round.
#        Ratios are the median of the turns' paired ratios (each pair measured seconds apart, so
#        one machine state affects both). With the audit trail on (the default), a second
#        sidecar with it off joins the turns and the audit rows compare the two the same way.
# cold   Per round, four times BENCH_COLD_TOKENS (10,000) distinct valid RS256 tokens never sent
#        before, then as many ES256 ones: each set sent once (every request a verification),
#        then its last BENCH_COLD_TOKENS (the ones the cache holds then; at most its 10,000
#        entries) cycled as many requests as fast as it goes and as many again paced at the
#        cold pass's rate (every request a cache hit); 16 connections (bench/loadgen).
#        Verification cost = cold minus paced warm CPU per request (both passes at one rate),
#        against `openssl speed`'s single-core verify rate for the same algorithm. Next to it,
#        the same verification path run by one thread in a loop outside the server
#        (sidecar/examples/verify_cost, BENCH_COLD_TOKENS new tokens, cold minus cached).
# sse    BENCH_SSE_STREAMS (10,000; fewer when the open-files limit cannot hold two sockets per
#        stream in one process) concurrent GET event streams through nginx and through the sidecar
#        to an upstream sending each an event a minute, held BENCH_SSE_HOLD (70) seconds: RSS per
#        stream, CPU while idle, streams that failed or ended.
# oauth  The sidecar in oauthProxy mode with a real Redis and oidc-provider (bench/oauth.py):
#        codes minted by scripted sign-ins, then authorization-code grants and refresh-token grant
#        chains driven by bench/loadgen; grants/s, sidecar CPU per grant, Redis commands per grant
#        (INFO commandstats) and store round trips per grant (the sidecar's store metrics).
#
# The sidecar writes its audit lines (spec.audit, on by default) to its log; BENCH_AUDIT=off turns
# them off to measure their cost. OTEL_EXPORTER_OTLP_ENDPOINT, when set, is passed on (tracing).
#
# Usage: bench/run.sh    env: BENCH_ONLY=proxy,cold,sse,oauth BENCH_ROUNDS=3 BENCH_SECONDS=8
#   BENCH_TURNS=4
#   BENCH_AUDIT=on BENCH_COLD_TOKENS=10000 BENCH_SSE_STREAMS=10000 BENCH_SSE_HOLD=70 BENCH_SSE_INTERVAL=60
#   BENCH_OAUTH_CODES=1000 BENCH_OAUTH_CHAINS=32 MCP_WARDEN_SIDECAR_BIN=path
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_PHASE=${BENCH_SECONDS:-8}
TURNS=${BENCH_TURNS:-4}
ONLY=${BENCH_ONLY:-proxy,cold,sse,oauth}
COLD_TOKENS=${BENCH_COLD_TOKENS:-10000}
COLD_PASS=$((COLD_TOKENS * 4))
SSE_STREAMS=${BENCH_SSE_STREAMS:-10000}
SSE_HOLD=${BENCH_SSE_HOLD:-70}
SSE_INTERVAL=${BENCH_SSE_INTERVAL:-60}
RATE=1000
CONNECTIONS=16
want() { [[ ",$ONLY," == *",$1,"* ]]; }

apt_install nginx-light redis-server
# Peers (node modules, the venv) only when missing: setup-peers reinstalls them when its stamp
# is older than the lock file, which a fresh checkout always is.
[[ -x "$VENV/bin/python" && -d "$PEERS/node_modules/oidc-provider" ]] || "$ROOT/scripts/setup-peers" --no-apt
OHA="$RUN_DIR/tools/bin/oha"
if want proxy && [[ ! -x "$OHA" ]]; then
  log "installing oha into $RUN_DIR/tools (cargo install, a few minutes once)"
  cargo install --quiet --locked --root "$RUN_DIR/tools" oha
fi
bench_binaries
if want cold; then
  # One thread verifying in a loop, outside the server: the cold mode's second yardstick.
  log "building examples/verify_cost (release)"
  cargo build --quiet --release -p mcp-warden-sidecar --example verify_cost
  VERIFY_COST="$ROOT/target/release/examples/verify_cost"
fi

DIR="$RUN_DIR/bench"
rm -rf "$DIR"
mkdir -p "$DIR/up" "$DIR/proxy" "$DIR/secrets"
UP_PORT=$(free_port)
PROXY_PORT=$(free_port)
SIDECAR_PORT=$(free_port)
ADMIN_PORT=$(free_port)
RESOURCE="http://127.0.0.1:$SIDECAR_PORT/mcp"
want cold || COLD_PASS=0
log "making keys and tokens"
"$PY" "$ROOT/bench/bench.py" keys "$DIR" "$RESOURCE" "$COLD_PASS" "$ROUNDS"
TOKEN=$(cat "$DIR/token")
RESULTS="$DIR/results.jsonl"
: >"$RESULTS"

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

nginx_conf() { # nginx_conf DIR WORKERS SERVER-BLOCK [CONNECTIONS]
  cat >"$1/nginx.conf" <<EOF
worker_processes $2;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections ${4:-1024}; }
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

start_sidecar() { # start_sidecar NAME UPSTREAM [flags]: sets SIDECAR_PID and SIDECAR_URL
  local name=$1 upstream=$2 port admin
  shift 2
  port=$(free_port)
  admin=$(free_port)
  [[ $name == sidecar ]] && port=$SIDECAR_PORT && admin=$ADMIN_PORT
  bench_policy "$DIR/$name-policy.yaml" "$([[ "${BENCH_AUDIT:-on}" == off ]] && echo false || echo true)"
  MCP_WARDEN_LOG=warn "$SIDECAR" --policy "$DIR/$name-policy.yaml" --upstream "$upstream" \
    --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --resource-url "$RESOURCE" \
    --secrets-dir "$DIR/secrets" "$@" >"$DIR/$name.log" 2>&1 &
  SIDECAR_PID=$!
  PIDS+=("$SIDECAR_PID")
  SIDECAR_URL="http://127.0.0.1:$port/mcp"
  local deadline=$((SECONDS + 20))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" == 200 ]]; do
    ((SECONDS < deadline)) || { cat "$DIR/$name.log" >&2; die "$name did not become ready"; }
    sleep 0.2
  done
}

nginx_pids() { # the master and its workers
  local master
  master=$(cat "$1/nginx.pid")
  echo "$master" $(pgrep -P "$master")
}
procstat() { "$PY" "$ROOT/bench/bench.py" procstat "$@"; }

nginx_conf "$DIR/up" 1 "
  server {
    listen 127.0.0.1:$UP_PORT;
    location = /jwks.json { default_type application/json; return 200 '$JWKS'; }
    location / { default_type application/json; return 200 '$TOOLS_LIST'; }
  }"
nginx -c "$DIR/up/nginx.conf" -p "$DIR/up" &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/" 10

BODY='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'

# ---------------------------------------------------------------- proxy: nginx vs sidecar
bench_proxy() {
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
  nginx -c "$DIR/proxy/nginx.conf" -p "$DIR/proxy" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$PROXY_PORT/" 10

  target_url() {
    case $1 in
      direct) echo "http://127.0.0.1:$UP_PORT/mcp" ;;
      nginx) echo "http://127.0.0.1:$PROXY_PORT/mcp" ;;
      sidecar) echo "$RESOURCE" ;;
      audit-off) echo "$AUDIT_OFF_URL" ;;
    esac
  }
  target_pids() {
    case $1 in
      direct) nginx_pids "$DIR/up" ;;
      nginx) nginx_pids "$DIR/proxy" ;;
      sidecar) echo "$MAIN_PID" ;;
      audit-off) echo "$AUDIT_OFF_PID" ;;
    esac
  }
  oha_run() { # oha_run URL OUT.json SECONDS [extra oha flags]
    local url=$1 out=$2 secs=$3
    shift 3
    "$OHA" --no-tui --output-format json -z "${secs}s" -m POST \
      -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -H 'Accept: application/json, text/event-stream' -d "$BODY" "$@" "$url" >"$out"
  }

  # Every target must answer 200 with the tools/list result before we measure it.
  local t got code round cpu0 cpu1 rss hwm targets="direct nginx sidecar"
  [[ -n "${AUDIT_OFF_PID:-}" ]] && targets+=" audit-off"
  for t in $targets; do
    got=$(curl -s -X POST "$(target_url $t)" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d "$BODY")
    [[ "$got" == "$TOOLS_LIST" ]] || die "$t answered: $got"
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$RESOURCE" -d "$BODY")
  [[ "$code" == 401 ]] || die "the sidecar let a request without a token through ($code)"

  # Per round, the saturated phase and then the phase at $RATE, each in $TURNS turns of which
  # every target takes one in turn: the figures that the report pairs are taken seconds apart,
  # under one state of the machine (on a shared VM it changes within a minute). Turn 0 of each
  # phase is not counted: it warms the targets up, and after the saturated phase every target
  # costs more CPU per request for several seconds.
  local kind load turn turn_secs=$((SECONDS_PER_PHASE / TURNS > 0 ? SECONDS_PER_PHASE / TURNS : 1))
  for round in $(seq 1 "$ROUNDS"); do
    for kind in sat rate; do
      if [[ $kind == sat ]]; then load=(-c "$CONNECTIONS"); else load=(-c "$CONNECTIONS" -q "$RATE"); fi
      log "proxy round $round/$ROUNDS: $kind (oha ${load[*]}), $TURNS turns of $turn_secs s"
      for turn in $(seq 0 "$TURNS"); do
        for t in $targets; do
          read -r cpu0 _ _ < <(procstat $(target_pids "$t"))
          oha_run "$(target_url "$t")" "$DIR/$kind-$t-$round-$turn.json" "$turn_secs" "${load[@]}"
          read -r cpu1 _ _ < <(procstat $(target_pids "$t"))
          ((turn > 0)) || continue
          "$PY" "$ROOT/bench/bench.py" turn-row "$kind" "$t" "$round" "$turn" \
            "$DIR/$kind-$t-$round-$turn.json" "$cpu0" "$cpu1" >>"$RESULTS"
        done
      done
    done
    for t in $targets; do
      read -r _ rss hwm < <(procstat $(target_pids "$t"))
      "$PY" "$ROOT/bench/bench.py" memory-row "$t" "$round" "$rss" "$hwm" >>"$RESULTS"
    done
  done
  kill "$(cat "$DIR/proxy/nginx.pid")"
}

# ---------------------------------------------------------------- cold: distinct tokens
bench_cold() {
  local alg round rate cold0 cold1 warm0 warm1 paced1 cold warm paced
  for alg in RS256 ES256; do
    log "openssl speed, $alg"
    rate=$("$PY" "$ROOT/bench/bench.py" openssl "$alg")
    echo "{\"kind\": \"openssl\", \"alg\": \"$alg\", \"verify_per_s\": $rate}" >>"$RESULTS"
  done
  tokens() { # tokens FILE REQUESTS: one loadgen run, its JSON on stdout
    local file=$1 requests=$2
    shift 2
    "$LOADGEN" tokens --url "$RESOURCE" --tokens "$file" --requests "$requests" \
      --connections "$CONNECTIONS" --body "$BODY" "$@"
  }
  # The cold pass sends COLD_PASS tokens never seen before, four sets' worth, so that it lasts
  # about a second; the cache then holds the last COLD_TOKENS of them, the warm set.
  local all warm_set requests=$COLD_PASS
  for round in $(seq 1 "$ROUNDS"); do
    for alg in RS256 ES256; do
      log "cold round $round/$ROUNDS: $alg, $COLD_PASS distinct tokens, then $COLD_TOKENS cached"
      all="$DIR/tokens-$alg-$round" warm_set="$DIR/warm-$alg-$round"
      tail -n "$COLD_TOKENS" "$all" >"$warm_set"
      read -r cold0 _ _ < <(procstat "$MAIN_PID")
      cold=$(tokens "$all" "$requests")
      read -r cold1 _ _ < <(procstat "$MAIN_PID")
      tokens "$warm_set" "$COLD_TOKENS" >/dev/null # any the cache no longer holds, again
      read -r warm0 _ _ < <(procstat "$MAIN_PID")
      warm=$(tokens "$warm_set" "$requests")
      read -r warm1 _ _ < <(procstat "$MAIN_PID")
      paced=$(tokens "$warm_set" "$requests" \
        --rate "$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["per_second"])' "$cold")")
      read -r paced1 _ _ < <(procstat "$MAIN_PID")
      "$PY" "$ROOT/bench/bench.py" cold-row "$alg" "$round" "$cold" "$warm" "$paced" \
        "$cold0" "$cold1" "$warm0" "$warm1" "$paced1" >>"$RESULTS"
      log "cold round $round/$ROUNDS: $alg, examples/verify_cost (one thread, in a loop)"
      "$VERIFY_COST" "$alg" "$COLD_TOKENS" --json >>"$RESULTS"
    done
  done
}

# ---------------------------------------------------------------- sse: idle streams
bench_sse() {
  # Two sockets per stream in one process (client side and upstream side): the open-files
  # limit bounds the streams one sidecar can hold.
  ulimit -n "$(ulimit -Hn)"
  local limit=$((($(ulimit -n) - 200) / 2))
  if ((SSE_STREAMS > limit)); then
    log "sse: the open-files limit ($(ulimit -n), hard) holds $limit streams, not $SSE_STREAMS"
    SSE_STREAMS=$limit
  fi
  local sse_up sse_nginx t url pids rss0 cpu0 cpu1 rss1 t0 t1 hold_pid
  sse_up=$(free_port)
  sse_nginx=$(free_port)
  "$LOADGEN" sse-server --listen "127.0.0.1:$sse_up" --interval "$SSE_INTERVAL" &
  local sse_up_pid=$!
  PIDS+=("$sse_up_pid")
  mkdir -p "$DIR/sse-nginx"
  nginx_conf "$DIR/sse-nginx" 2 "
  server {
    listen 127.0.0.1:$sse_nginx;
    location / {
      proxy_pass http://127.0.0.1:$sse_up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }" $((SSE_STREAMS * 2 + 100))
  nginx -c "$DIR/sse-nginx/nginx.conf" -p "$DIR/sse-nginx" &
  PIDS+=($!)
  start_sidecar sse-sidecar "http://127.0.0.1:$sse_up" --max-connections $((SSE_STREAMS + 100))
  local sse_sidecar_pid=$SIDECAR_PID sse_sidecar_url=$SIDECAR_URL
  sleep 1
  for t in nginx sidecar; do
    case $t in
      nginx) url="http://127.0.0.1:$sse_nginx/mcp" pids=$(nginx_pids "$DIR/sse-nginx") ;;
      sidecar) url=$sse_sidecar_url pids=$sse_sidecar_pid ;;
    esac
    log "sse: $SSE_STREAMS streams through $t, held ${SSE_HOLD}s"
    read -r _ rss0 _ < <(procstat $pids)
    rm -f "$DIR/sse-ready"
    "$LOADGEN" sse-hold --url "$url" --token "$TOKEN" --streams "$SSE_STREAMS" \
      --hold "$SSE_HOLD" --ready "$DIR/sse-ready" >"$DIR/sse-$t.json" &
    hold_pid=$!
    until [[ -s "$DIR/sse-ready" ]] || ! kill -0 "$hold_pid" 2>/dev/null; do sleep 0.2; done
    sleep 2
    t0=$(date +%s.%N)
    read -r cpu0 _ _ < <(procstat $pids)
    sleep $((SSE_HOLD - 6))
    read -r cpu1 rss1 _ < <(procstat $pids)
    t1=$(date +%s.%N)
    wait "$hold_pid" || die "sse-hold through $t failed: $(cat "$DIR/sse-$t.json")"
    "$PY" "$ROOT/bench/bench.py" sse-row "$t" "$DIR/sse-$t.json" "$rss0" "$rss1" "$cpu0" "$cpu1" \
      "$t0" "$t1" >>"$RESULTS"
    sleep 2 # the streams close
  done
  kill "$sse_sidecar_pid" "$(cat "$DIR/sse-nginx/nginx.pid")" "$sse_up_pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- oauth: grants
bench_oauth() {
  log "oauth: bench/oauth.py"
  MCP_WARDEN_SIDECAR_BIN=$SIDECAR "$PY" "$ROOT/bench/oauth.py" --loadgen "$LOADGEN" \
    --rounds "$ROUNDS" --seconds "$SECONDS_PER_PHASE" --codes "${BENCH_OAUTH_CODES:-1000}" \
    --chains "${BENCH_OAUTH_CHAINS:-32}" --work "$DIR/oauth" >>"$RESULTS"
}

if want proxy || want cold; then
  start_sidecar sidecar "http://127.0.0.1:$UP_PORT"
  MAIN_PID=$SIDECAR_PID
fi
if want proxy && [[ "${BENCH_AUDIT:-on}" != off ]]; then
  BENCH_AUDIT=off start_sidecar audit-off "http://127.0.0.1:$UP_PORT"
  AUDIT_OFF_PID=$SIDECAR_PID
  AUDIT_OFF_URL=$SIDECAR_URL
fi
machine() { echo "{\"kind\": \"machine\", \"load\": $(cut -d' ' -f2 /proc/loadavg)}" >>"$RESULTS"; }
if want proxy; then machine && bench_proxy; fi
if want cold; then machine && bench_cold; fi
if want sse; then machine && bench_sse; fi
if want oauth; then machine && bench_oauth; fi
machine

"$PY" "$ROOT/bench/bench.py" report "$RESULTS"
log "raw results in $DIR"
