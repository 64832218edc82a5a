// A real OpenID Provider for marimo_rs's tests: panva's oidc-provider (OpenID Certified),
// configured from environment variables, listening on loopback only.
//
//   PORT            port on 127.0.0.1 (0 = any free one); the bound URL is printed as
//                   `issuer=http://127.0.0.1:PORT` on stdout once listening
//   CONFIG          path of a JSON file:
//                   { "clients": [{client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//                                  token_endpoint_auth_method (default client_secret_basic)}],
//                     "users": { "<login>": {"email": "...", "name": "...", "groups": [...] } },
//                     "jwks": { "keys": [ <private JWKs> ] },          (optional)
//                     "claims_in_id_token": false,                      (optional)
//                     "token_endpoint_auth_methods": ["client_secret_basic", ...] }  (optional)
//   KEY_ID          the kid of the RSA key made when "jwks" is absent (default key-1): restart
//                   with another KEY_ID and the provider has rotated its key
//   ID_TOKEN_TTL    ID token lifetime in seconds (default 3600)
//   EXIT_WITH_STDIN when set, exit once standard input closes: a test that dies (even by
//                   SIGKILL) closes the pipe, so no provider outlives it
//
// By default the ID token carries only the protocol claims and `sub`; name, email and groups
// come from the userinfo endpoint (oidc-provider's `conformIdTokenClaims`, as several real
// providers do). `"claims_in_id_token": true` puts them in the ID token as well.
// `token_endpoint_auth_methods` narrows what discovery advertises (e.g. only
// client_secret_post).
//
// Test knobs (loopback, for negative tests of the relying party; the provider itself is
// unchanged): `POST /__test/next-id-token` with a JSON object of claims to override in the
// next ID token the token endpoint returns (e.g. {"aud": "other"}, {"exp": 1}); the token is
// re-signed with the provider's own key, so only the claims differ.
import { readFileSync } from 'node:fs';
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.env.CONFIG, 'utf8'));
const port = Number(process.env.PORT ?? 0);

const users = config.users ?? {};

// The signing key: given, or made now (named by KEY_ID, so a restart with another KEY_ID is a
// key rotation as the relying party sees it).
if (!config.jwks) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  config.jwks = { keys: [{ ...jwk, kid: process.env.KEY_ID ?? 'key-1', alg: 'RS256', use: 'sig' }] };
}

const configuration = {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: config.jwks,
  conformIdTokenClaims: !config.claims_in_id_token,
  ...(config.token_endpoint_auth_methods ? { clientAuthMethods: config.token_endpoint_auth_methods } : {}),
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: user.name ?? id,
          email: user.email,
          email_verified: true,
          groups: user.groups ?? [],
        };
      },
    };
  },
  ttl: {
    IdToken: Number(process.env.ID_TOKEN_TTL ?? 3600),
  },
};

let overrides = null;

function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

function resign(idToken, claims) {
  const [header64, payload64] = idToken.split('.');
  const header = JSON.parse(Buffer.from(header64, 'base64url'));
  const payload = { ...JSON.parse(Buffer.from(payload64, 'base64url')), ...claims };
  const jwk = config.jwks.keys.find((key) => key.kid === header.kid) ?? config.jwks.keys[0];
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = crypto.sign('sha256', Buffer.from(input), { key, padding: crypto.constants.RSA_PKCS1_PADDING });
  return `${input}.${signature.toString('base64url')}`;
}

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  const issuer = `http://127.0.0.1:${bound}`;
  const provider = new Provider(issuer, configuration);
  provider.use(async (ctx, next) => {
    if (ctx.path === '/__test/next-id-token' && ctx.method === 'POST') {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      overrides = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      ctx.status = 204;
      return;
    }
    await next();
    if (ctx.path === '/token' && overrides && ctx.body && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, overrides) };
      overrides = null;
    }
  });
  const callback = provider.callback();
  server.on('request', callback);
  process.stdout.write(`issuer=${issuer}\n`);
});

// A reader that went away (a finished test) must not turn the provider's next notice into
// an unhandled EPIPE.
process.stdout.on('error', () => {});

if (process.env.EXIT_WITH_STDIN) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    // Idle keep-alive connections (a relying party's pool) would hold close() open.
    server.closeAllConnections();
  });
}
