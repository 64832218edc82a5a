// Signs front-proxy assertions for marimo_rs's tests, the way Pomerium signs
// X-Pomerium-Jwt-Assertion: a fresh ES256 key (kid "proxy-1"), one JWT per claims object.
//
//   node assertion.mjs '{"claims": [{"sub": "u-1", "email": "...", "exp": 1900000000}, ...]}'
//
// prints {"jwks": {"keys": [<public JWK>]}, "tokens": ["<jwt>", ...]} on stdout.
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

const input = JSON.parse(process.argv[2]);
const { publicKey, privateKey } = await generateKeyPair('ES256');
const jwk = { ...(await exportJWK(publicKey)), kid: 'proxy-1', alg: 'ES256', use: 'sig' };
const tokens = [];
for (const claims of input.claims) {
  tokens.push(await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'proxy-1' }).sign(privateKey));
}
process.stdout.write(JSON.stringify({ jwks: { keys: [jwk] }, tokens }));
