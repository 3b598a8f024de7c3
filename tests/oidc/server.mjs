// A real OpenID provider (panva's `oidc-provider`) on loopback, for authlink's tests.
// Configured from the environment; prints exactly one stdout line, `LISTENING http://127.0.0.1:<port>`,
// once it accepts requests (everything else, including oidc-provider's notices, goes to stderr).
// Login and consent are driven over plain HTTP: GET /interaction/<uid>?login=<accountId> (or ?deny=1).
// See README.md beside this file.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its NOTICEs with console.info (stdout): keep stdout for the LISTENING line.
console.info = console.error;
console.log = console.error;

function intEnv(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
const CLIENT_ID = process.env.CLIENT_ID || 'authlink-test';
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'authlink-test-secret';
const REDIRECT_URIS = (process.env.REDIRECT_URIS || 'http://127.0.0.1:8080/oauth/callback/oauth2')
  .split(',').map((s) => s.trim()).filter(Boolean);
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 60);
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 14 * 24 * 3600);
const ID_TOKEN_TTL = intEnv('ID_TOKEN_TTL', 3600);
const ROTATE_REFRESH_TOKEN = process.env.ROTATE_REFRESH_TOKEN !== '0';
const LOG = process.env.OIDC_LOG === '1';

if (ACCESS_TOKEN_TTL < 1 || REFRESH_TOKEN_TTL < 1) {
  console.error('ACCESS_TOKEN_TTL and REFRESH_TOKEN_TTL must be >= 1');
  process.exit(2);
}

// ---- lifetime: SIGTERM/SIGINT, stdin EOF (pipe only), parent death ----
const exit = () => process.exit(0);
process.on('SIGTERM', exit);
process.on('SIGINT', exit);
try {
  const st = fs.fstatSync(0);
  // Only a pipe or socket tells us the parent is gone; /dev/null or a TTY would end at once or never.
  if (st.isFIFO() || st.isSocket()) {
    process.stdin.on('end', exit);
    process.stdin.on('error', exit);
    process.stdin.resume();
  }
} catch { /* no fd 0 at all */ }
const parentPid = process.ppid;
setInterval(() => { if (process.ppid !== parentPid) exit(); }, 500).unref();

// ---- counters, exposed at GET /__stats ----
const stats = {
  authorization_code_grants: 0,
  refresh_grants: 0,
  revocations: 0, // POST /token/revocation answered 200 (RFC 7009: also for unknown tokens)
  revoked_tokens: 0, // tokens actually found and destroyed by the revocation endpoint
  grant_errors: 0, // token endpoint errors raised by oidc-provider (not the injected ones)
  refresh_reuse_detected: 0, // an already-rotated refresh token was presented (grant revoked)
  grants_revoked: 0, // whole grants revoked (by revocation or by reuse detection)
  injected_failures: 0, // POST /token answered by /__fail_next_token
  interactions_completed: 0,
  interactions_denied: 0,
  discovery_requests: 0, // GET /.well-known/openid-configuration
  jwks_requests: 0, // GET /jwks
};
let failNext = []; // statuses for the next POST /token requests

// ---- the provider, built once the port (and so the issuer) is known ----
function claimsFor(accountId) {
  return {
    sub: accountId,
    email: `${accountId}@example.com`,
    email_verified: true,
    preferred_username: accountId,
    name: accountId,
  };
}

function buildProvider(issuer) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      // A confidential "web" client: oidc-provider accepts http:// (also loopback) redirect URIs
      // for web clients as long as the client does not use the implicit grant; matching is exact.
      redirect_uris: REDIRECT_URIS,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return claimsFor(sub); } };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      introspection: { enabled: true, allowedPolicy: async () => true },
      userinfo: { enabled: true },
      resourceIndicators: { enabled: false }, // opaque access tokens, usable at userinfo
    },
    pkce: { required: () => true }, // v9 requires PKCE only for public clients by default; S256 is the only method
    // Refresh tokens for this client on every authorization_code grant, with or without offline_access.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    rotateRefreshToken: ROTATE_REFRESH_TOKEN,
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: REFRESH_TOKEN_TTL + 24 * 3600,
    },
    renderError(ctx, out) {
      ctx.type = 'text/plain';
      ctx.body = `${out.error}: ${out.error_description || ''}\n`;
    },
  });

  provider.on('grant.success', (ctx) => {
    const gt = ctx.oidc.params.grant_type;
    if (gt === 'authorization_code') stats.authorization_code_grants += 1;
    else if (gt === 'refresh_token') stats.refresh_grants += 1;
  });
  provider.on('grant.error', (_ctx, err) => {
    stats.grant_errors += 1;
    if (err?.error_detail === 'refresh token already used') stats.refresh_reuse_detected += 1;
    if (LOG) console.error('grant.error', err?.error, err?.error_detail);
  });
  provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
  const onDestroyed = () => {
    if (Provider.ctx?.oidc?.route === 'revocation') stats.revoked_tokens += 1;
  };
  provider.on('access_token.destroyed', onDestroyed);
  provider.on('refresh_token.destroyed', onDestroyed);
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  return provider;
}

// ---- HTTP: admin hooks and interactions in front of provider.callback() ----
function sendJson(res, status, body) {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}
function sendText(res, status, text) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const HINT = 'finish this interaction with GET /interaction/<uid>?login=<accountId> (login and consent '
  + 'to every requested scope) or ?deny=1 (access_denied); the _interaction cookie set by the '
  + 'authorization endpoint must be sent\n';

async function interaction(provider, req, res, uid, query) {
  const login = query.get('login');
  const deny = query.get('deny');
  if (!login && !deny) return sendText(res, 400, `missing login parameter: ${HINT}`);

  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendText(res, 400, `${err.error || 'error'}: ${err.error_description || err.message} (${err.error_detail || ''}); ${HINT}`);
  }
  if (details.uid !== uid) {
    return sendText(res, 400, `the _interaction cookie names interaction ${details.uid}, not ${uid}\n`);
  }

  if (deny) {
    stats.interactions_denied += 1;
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'end-user denied the authorization request',
    }, { mergeWithLastSubmission: false });
  }

  const { params, prompt } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant || grant.accountId !== login) {
    grant = new provider.Grant({ accountId: login, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(params.scope);
  const claims = new Set(prompt?.details?.missingOIDCClaims || []);
  if (params.claims) {
    try {
      const c = JSON.parse(params.claims);
      for (const part of [c.userinfo, c.id_token]) Object.keys(part || {}).forEach((k) => claims.add(k));
    } catch { /* oidc-provider already validated it */ }
  }
  if (claims.size) grant.addOIDCClaims([...claims]);
  for (const [indicator, scopes] of Object.entries(prompt?.details?.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();

  stats.interactions_completed += 1;
  return provider.interactionFinished(req, res, {
    login: { accountId: login },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

let provider;
let providerCallback;

async function handle(req, res) {
  if (!providerCallback) return sendText(res, 503, 'starting\n');
  const url = new URL(req.url, 'http://127.0.0.1');
  if (LOG) console.error(req.method, req.url);

  if (req.method === 'GET' && url.pathname === '/__stats') return sendJson(res, 200, stats);
  if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') stats.discovery_requests += 1;
  if (req.method === 'GET' && url.pathname === '/jwks') stats.jwks_requests += 1;

  if (url.pathname === '/__fail_next_token') {
    const status = Number(url.searchParams.get('status') || 500);
    const count = Number(url.searchParams.get('count') || 1);
    if (!Number.isInteger(status) || status < 100 || status > 599 || !Number.isInteger(count) || count < 0) {
      return sendText(res, 400, 'status must be 100..599 and count >= 0\n');
    }
    failNext = count === 0 ? [] : failNext.concat(Array(count).fill(status));
    return sendJson(res, 200, { pending: failNext });
  }

  if (req.method === 'POST' && url.pathname === '/token' && failNext.length) {
    const status = failNext.shift();
    stats.injected_failures += 1;
    req.resume();
    return sendJson(res, status, { error: 'server_error', error_description: 'injected by /__fail_next_token' });
  }

  const m = /^\/interaction\/([^/]+)\/?$/.exec(url.pathname);
  if (m) {
    if (req.method !== 'GET') return sendText(res, 405, HINT);
    return interaction(provider, req, res, m[1], url.searchParams);
  }

  if (req.method === 'POST' && url.pathname === '/token/revocation') {
    res.on('finish', () => { if (res.statusCode === 200) stats.revocations += 1; });
  }

  return providerCallback(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('fixture error', err);
    if (!res.headersSent) sendText(res, 500, `fixture error: ${err.message}\n`);
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = buildProvider(issuer);
  providerCallback = provider.callback();
  process.stdout.write(`LISTENING ${issuer}\n`);
});
server.on('error', (err) => {
  console.error('listen error', err);
  process.exit(1);
});
