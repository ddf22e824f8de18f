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
