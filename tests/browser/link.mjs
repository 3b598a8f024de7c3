// The link's Continue in a real browser: Playwright (playwright-core) driving the system's
// Chromium, as Chromium decides `Sec-Fetch-Site` and `Origin` itself. Driven by
// tests/api/browser.rs, which starts authlink on the fake provider (tests/api/provider.rs) and
// reads this script's stdout: one JSON object per line, `{"event": …}`.
//
// 1. A person opens LINK, presses Continue, and arrives at the provider's authorize URL (the fake
//    signs in at once and sends the browser back to authlink's success page).
// 2. A page on another site auto-submits FOREIGN_LINK (login CSRF): authlink refuses it with its
//    page, and the browser holds no cookie of authlink's afterwards.

import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const LINK = env('LINK');
const FOREIGN_LINK = env('FOREIGN_LINK');
const AUTHORIZE = env('PROVIDER_AUTHORIZE_URL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

/** The headers the browser sent with `request` that say where it came from. */
async function provenance(request) {
  const h = await request.allHeaders();
  return { sec_fetch_site: h['sec-fetch-site'] ?? null, origin: h.origin ?? null };
}

async function legitimate(browser) {
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  const resp = await page.goto(LINK);
  check(resp.status() === 200, `GET the link: ${resp.status()}`);
  const button = page.getByRole('button', { name: /^Continue to / });
  await button.waitFor({ state: 'visible' });
  const [post, authorize] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && r.url() === LINK),
    page.waitForRequest((r) => r.url().startsWith(AUTHORIZE)),
    button.click(),
  ]);
  const continued = await post.response();
  await page.waitForLoadState('load');
  emit({
    event: 'continued',
    post: { status: continued.status(), ...(await provenance(post)) },
    authorize_url: authorize.url(),
    landed: page.url(),
    heading: (await page.locator('h1').textContent()).trim(),
  });
  await context.close();
}

async function crossSite(browser) {
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  const evil = 'http://evil.example/';
  await page.route(evil, (route) => route.fulfill({
    contentType: 'text/html',
    body: `<!doctype html><html lang="en"><title>evil</title><form id="f" method="post" action="${FOREIGN_LINK}"></form>`
      + '<script>document.getElementById("f").submit()</script>',
  }));
  const [post] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && r.url() === FOREIGN_LINK),
    page.goto(evil),
  ]);
  const resp = await post.response();
  // Wherever the form's navigation ends (the test says where it must).
  await page.waitForURL((u) => u.href !== evil, { waitUntil: 'load' });
  const cookies = await context.cookies();
  emit({
    event: 'refused',
    post: { status: resp.status(), ...(await provenance(post)) },
    landed: page.url(),
    heading: (await page.locator('h1').textContent()).trim(),
    cookies: cookies.map((c) => c.name),
  });
  await context.close();
}

const browser = await chromium.launch({ executablePath: CHROMIUM });
emit({ event: 'ready', browser: browser.version() });
try {
  await legitimate(browser);
  await crossSite(browser);
} finally {
  await browser.close();
}
emit({ event: 'done' });
