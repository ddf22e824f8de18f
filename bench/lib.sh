# Shared by the bench scripts (sourced after scripts/lib/common.sh).

# bench_binaries: sets SIDECAR (MCP_WARDEN_SIDECAR_BIN, or a release build made now), LOADGEN
# (bench/loadgen, built into target/loadgen) and PY (the venv's python).
bench_binaries() {
  if [[ -n "${MCP_WARDEN_SIDECAR_BIN:-}" ]]; then
    SIDECAR=$MCP_WARDEN_SIDECAR_BIN
  else
    log "building the sidecar (release)"
    cargo build --quiet --release -p mcp-warden-sidecar
    SIDECAR="$ROOT/target/release/mcp-warden-sidecar"
  fi
  log "building the load generator (bench/loadgen, release)"
  cargo build --quiet --release --manifest-path "$ROOT/bench/loadgen/Cargo.toml" \
    --target-dir "$ROOT/target/loadgen"
  LOADGEN="$ROOT/target/loadgen/release/mcp-warden-loadgen"
  PY="$VENV/bin/python"
}

# bench_policy FILE AUDIT: the benchmark's jwt-mode policy for $RESOURCE (ES256 and RS256 keys
# from the upstream's JWKS on $UP_PORT), its audit trail on (AUDIT true) or off (false).
bench_policy() {
  cat >"$1" <<EOF
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata: {name: bench}
spec:
  resource: {url: "$RESOURCE", scopesSupported: [mcp:tools]}
  mode: jwt
  jwt:
    issuer: https://bench.mcp-warden.invalid
    jwksUri: http://127.0.0.1:$UP_PORT/jwks.json
    algorithms: [ES256, RS256]
    requiredScopes: [mcp:tools]
  audit: {enabled: $2}
EOF
}
