# `scripts/demo --proxy` (sourced by scripts/demo after its checks, with DIR, PIDS, ports, ISSUER,
# MCP_URL, SIDECAR and SMOKE set): the sidecar in oauthProxy mode in front of the local OpenID
# provider and server-everything, so MCP clients sign in through a browser on this machine.

UPSTREAM_CLIENT_ID=demo-proxy
UPSTREAM_CLIENT_SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
ORIGIN="http://127.0.0.1:$PORT"

# The IdP's signing key (private JWK) and the proxy's own keys (ES256 PEM, AES key ring), fresh
# for each run, made by Node's crypto.
mkdir -p "$DIR/secrets/keys" "$DIR/secrets/upstream"
node -e '
  const { generateKeyPairSync, randomBytes } = require("node:crypto");
  const fs = require("node:fs");
  const [dir] = process.argv.slice(1);
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
  fs.writeFileSync(`${dir}/idp-keys.json`,
    JSON.stringify({ keys: [{ ...jwk, kid: "demo-1", alg: "ES256", use: "sig" }] }));
  const pem = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "pem", type: "pkcs8" });
  fs.writeFileSync(`${dir}/secrets/keys/signing.pem`, pem);
  fs.writeFileSync(`${dir}/secrets/keys/encryption.keys`, `k1:${randomBytes(32).toString("base64")}\n`);
' "$DIR"
echo "$UPSTREAM_CLIENT_SECRET" >"$DIR/secrets/upstream/client-secret"
cat >"$DIR/idp.json" <<JSON
{
  "port": $IDP_PORT,
  "jwksFile": "$DIR/idp-keys.json",
  "accessTokenTtl": 600,
  "clients": [{
    "client_id": "$UPSTREAM_CLIENT_ID", "client_secret": "$UPSTREAM_CLIENT_SECRET",
    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
    "redirect_uris": ["$ORIGIN/callback"], "token_endpoint_auth_method": "client_secret_basic"
  }]
}
JSON
cat >"$DIR/policy.yaml" <<YAML
apiVersion: mcpwarden.dev/v1alpha1
kind: McpAuthPolicy
metadata:
  name: demo-proxy
  namespace: default
spec:
  resource:
    url: $MCP_URL
    scopesSupported: [mcp:tools]
    name: mcp-warden demo
  mode: oauthProxy
  oauthProxy:
    provider: oidc
    issuer: $ISSUER
    clientId: $UPSTREAM_CLIENT_ID
    clientSecretRef: {name: upstream, key: client-secret}
    scopes: [openid, offline_access, email, profile]
    extraAuthorizeParams: {prompt: consent}   # the demo provider issues refresh tokens only then
    allowedRedirectUris: [http://localhost, http://127.0.0.1]   # loopback, any port
    signingKeySecretRef: {name: keys, key: signing.pem}
    encryptionKeySecretRef: {name: keys, key: encryption.keys}
    access: {anyAuthenticatedUser: true}
    scopeGrants:
      mcp:tools: {anyAuthenticatedUser: true}
  cors:
    allowedOrigins: [http://localhost:6274, http://127.0.0.1:6274]   # MCP Inspector
YAML

log "starting the OpenID provider (with a login page) on $ISSUER"
(cd "$PEERS" && exec node idp.mjs "$DIR/idp.json") >"$DIR/idp.log" 2>&1 &
PIDS+=($!)
log "starting server-everything on 127.0.0.1:$MCP_PORT"
(cd "$PEERS" && PORT=$MCP_PORT exec node -r ./loopback.cjs \
  node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp) \
  >"$DIR/server-everything.log" 2>&1 &
PIDS+=($!)
wait_http "$ISSUER/.well-known/openid-configuration" 30
wait_http "http://127.0.0.1:$MCP_PORT/mcp" 30

log "starting mcp-warden-sidecar (oauthProxy) on $ORIGIN (admin 127.0.0.1:$ADMIN_PORT)"
MCP_WARDEN_LOG=${MCP_WARDEN_LOG:-info} "$SIDECAR" --policy "$DIR/policy.yaml" \
  --upstream "http://127.0.0.1:$MCP_PORT" --listen "127.0.0.1:$PORT" \
  --admin "127.0.0.1:$ADMIN_PORT" --secrets-dir "$DIR/secrets" --log-format text --shutdown-delay 0 \
  >"$DIR/sidecar.log" 2>&1 &
PIDS+=($!)
deadline=$((SECONDS + 30))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" == 200 ]]; do
  ((SECONDS < deadline)) || { cat "$DIR/sidecar.log" >&2; die "the sidecar did not become ready"; }
  sleep 0.2
done

cat <<EOF

mcp-warden demo (OAuth proxy) is running (logs and policy in $DIR).

  MCP URL (protected):   $MCP_URL
  Authorization server:  $ORIGIN (the sidecar; it signs users in at $ISSUER)
  Metrics:               curl -s http://127.0.0.1:$ADMIN_PORT/metrics

Sign in: the provider's login page takes any user name and password; approve the provider's
prompt, then mcp-warden's consent page (it names the client, the user and the scope mcp:tools).

MCP Inspector (browser):
  npx @modelcontextprotocol/inspector
  then in the page at http://localhost:6274: Transport Type "Streamable HTTP",
  URL $MCP_URL, "Connect" (or "Open Auth Settings" > "Quick OAuth Flow").

mcp-remote (a stdio bridge, e.g. for Claude Desktop):
  npx mcp-remote $MCP_URL --transport http-only
  Claude Desktop: {"mcpServers": {"warden-demo": {"command": "npx",
    "args": ["mcp-remote", "$MCP_URL", "--transport", "http-only"]}}}

Check the setup as a client sees it:
  cargo run -q -p mcp-warden-operator --bin mcp-warden -- doctor $MCP_URL
EOF

if [[ -n "$SMOKE" ]]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$MCP_URL" -H 'Content-Type: application/json' -d '{}')
  [[ "$code" == 401 ]] || die "expected 401 without a token, got $code"
  # mcp-remote's test client signs in with the scripted browser (tests/peers/browser.py as
  # x-www-browser) and lists the tools. Its stdin must stay open while it runs.
  exec 3< <(sleep 300)
  holder=$!
  out=$(cd "$PEERS" && PATH="$PEERS/browser:$PATH" BROWSER="$PEERS/browser/x-www-browser" \
    BROWSER_LOG="$DIR/browser.log" MCP_REMOTE_CONFIG_DIR="$DIR/mcp-remote" \
    timeout 120 node node_modules/mcp-remote/dist/client.js "$MCP_URL" --transport http-only \
    <&3 2>&1) || true
  exec 3<&-
  kill "$holder" 2>/dev/null || true
  if [[ "$out" != *'Connected successfully'* || "$out" != *'"name": "echo"'* ]]; then
    echo "$out" | tail -40 >&2
    die "mcp-remote did not sign in and list the tools (logs in $DIR)"
  fi
  log "smoke test passed: mcp-remote signed in through the consent page and listed the tools"
  exit 0
fi

echo "Press Ctrl-C to stop."
wait -n "${PIDS[@]}" || true
log "a demo process exited; see the logs in $DIR"
exit 1
