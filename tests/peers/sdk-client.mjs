// MCP TypeScript SDK client for mcp-warden's end-to-end tests.
//
// Usage: node sdk-client.mjs URL TOOL [JSON-ARGS]
// The bearer token comes from the MCP_TOKEN environment variable (optional). Connects over
// Streamable HTTP, lists tools, calls TOOL with JSON-ARGS (default {}), prints one JSON line
// {"tools":[names...],"result":<CallToolResult>} and exits 0; any failure exits 1.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, tool, rawArgs] = process.argv.slice(2);
if (!url || !tool) {
  console.error('usage: node sdk-client.mjs URL TOOL [JSON-ARGS]');
  process.exit(2);
}

const headers = {};
if (process.env.MCP_TOKEN) headers.Authorization = `Bearer ${process.env.MCP_TOKEN}`;

const client = new Client({ name: 'mcp-warden-e2e', version: '0.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });

try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(rawArgs ?? '{}') });
  console.log(JSON.stringify({ tools: tools.map((t) => t.name), result }));
  await transport.terminateSession().catch(() => {});
  await client.close();
  process.exit(result.isError ? 1 : 0);
} catch (err) {
  console.error(`sdk-client: ${err?.message ?? err}`);
  process.exit(1);
}
