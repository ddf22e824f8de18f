// A real OpenID provider (npm oidc-provider) for mcp-warden's end-to-end tests and demo.
//
// Usage: node idp.mjs CONFIG.json
// CONFIG.json:
//   {
//     "port": 9400,                      // listens on 127.0.0.1:<port>; issuer http://127.0.0.1:<port>
//     "jwksFile": "/path/keys.json",     // {"keys":[<private JWK with kid>...]}, owned by the caller
//     "accessTokenAlg": "ES256",         // alg of JWT access tokens (default ES256)
//     "accessTokenTtl": 300,             // seconds (default 300)
//     "accessTokenFormat": "jwt",        // "opaque": access tokens are opaque (RFC 7662 introspection)
//     "resourceScopes": "mcp:tools mcp:admin",  // scopes any resource server accepts
//     "clients": [ {oidc-provider client metadata: client_id, client_secret, grant_types, ...} ],
//     "accounts": {"ann": {"email": "ann@corp.test", "groups": ["admins"]}}  // optional claims per
//   }                                  // account id, over the defaults below
// Any account id signs in (devInteractions login); its claims default to
// {sub, email: <id>@example.test, email_verified: true, name: <id>}. `groups` is a `profile` claim.
// Every `resource` parameter is accepted as a resource server; access tokens for it are JWTs
// (or opaque, per accessTokenFormat) with `aud` = the resource. Introspection is at
// /token/introspection (any confidential client may introspect), revocation at /token/revocation. Prints one line `ready <issuer>` on stdout when listening.

import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const configPath = process.argv[2] ?? process.env.IDP_CONFIG;
if (!configPath) {
  console.error('usage: node idp.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const port = Number(process.env.IDP_PORT ?? config.port);
if (!Number.isInteger(port) || port <= 0) {
  console.error('idp: config.port (or IDP_PORT) must be a port number');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(config.jwksFile, 'utf8'));
const accessTokenAlg = config.accessTokenAlg ?? 'ES256';
const accessTokenTtl = config.accessTokenTtl ?? 300;
const accessTokenFormat = config.accessTokenFormat ?? 'jwt';
const resourceScopes = config.resourceScopes ?? 'mcp:tools mcp:admin';
const accounts = config.accounts ?? {};
const scopes = new Set(['openid', 'offline_access', 'profile', 'email', ...resourceScopes.split(' ')]);

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  jwks,
  // ID tokens are signed with the first key's algorithm, so an EC-only key set works too.
  clientDefaults: {
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: jwks.keys[0]?.alg ?? 'RS256',
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: [...scopes],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({
      sub, email: `${sub}@example.test`, email_verified: true, name: sub, ...(accounts[sub] ?? {}),
    }),
  }),
  ttl: { ClientCredentials: accessTokenTtl, AccessToken: accessTokenTtl },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => ({
        audience: resourceIndicator,
        scope: resourceScopes,
        accessTokenTTL: accessTokenTtl,
        accessTokenFormat,
        jwt: { sign: { alg: accessTokenAlg } },
      }),
    },
  },
});

provider.on('server_error', (_ctx, err) => console.error('idp server_error:', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
