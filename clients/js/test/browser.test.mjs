// The browser build in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core,
// which never downloads a browser): a page served here loads dist/crier.min.js, fetches its
// UserSig from this "backend", and receives a push.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { chromium } from 'playwright-core';

import { APP, account, client, connected, pushLog, startServer, text, workspace } from './helpers.mjs';

const CHROMIUM = process.env.CRIER_CHROMIUM || '/usr/bin/chromium';
const bundle = readFileSync(new URL('../dist/crier.min.js', import.meta.url));

const page = (wsUrl, identifier) => `<!doctype html>
<meta charset="utf-8">
<title>crier-client</title>
<script type="module">
  import { CrierClient } from '/crier.min.js';
  window.log = [];
  const client = new CrierClient({
    url: ${JSON.stringify(wsUrl)},
    sdkAppId: ${APP},
    identifier: ${JSON.stringify(identifier)},
    getUserSig: () => fetch('/usersig').then((r) => r.text()),
  });
  client.on('connected', (e) => log.push({ event: 'connected', ...e }));
  client.on('error', (e) => log.push({ event: 'error', code: e.code, message: e.message }));
  client.on('push', (p) => {
    log.push({ event: 'push', ...p });
    document.body.textContent = p.MsgBody[0].MsgContent.Text;
  });
  client.connect();
</script>
<body></body>`;

test('the browser build in headless Chromium logs in, receives a push and acknowledges it', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, workspace(t));
  const identifier = account('browser');
  let sigsServed = 0;
  const site = createServer((req, res) => {
    if (req.url == '/') {
      res.setHeader('content-type', 'text/html');
      res.end(page(server.ws, identifier));
    } else if (req.url == '/crier.min.js') {
      res.setHeader('content-type', 'text/javascript');
      res.end(bundle);
    } else if (req.url == '/usersig') {
      sigsServed++;
      res.end(server.admin.genUserSig(identifier, 600));
    } else {
      // favicon.ico included: anything else the page asks for is a problem, reported below.
      res.statusCode = req.url == '/favicon.ico' ? 204 : 404;
      res.end();
    }
  });
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  t.after(() => site.close());

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Root (as in CI) cannot use Chromium's sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const tab = await browser.newPage();
  const problems = [];
  tab.on('pageerror', (e) => problems.push(e.message));
  tab.on('console', (m) => m.type() == 'error' && problems.push(m.text()));
  await tab.goto(`http://127.0.0.1:${site.address().port}/`);

  await tab.waitForFunction(() => window.log?.some((e) => e.event == 'connected'));
  assert.equal(sigsServed, 1);
  const taskId = await server.admin.push(text('hello, browser'));
  await tab.waitForFunction((id) => window.log.some((e) => e.event == 'push' && e.TaskId == id), taskId);
  const log = await tab.evaluate(() => window.log);
  assert.deepEqual(
    log.map((e) => [e.event, e.TaskId, e.Offline]),
    [
      ['connected', undefined, undefined],
      ['push', taskId, false],
    ],
  );
  assert.equal(await tab.textContent('body'), 'hello, browser');
  assert.deepEqual(problems, []);

  // The page acknowledged it: the same account elsewhere does not get it as a pending push.
  await browser.close();
  const later = client(t, server, { identifier });
  const pushes = pushLog(later);
  await connected(later);
  const marker = await server.admin.push(text('marker', 0));
  await pushes.waitFor(marker);
  assert.deepEqual(pushes.ids(), [marker]);
});
