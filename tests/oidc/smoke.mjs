// Smoke test of server.mjs: starts it (PORT=0), drives the whole authorization-code + PKCE flow
// over plain HTTP with manual redirects and a small cookie jar, then refresh/rotation/reuse,
// userinfo, revocation, introspection, the injected token failure and /__stats.
// Usage: cd tests/oidc && npm install && node smoke.mjs   (last line: "N passed, M failed")
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENT_ID = 'authlink-test';
const CLIENT_SECRET = 's3cr3t+/=:&% x'; // needs form-urlencoding inside HTTP Basic
const REDIRECT_URI = 'http://127.0.0.1:9/oauth/callback/oauth2';
const ACCESS_TOKEN_TTL = 30;
const VERBOSE = process.env.VERBOSE === '1';

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
  }
  return ok;
}

// ---- the server under test ----
function startServer(env) {
  const child = spawn(process.execPath, [path.join(HERE, 'server.mjs')], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stderr = [];
  child.stderr.on('data', (d) => { stderr.push(d.toString()); if (VERBOSE) process.stderr.write(d); });
  const ready = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    const lines = [];
    rl.on('line', (line) => {
      lines.push(line);
      const m = /^LISTENING (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
      if (m) resolve({ base: m[1], lines });
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before LISTENING: ${stderr.join('')}`)));
    setTimeout(() => reject(new Error(`no LISTENING line in 15 s: ${stderr.join('')}`)), 15000).unref();
  });
  return { child, ready, stderr };
}

// ---- a per-host cookie jar (name, value, path), enough for oidc-provider's cookies ----
class Jar {
  constructor() { this.cookies = new Map(); }

  store(res, url) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let cpath = '/';
      let expired = value === '';
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        if (k.toLowerCase() === 'path') cpath = v;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const key = `${name};${cpath}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path: cpath });
    }
    void url;
  }

  header(url) {
    const p = new URL(url).pathname;
    return [...this.cookies.values()]
      .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  names() { return [...this.cookies.values()].map((c) => `${c.name} (path ${c.path})`); }
}

async function get(jar, url, headers = {}) {
  const cookie = jar.header(url);
  const res = await fetch(url, { redirect: 'manual', headers: { ...headers, ...(cookie ? { cookie } : {}) } });
  jar.store(res, url);
  const location = res.headers.get('location');
  const body = await res.text();
  if (VERBOSE) console.log(`  GET ${url} -> ${res.status} ${location || ''}`);
  return { status: res.status, location: location && new URL(location, url).href, rawLocation: location, body };
}

const form = (s) => new URLSearchParams({ x: s }).toString().slice(2);
const basic = `Basic ${Buffer.from(`${form(CLIENT_ID)}:${form(CLIENT_SECRET)}`).toString('base64')}`;

async function post(url, params, { auth = basic } = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { raw: text }; }
  if (VERBOSE) console.log(`  POST ${url} ${params.grant_type || ''} -> ${res.status} ${text.slice(0, 200)}`);
  return { status: res.status, json };
}

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.hash('sha256', verifier, 'base64url');
  return { verifier, challenge };
}

function authorizeUrl(base, { state, challenge, scope = 'openid email profile offline_access', extra = {} }) {
  const u = new URL(`${base}/auth`);
  const q = {
    response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, scope, state, ...extra,
  };
  if (challenge) Object.assign(q, { code_challenge: challenge, code_challenge_method: 'S256' });
  for (const [k, v] of Object.entries(q)) u.searchParams.set(k, v);
  return u.href;
}

// Follows authorize -> interaction -> resume -> redirect_uri, answering interactions with `answer`.
async function authorize(base, jar, { state, challenge, answer = 'login=alice' }) {
  let r = await get(jar, authorizeUrl(base, { state, challenge }));
  for (let i = 0; i < 6; i += 1) {
    if (r.status < 300 || r.status > 399) throw new Error(`unexpected ${r.status}: ${r.body}`);
    if (r.location.startsWith(REDIRECT_URI)) return new URL(r.location).searchParams;
    const target = new URL(r.location);
    if (target.pathname.startsWith('/interaction/')) target.search = answer;
    r = await get(jar, target.href);
  }
  throw new Error('too many redirects');
}

async function main() {
  const { child, ready } = startServer({
    PORT: '0', CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS: `http://127.0.0.1:1/other,${REDIRECT_URI}`, ACCESS_TOKEN_TTL: String(ACCESS_TOKEN_TTL),
  });
  const { base, lines } = await ready;
  const exited = once(child, 'exit');
  try {
    check('stdout is exactly one LISTENING line', lines.length === 1, lines);
    const disco = await (await fetch(`${base}/.well-known/openid-configuration`)).json();
    check('discovery issuer is the LISTENING URL', disco.issuer === base, disco.issuer);
    check('revocation and introspection endpoints advertised',
      disco.revocation_endpoint === `${base}/token/revocation` && disco.introspection_endpoint === `${base}/token/introspection`,
      [disco.revocation_endpoint, disco.introspection_endpoint]);

    // ---- flow 1: the exact redirect sequence ----
    const jar = new Jar();
    const { verifier, challenge } = pkce();
    const state = 'st+ate/=1';
    let r = await get(jar, authorizeUrl(base, { state, challenge }));
    const m = /^\/interaction\/([^/?]+)$/.exec(new URL(r.location || base).pathname);
    check('authorize -> 303 /interaction/<uid>', r.status === 303 && m, [r.status, r.rawLocation]);
    const uid = m && m[1];
    check('authorize sets _interaction and _interaction_resume cookies',
      jar.names().some((n) => n.startsWith('_interaction ')) && jar.names().some((n) => n.startsWith('_interaction_resume ')), jar.names());
    if (VERBOSE) console.log('  cookies after authorize:', jar.names());

    let hint = await get(jar, `${base}/interaction/${uid}`);
    check('GET /interaction/<uid> without login -> 400 with a hint', hint.status === 400 && /login=/.test(hint.body), [hint.status, hint.body]);
    hint = await get(new Jar(), `${base}/interaction/${uid}?login=alice`);
    check('GET /interaction/<uid>?login=... without the cookie -> 400', hint.status === 400, [hint.status, hint.body]);

    r = await get(jar, `${base}/interaction/${uid}?login=alice`);
    check('interaction?login=alice -> 303 /auth/<uid> (resume)', r.status === 303 && r.location === `${base}/auth/${uid}`, [r.status, r.rawLocation]);
    r = await get(jar, r.location);
    check('resume -> 303 to redirect_uri', r.status === 303 && r.location?.startsWith(`${REDIRECT_URI}?`), [r.status, r.rawLocation]);
    const cb = new URL(r.location).searchParams;
    check('callback carries code, the same state and iss', cb.get('code') && cb.get('state') === state && cb.get('iss') === base, Object.fromEntries(cb));
    if (VERBOSE) console.log('  cookies after resume:', jar.names());

    // PKCE is required even for this confidential client
    r = await get(new Jar(), authorizeUrl(base, { state: 'nopkce' }));
    const noPkce = r.location ? new URL(r.location).searchParams : new URLSearchParams();
    check('authorize without code_challenge -> error=invalid_request at redirect_uri',
      r.location?.startsWith(REDIRECT_URI) && noPkce.get('error') === 'invalid_request', [r.status, r.rawLocation]);

    // ---- code exchange ----
    const t1 = await post(`${base}/token`, {
      grant_type: 'authorization_code', code: cb.get('code'), redirect_uri: REDIRECT_URI, code_verifier: verifier,
    });
    console.log(`  token response fields: ${Object.keys(t1.json).sort().join(', ')} (scope "${t1.json.scope}", expires_in ${t1.json.expires_in})`);
    check('code exchange -> 200 with access_token, refresh_token, id_token, Bearer',
      t1.status === 200 && t1.json.access_token && t1.json.refresh_token && t1.json.id_token && t1.json.token_type === 'Bearer', t1);
    check(`expires_in <= ACCESS_TOKEN_TTL (${ACCESS_TOKEN_TTL})`, t1.json.expires_in > 0 && t1.json.expires_in <= ACCESS_TOKEN_TTL, t1.json.expires_in);
    check('offline_access is dropped from the granted scope (no prompt=consent), a refresh token is issued anyway',
      !t1.json.scope.split(' ').includes('offline_access'), t1.json.scope);

    const ui = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${t1.json.access_token}` } });
    const claims = await ui.json();
    check('userinfo with the access token', ui.status === 200 && claims.sub === 'alice' && claims.email === 'alice@example.com'
      && claims.email_verified === true && claims.preferred_username === 'alice' && claims.name === 'alice', [ui.status, claims]);

    // ---- refresh with rotation ----
    const rt1 = t1.json.refresh_token;
    const t2 = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: rt1 });
    console.log(`  refresh response fields: ${Object.keys(t2.json).sort().join(', ')}`);
    check('refresh -> 200 with a NEW refresh token and a new access token',
      t2.status === 200 && t2.json.refresh_token && t2.json.refresh_token !== rt1 && t2.json.access_token !== t1.json.access_token, t2);
    const rt2 = t2.json.refresh_token;

    // injected transient failure, answered before oidc-provider sees the request
    const arm = await (await fetch(`${base}/__fail_next_token?status=503`)).json();
    check('/__fail_next_token arms one failure', JSON.stringify(arm.pending) === '[503]', arm);
    const tf = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: rt2 });
    check('next POST /token -> 503 {"error":"server_error"}', tf.status === 503 && tf.json.error === 'server_error', tf);
    const t3 = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: rt2 });
    check('the injected failure did not consume the refresh token (retry rotates again)',
      t3.status === 200 && t3.json.refresh_token && t3.json.refresh_token !== rt2, t3);
    const rt3 = t3.json.refresh_token;

    const in3 = await post(`${base}/token/introspection`, { token: rt3 });
    check('introspection of the current refresh token -> active:true', in3.status === 200 && in3.json.active === true, in3);

    // ---- reuse of a rotated refresh token ----
    const reuse = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: rt1 });
    check('reusing the OLD refresh token -> 400 invalid_grant', reuse.status === 400 && reuse.json.error === 'invalid_grant', reuse);
    const after = await post(`${base}/token/introspection`, { token: rt3 });
    check('reuse detection revoked the whole grant: the newest refresh token is now inactive', after.json.active === false, after);
    const atAfter = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${t3.json.access_token}` } });
    check('... and its access token too (userinfo 401)', atAfter.status === 401, atAfter.status);
    const rt3use = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: rt3 });
    check('... and refreshing with it -> invalid_grant', rt3use.status === 400 && rt3use.json.error === 'invalid_grant', rt3use);

    // ---- flow 2 (same cookie jar: the session cookie is reused, the revoked grant is not) ----
    const p2 = pkce();
    const cb2 = await authorize(base, jar, { state: 's2', challenge: p2.challenge });
    check('second authorization with the same session -> code', !!cb2.get('code'), Object.fromEntries(cb2));
    const t4 = await post(`${base}/token`, {
      grant_type: 'authorization_code', code: cb2.get('code'), redirect_uri: REDIRECT_URI, code_verifier: p2.verifier,
    });
    check('second code exchange -> refresh token', t4.status === 200 && !!t4.json.refresh_token, t4);
    const rv = await post(`${base}/token/revocation`, { token: t4.json.refresh_token, token_type_hint: 'refresh_token' });
    check('revocation of the refresh token -> 200', rv.status === 200, rv);
    const in4 = await post(`${base}/token/introspection`, { token: t4.json.refresh_token });
    check('introspection after revocation -> active:false', in4.status === 200 && in4.json.active === false, in4);
    const in4at = await post(`${base}/token/introspection`, { token: t4.json.access_token });
    check('revoking the refresh token also revoked the grant\'s access token', in4at.json.active === false, in4at);
    const t5 = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: t4.json.refresh_token });
    check('refresh with the revoked token -> invalid_grant', t5.status === 400 && t5.json.error === 'invalid_grant', t5);

    // ---- wrong verifier, then the right one, then a replay of the code ----
    const p3 = pkce();
    const cb3 = await authorize(base, new Jar(), { state: 's3', challenge: p3.challenge, answer: 'login=bob' });
    const exchange3 = (code_verifier) => post(`${base}/token`, {
      grant_type: 'authorization_code', code: cb3.get('code'), redirect_uri: REDIRECT_URI, code_verifier,
    });
    const bad = await exchange3(pkce().verifier);
    check('code exchange with the wrong code_verifier -> invalid_grant', bad.status === 400 && bad.json.error === 'invalid_grant', bad);
    const t6 = await exchange3(p3.verifier);
    check('... which does not consume the code: the right verifier still works', t6.status === 200 && !!t6.json.refresh_token, t6);
    const ui6 = await (await fetch(`${base}/me`, { headers: { authorization: `Bearer ${t6.json.access_token}` } })).json();
    check('userinfo for bob', ui6.sub === 'bob' && ui6.email === 'bob@example.com', ui6);
    const replay = await exchange3(p3.verifier);
    check('replaying a used code -> 400 invalid_grant', replay.status === 400 && replay.json.error === 'invalid_grant', replay);
    const in6 = await post(`${base}/token/introspection`, { token: t6.json.refresh_token });
    check('... and the replay revoked the tokens issued from that code', in6.json.active === false, in6);

    // ---- SSO: a live session with a grant covering the scopes skips the interaction ----
    const jar4 = new Jar();
    await authorize(base, jar4, { state: 's4', challenge: pkce().challenge, answer: 'login=carol' });
    r = await get(jar4, authorizeUrl(base, { state: 's4b', challenge: pkce().challenge }));
    check('second authorize in a jar with a live session and grant -> 303 straight to redirect_uri (no interaction)',
      r.status === 303 && r.location?.startsWith(`${REDIRECT_URI}?`) && new URL(r.location).searchParams.get('code'), [r.status, r.rawLocation]);
    r = await get(jar4, authorizeUrl(base, { state: 's4c', challenge: pkce().challenge, extra: { prompt: 'login' } }));
    check('... unless prompt=login (or consent) forces the interaction', r.status === 303 && new URL(r.location).pathname.startsWith('/interaction/'), [r.status, r.rawLocation]);

    // ---- prompt=consent keeps offline_access in the granted scope ----
    const p5 = pkce();
    const jar5 = new Jar();
    const cb5 = await (async () => {
      let x = await get(jar5, authorizeUrl(base, { state: 's5', challenge: p5.challenge, extra: { prompt: 'consent' } }));
      x = await get(jar5, `${x.location.split('?')[0]}?login=dave`);
      x = await get(jar5, x.location);
      return new URL(x.location).searchParams;
    })();
    const t7 = await post(`${base}/token`, {
      grant_type: 'authorization_code', code: cb5.get('code'), redirect_uri: REDIRECT_URI, code_verifier: p5.verifier,
    });
    check('with prompt=consent the token scope includes offline_access', t7.status === 200 && t7.json.scope.split(' ').includes('offline_access'), t7);

    // ---- deny ----
    const cbDeny = await authorize(base, new Jar(), { state: 'sd', challenge: pkce().challenge, answer: 'deny=1' });
    check('?deny=1 -> redirect_uri?error=access_denied&state', cbDeny.get('error') === 'access_denied' && cbDeny.get('state') === 'sd', Object.fromEntries(cbDeny));

    // ---- wrong client secret ----
    const wrong = await post(`${base}/token`, { grant_type: 'refresh_token', refresh_token: 'x' },
      { auth: `Basic ${Buffer.from(`${CLIENT_ID}:nope`).toString('base64')}` });
    check('wrong client secret -> 401 invalid_client', wrong.status === 401 && wrong.json.error === 'invalid_client', wrong);

    // ---- counters ----
    const stats = await (await fetch(`${base}/__stats`)).json();
    console.log(`  stats: ${JSON.stringify(stats)}`);
    check('/__stats counts 4 code grants, 2 refresh grants, 1 revocation',
      stats.authorization_code_grants === 4 && stats.refresh_grants === 2 && stats.revocations === 1, stats);
    check('/__stats counts the reuse detection and the injected failure',
      stats.refresh_reuse_detected === 1 && stats.injected_failures === 1, stats);
  } finally {
    child.kill('SIGTERM');
  }
  const [code, signal] = await exited;
  check('SIGTERM -> exit 0', code === 0, [code, signal]);

  // closing stdin ends the server (a crashed parent leaves no orphan)
  const second = startServer({ PORT: '0' });
  await second.ready;
  const gone = once(second.child, 'exit');
  second.child.stdin.end();
  const timer = setTimeout(() => second.child.kill('SIGKILL'), 5000);
  const [code2] = await gone;
  clearTimeout(timer);
  check('stdin EOF -> exit 0', code2 === 0, code2);
}

try {
  await main();
} catch (err) {
  failed += 1;
  console.log(`FAIL aborted: ${err.stack || err}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
