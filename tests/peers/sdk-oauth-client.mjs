// The MCP TypeScript SDK client through an OAuth-protected server, headless.
//
// Usage: node sdk-oauth-client.mjs URL TOOL ARGS_JSON
// Runs the SDK's own OAuth flow (discovery, dynamic registration, PKCE, resource): its
// `redirectToAuthorization` hands the URL to the scripted browser (browser.py), which stops at
// our redirect URI; `finishAuth` exchanges the code. Then it connects again, lists tools and
// calls TOOL, printing {"tools": [...], "result": ...} as JSON. Exits non-zero on failure.

import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const [url, tool, argsJson] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const python = join(here, '..', '..', '.venv', 'bin', 'python');
const redirectUrl = 'http://127.0.0.1:9/oauth/callback';

let clientInformation;
let tokens;
let verifier;
let authorizationCode;

const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return {
      client_name: 'mcp-warden e2e TS SDK client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  },
  clientInformation: () => clientInformation,
  saveClientInformation: (info) => { clientInformation = info; },
  tokens: () => tokens,
  saveTokens: (t) => { tokens = t; },
  saveCodeVerifier: (v) => { verifier = v; },
  codeVerifier: () => verifier,
  redirectToAuthorization: (authorizationUrl) => {
    const final = execFileSync(python, [join(here, 'browser.py'), authorizationUrl.toString()], {
      env: { ...process.env, BROWSER_STOP_AT: redirectUrl },
      encoding: 'utf8',
      timeout: 60_000,
    }).trim().split('\n').pop();
    const params = new URL(final).searchParams;
    if (params.get('iss') === null) throw new Error(`authorization response without iss: ${final}`);
    authorizationCode = params.get('code');
    if (!authorizationCode) throw new Error(`no code: ${final}`);
  },
};

async function connect() {
  const client = new Client({ name: 'mcp-warden-e2e-sdk-oauth', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  try {
    await client.connect(transport);
    return client;
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !authorizationCode) throw e;
    await transport.finishAuth(authorizationCode);
    const again = new Client({ name: 'mcp-warden-e2e-sdk-oauth', version: '0.0.0' });
    await again.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }));
    return again;
  }
}

try {
  const client = await connect();
  const tools = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(argsJson ?? '{}') });
  console.log(JSON.stringify({
    tools: tools.tools.map((t) => t.name).sort(),
    result,
    hadRefreshToken: Boolean(tokens?.refresh_token),
  }));
  await client.close();
  process.exit(result.isError ? 1 : 0);
} catch (e) {
  console.error('sdk-oauth-client failed:', e);
  process.exit(1);
}
