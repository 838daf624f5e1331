// A real OpenID provider (the oidc-provider package) for Isthmus's OIDC tests.
//
//   node server.mjs settings.json
//
// settings.json (written by isthmus.testing.oidc.OidcProvider): issuer, port, the signing
// keys (private JWKs; the first one signs), the clients, the users and their groups, the
// resource servers (audiences) it issues JWT access tokens for, and token lifetimes.
// Logins go through the package's own development login and consent pages: any password
// is accepted, the login names the account. Nothing here is for production use.

import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = settings.users;            // name -> { name, groups }
const services = settings.services;      // client_id -> { groups } (client_credentials tokens)
const resources = new Set(settings.resources);

function claimsOf(token) {
  if (token.accountId) {
    const user = users[token.accountId];
    if (!user) return { preferred_username: token.accountId, groups: [] };
    return { preferred_username: token.accountId, name: user.name, groups: user.groups };
  }
  const service = services[token.clientId];
  return service ? { preferred_username: token.clientId, groups: service.groups } : undefined;
}

const configuration = {
  clients: settings.clients,
  jwks: { keys: settings.keys },
  cookies: { keys: [settings.cookie_key] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        const user = users[id] ?? { name: id, groups: [] };
        return { sub: id, preferred_username: id, name: user.name, groups: user.groups };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username', 'groups'] },
  scopes: ['openid', 'offline_access', 'profile', 'api'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? settings.resources[0],
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator) {
        if (!resources.has(indicator)) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api',
          audience: indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: settings.access_token_ttl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // groups and the user name travel in the access token, where the bridge reads them
  extraTokenClaims: (_ctx, token) => claimsOf(token),
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    // the "short" client's tokens expire at once: the bridge's expiry check is tested with them
    ClientCredentials: (_ctx, _token, client) => (client.clientId === 'short' ? 1 : settings.access_token_ttl),
    AccessToken: settings.access_token_ttl,
    RefreshToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
};

const provider = new Provider(settings.issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${settings.issuer}`);
});
