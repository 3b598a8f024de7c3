// The settings console and the end user's pages in a real browser: Playwright (playwright-core)
// driving the system's Chromium, once with JavaScript on and once with it off. Driven by
// tests/api/browser.rs, which starts authlink (its oauth2 system app is the oidc-provider fixture
// in tests/oidc) and reads this script's stdout: one JSON object per line, `{"event": …}`.
// Where the test must act (trust a webhook secret, wait for a dead letter, fix the receiver) this
// script prints an event and waits for a line on stdin.
//
// Every page is screenshotted at desktop and phone widths and checked with axe-core. axe runs in
// a second context with `bypassCSP` (the pages allow no injected script): it is given the DOM the
// first context shows (`page.content()`) at the same URL, so one-shot pages (the success page, a
// secret shown once, a refused form) are checked as they were seen.
//
// Elements are found by role and label, as a person finds them; texts are the English ones.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';

import axe from 'axe-core';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('AUTHLINK_URL');
const OPERATOR_KEY = env('AUTHLINK_OPERATOR_KEY');
const OTHER_BOT = env('OTHER_BOT');
const OTHER_ADMIN_KEY = env('OTHER_ADMIN_KEY');
const RECEIVER_URL = env('RECEIVER_URL');
const OIDC_ISSUER = env('OIDC_ISSUER');
const LOGIN = env('OIDC_LOGIN');
const SHOTS = env('SCREENSHOT_DIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MODES = (process.env.MODES || 'js,nojs').split(',');

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Print `event` and wait for the test's answer (one line). */
async function ask(event) {
  emit(event);
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting after ${event.event}`);
  return value;
}

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

/** `locator` shows up (Playwright's auto-waiting; fails after the action timeout). */
async function sees(locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible' });
  } catch (e) {
    throw new Error(`not seen: ${what}\n${e.message}`);
  }
}

/** Click `button` and return the response of the POST it sends to `pathname`, once the page
 * it leads to has loaded. */
async function submit(page, button, pathname) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === pathname),
    page.waitForEvent('load'),
    button.click(),
  ]);
  return resp;
}

/** Click `element` and wait for the next page to load (through any redirects): it must be `where`
 * (a URL predicate). The current page may have the same URL: the load event is the next page's. */
async function go(page, element, where) {
  await Promise.all([page.waitForEvent('load'), element.click()]);
  if (!where(new URL(page.url()))) {
    const text = await page.locator('body').innerText().catch(() => '');
    throw new Error(`landed on ${page.url()}: ${text}`);
  }
}

/** A URL matcher for this path and query on authlink (exactly). */
const at = (pathAndQuery) => (u) => u.origin === new URL(BASE).origin && u.pathname + u.search === pathAndQuery;

fs.mkdirSync(SHOTS, { recursive: true });

async function screenshots(page, name) {
  for (const [label, size] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(size);
    const file = path.join(SHOTS, `${name}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true });
    emit({ event: 'screenshot', file });
  }
  await page.setViewportSize(DESKTOP);
}

async function audit(axePage, page, name) {
  const url = page.url();
  const html = await page.content();
  const same = (u) => u.href === url;
  await axePage.route(same, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: html }));
  await axePage.goto(url);
  await axePage.unroute(same);
  await axePage.addScriptTag({ content: axe.source });
  const result = await axePage.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  emit({
    event: 'axe',
    page: name,
    url,
    violations: result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n) => n.target.join(' ')),
    })),
  });
}

/** Screenshots and an axe run of what `page` shows now. */
async function look(ctx, name) {
  const full = `${ctx.mode}-${String(++ctx.n).padStart(2, '0')}-${name}`;
  await screenshots(ctx.page, full);
  await audit(ctx.axePage, ctx.page, full);
}

async function signIn(page, key, where) {
  const resp = await page.goto(`${BASE}/console`);
  check(resp.status() === 200, `GET /console: ${resp.status()}`);
  await page.getByLabel('Key').fill(key);
  await go(page, page.getByRole('button', { name: 'Sign in' }), where);
}

async function scenario(browser, mode) {
  const js = mode === 'js';
  const context = await browser.newContext({ javaScriptEnabled: js, viewport: DESKTOP, locale: 'en-US' });
  if (js) await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const axeContext = await browser.newContext({ bypassCSP: true, viewport: DESKTOP, locale: 'en-US' });
  const page = await context.newPage();
  const ctx = { mode, page, axePage: await axeContext.newPage(), n: 0 };
  const bot = `acme-${mode}`;
  const botPath = `/console/bots/${bot}`;
  const integrationPath = `${botPath}/integrations/crm`;

  // Sign in with the operator key.
  await page.goto(`${BASE}/console`);
  await look(ctx, 'sign-in');
  await signIn(page, OPERATOR_KEY, at('/console/bots'));
  await look(ctx, 'bots');

  // Create a bot.
  const newBot = page.locator('form[action="/console/bots"]');
  await newBot.getByLabel('Bot id').fill(bot);
  await newBot.getByLabel('Name', { exact: true }).fill(`Acme ${mode}`);
  await newBot.getByLabel('Webhook URL').fill(RECEIVER_URL);
  await newBot.getByLabel(/^Allowed return hosts/).fill('chat.example.com');
  await go(page, newBot.getByRole('button', { name: 'Create' }), at(`${botPath}?done=saved`));
  await sees(page.getByRole('status').filter({ hasText: 'Saved.' }), 'Saved.');
  await look(ctx, 'bot');

  // A webhook secret, shown once; the test's receiver trusts it.
  let resp = await submit(page, page.getByRole('button', { name: 'New webhook secret' }), `${botPath}/secrets`);
  check(resp.status() === 200, `new secret: ${resp.status()}`);
  const once = page.getByRole('region', { name: 'New webhook secret' });
  await sees(once, 'the new secret');
  const secret = (await once.locator('p').first().textContent()).trim();
  check(secret.startsWith('whsec_'), `a secret: ${secret}`);
  await look(ctx, 'bot-secret-shown-once');
  await ask({ event: 'webhook_secret', bot, secret });

  // Create an integration on the system app's provider: its page.
  await page.goto(`${BASE}${botPath}`);
  const newIntegration = page.locator(`form[action="${botPath}/integrations"]`);
  await newIntegration.getByLabel('Name', { exact: true }).fill('crm');
  await newIntegration.locator('input[name="provider"][value="oauth2"]').check();
  await go(page, newIntegration.getByRole('button', { name: 'Create' }), at(`${integrationPath}?done=saved`));
  await sees(page.getByRole('group', { name: 'Who authorizes' }), 'the mode group');
  await sees(page.getByRole('group', { name: 'OAuth app' }), 'the app group');
  await look(ctx, 'integration');

  // The callback URL to register, with a Copy button that exists only with JavaScript.
  const callback = page.getByLabel(/^Callback URL/);
  const callbackUrl = await callback.inputValue();
  check(callbackUrl.startsWith(`${BASE}/oauth/callback/`), `callback URL: ${callbackUrl}`);
  const copy = page.getByRole('button', { name: 'Copy' });
  if (js) {
    await copy.click();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    check(copied === callbackUrl, `copied ${copied}`);
    const selected = await callback.evaluate((i) => document.activeElement === i
      && i.selectionStart === 0 && i.selectionEnd === i.value.length);
    check(selected, 'the callback URL is selected');
    emit({ event: 'copied', value: copied });
  } else {
    check(await copy.count() === 0, 'no Copy button without JavaScript');
    check(await page.locator('button[data-copy]').isHidden(), 'the Copy button stays hidden');
  }

  // A custom authorization profile: Salesforce's URLs are pre-filled only for Salesforce.
  const profile = page.locator(`form[action="${integrationPath}/profiles"]`);
  check(await profile.getByLabel('Authorization URL').inputValue() === '', 'no Salesforce URLs for a generic integration');
  await profile.getByLabel('Name', { exact: true }).fill('Acme connected app');
  await profile.getByLabel('Client Id').fill('acme-custom-client');
  await profile.getByLabel('Client Secret').fill('acme-custom-secret');
  await profile.getByLabel('Authorization URL').fill(`${OIDC_ISSUER}/auth`);
  await profile.getByLabel('Token URL', { exact: true }).fill(`${OIDC_ISSUER}/token`);
  await profile.getByLabel('Refresh Token URL').fill(`${OIDC_ISSUER}/token`);
  await profile.getByLabel(/^Scopes/).fill('openid email offline_access');
  await go(page, profile.getByRole('button', { name: 'Create' }), at(`${integrationPath}?done=saved`));
  check(await page.getByRole('radio', { name: 'OAuth – Custom' }).isChecked(), 'the new profile is the app');
  await sees(page.getByRole('cell', { name: 'acme-custom-client' }), 'the profile in the list');
  await look(ctx, 'integration-custom-profile');

  // Pre-authorize the integration, with the system app.
  await page.getByRole('group', { name: 'Who authorizes' }).getByRole('radio', { name: 'Pre-authorize the integration' }).check();
  await page.getByRole('group', { name: 'OAuth app' }).getByRole('radio', { name: 'OAuth – System' }).check();
  await go(page, page.getByRole('button', { name: 'Save' }), at(`${integrationPath}?done=saved`));
  check(await page.getByRole('radio', { name: 'Pre-authorize the integration' }).isChecked(), 'pre-authorized');
  check(await page.getByRole('radio', { name: 'OAuth – System' }).isChecked(), 'the system app');
  await sees(page.getByText('Nobody has authorized yet'), 'nobody has authorized');
  await look(ctx, 'integration-pre-authorized');

  // Authorize: the interstitial, the provider's sign-in, the success page, and back.
  await go(page, page.getByRole('button', { name: 'Authorize' }), (u) => u.pathname.startsWith('/l/'));
  await look(ctx, 'end-user-interstitial');
  await go(page, page.getByRole('button', { name: 'Continue' }), (u) => u.href.startsWith(`${OIDC_ISSUER}/interaction/`));
  const interaction = new URL(page.url());
  interaction.searchParams.set('login', LOGIN);
  await page.goto(interaction.href);
  check(page.url().startsWith(`${BASE}/oauth/callback/`), `the success page: ${page.url()}`);
  const back = page.getByRole('link', { name: 'Back to the conversation' });
  await sees(back, 'the way back');
  await look(ctx, 'end-user-success');
  await go(page, back, at(`${integrationPath}?done=authorized`));
  await sees(page.getByText(`Signed in as ${LOGIN}`), 'who signed in');
  await look(ctx, 'integration-authorized');

  // Test the connection.
  const testForm = page.locator(`form[action="${integrationPath}/connections/_bot/test"]`);
  resp = await submit(page, testForm.getByRole('button', { name: 'Test' }), `${integrationPath}/connections/_bot/test`);
  check(resp.status() === 200, `test: ${resp.status()}`);
  await sees(page.getByRole('status').filter({ hasText: 'The connection works.' }), 'the test result');
  await look(ctx, 'integration-tested');

  // The completion's webhook was refused until it became a dead letter: replay it.
  await ask({ event: 'await_dead_letter', bot });
  await go(page, page.getByRole('link', { name: 'Back to the bot' }), at(`${botPath}`));
  const deadLetters = page.getByRole('table', { name: 'Dead letters' });
  await sees(deadLetters, 'the dead letters');
  await look(ctx, 'bot-dead-letter');
  await go(page, deadLetters.getByRole('button', { name: 'Replay' }), at(`${botPath}?done=replayed`));
  await sees(page.getByRole('status').filter({ hasText: 'Queued again.' }), 'queued again');
  await ask({ event: 'replayed', bot });

  // A cross-site form without the token: refused, nothing changed (the test checks the API).
  const evil = 'http://evil.example/';
  await page.route(evil, (route) => route.fulfill({
    contentType: 'text/html',
    body: `<!doctype html><html lang="en"><title>evil</title><form method="post" action="${BASE}${botPath}">`
      + '<input name="name" value="Hacked"><button>Win a prize</button></form>',
  }));
  await page.goto(evil);
  resp = await submit(page, page.getByRole('button', { name: 'Win a prize' }), botPath);
  check(resp.status() === 403, `cross-site POST: ${resp.status()}`);
  await sees(page.getByRole('alert').filter({ hasText: 'nothing was changed' }), 'the refusal');
  await look(ctx, 'refused-cross-site');
  await page.unroute(evil);

  // Sign out: the session is gone.
  await page.goto(`${BASE}${botPath}`);
  await go(page, page.getByRole('button', { name: 'Sign out' }), at(`/console?signed-out`));
  await sees(page.getByRole('status').filter({ hasText: 'You are signed out.' }), 'signed out');
  await look(ctx, 'signed-out');
  resp = await page.goto(`${BASE}${botPath}`);
  check(resp.status() === 401, `after sign-out: ${resp.status()}`);

  // Another bot's admin key: its own bot, and nothing of this one.
  await signIn(page, OTHER_ADMIN_KEY, at(`/console/bots/${OTHER_BOT}`));
  await look(ctx, 'admin-own-bot');
  const token = await page.locator('input[name="csrf"]').first().inputValue();
  for (const p of [botPath, integrationPath]) {
    resp = await page.goto(`${BASE}${p}`);
    check(resp.status() === 404, `admin of ${OTHER_BOT} GET ${p}: ${resp.status()}`);
    await sees(page.getByRole('alert').filter({ hasText: 'Not found.' }), 'not found');
  }
  await look(ctx, 'admin-other-bot-not-found');
  // Its own valid form token, posted to this bot's integration: not found, nothing changed.
  resp = await page.request.post(`${BASE}${integrationPath}`, {
    form: { csrf: token, mode: 'user', app: 'system', scopes: '' },
    maxRedirects: 0,
  });
  check(resp.status() === 404, `admin of ${OTHER_BOT} POST ${integrationPath}: ${resp.status()}`);
  await page.goto(`${BASE}/console/bots/${OTHER_BOT}`);
  await go(page, page.getByRole('button', { name: 'Sign out' }), at(`/console?signed-out`));

  emit({ event: 'scenario_done', mode, bot });
  await axeContext.close();
  await context.close();
}

const browser = await chromium.launch({ executablePath: CHROMIUM });
emit({ event: 'ready', browser: browser.version() });
try {
  for (const mode of MODES) await scenario(browser, mode);
} finally {
  await browser.close();
}
emit({ event: 'done' });
