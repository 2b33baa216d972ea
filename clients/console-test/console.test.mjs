// The console against a real `crier serve`, in headless chromium and in headless Firefox: sign
// in, build a tag condition and see the count the API gives, send, a WebSocket client of that
// tag receives the push, the task page shows it delivered then acknowledged, an account lookup
// shows the user's tags and session, and a wrong UserSig and a push inside the 1 s interval are
// shown in words. Chromium's screenshots of every page go to docs/console/ (Firefox's only to
// $CRIER_CONSOLE_FIREFOX_SCREENSHOTS when set). CRIER_CONSOLE_BROWSERS=firefox (or chromium)
// runs one browser.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import WebSocket from 'ws';

import { firefox } from './firefox.mjs';
import { admin, browser, repo, signIn, startServer, userSig, workspace } from './helpers.mjs';

const APP = 1400000777;
const KEY = 'the console test key, long enough to be a real one 0123456789';
const SHOTS = {
  chromium: process.env.CRIER_CONSOLE_SCREENSHOTS || join(repo, 'docs/console'),
  firefox: process.env.CRIER_CONSOLE_FIREFOX_SCREENSHOTS,
};
const BROWSERS = { chromium: browser, firefox };

/** A WebSocket session of `identifier` that records its pushes and acknowledges on demand. */
async function session(server, identifier, platform) {
  const socket = new WebSocket(server.ws);
  const pushes = [];
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
  const loggedIn = new Promise((resolve, reject) => {
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.Type == 'LoginOK') resolve();
      else if (frame.Type == 'Error') reject(new Error(`login failed: ${frame.ErrorInfo}`));
      else if (frame.Type == 'Push') pushes.push(frame);
    });
  });
  socket.send(JSON.stringify({ Type: 'Login', SdkAppId: APP, Identifier: identifier, UserSig: userSig(APP, KEY, identifier), Platform: platform }));
  await loggedIn;
  return {
    pushes,
    ack: (taskId) => socket.send(JSON.stringify({ Type: 'Ack', TaskIds: [taskId] })),
    close: () => socket.close(),
  };
}

async function until(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const selected = (process.env.CRIER_CONSOLE_BROWSERS || 'chromium,firefox').split(',');
for (const name of selected) {
  if (!BROWSERS[name]) throw new Error(`CRIER_CONSOLE_BROWSERS: no browser ${name} (chromium, firefox)`);
  test(`${name}: the console signs in, counts, sends, follows delivery and shows accounts`, { timeout: 180_000 },
    (t) => journey(t, BROWSERS[name], SHOTS[name]));
}

async function journey(t, open, shots) {
  const shot = async (tab, name) => {
    if (!shots) return;
    mkdirSync(shots, { recursive: true });
    // Playwright hides the caret and waits for fonts.
    await tab.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  };
  const space = workspace({ app: APP, key: KEY, extra: 'min_push_interval_ms = 1000\ndaily_push_quota = 100' });
  t.after(space.remove);
  const server = await startServer(space);
  t.after(server.stop);
  const call = admin(server, APP, KEY);

  // Three accounts: alice (vip, news), bob (news), carol; attributes tier and city.
  for (const [path, body] of [
    ['im_open_login_svc/multiaccount_import', { Accounts: ['alice', 'bob', 'carol'] }],
    ['all_member_push/im_add_tag', { UserTags: [{ To_Account: 'alice', Tags: ['vip', 'news'] }, { To_Account: 'bob', Tags: ['news'] }] }],
    ['all_member_push/im_set_attr_name', { AttrNames: { 0: 'tier', 1: 'city' } }],
    ['all_member_push/im_set_attr', { UserAttrs: [{ To_Account: 'alice', Attrs: { tier: 'gold', city: 'sz' } }, { To_Account: 'bob', Attrs: { city: 'bj' } }] }],
  ]) {
    assert.equal((await call(path, body)).ActionStatus, 'OK', path);
  }
  const alice = await session(server, 'alice', 'Android');
  t.after(alice.close);

  const { instance, tab, problems, foreign } = await open(server.http);
  t.after(() => instance.close());
  await tab.goto(`${server.http}/console/`);

  // A wrong UserSig (signed with another key) is refused in words, on the form.
  await signIn(tab, { app: APP, sig: userSig(APP, 'not the app key', 'administrator') });
  const refusal = tab.locator('#signin-error .status.error');
  await refusal.waitFor();
  assert.match(await refusal.textContent(), /UserSig is wrong.*70009/);
  await shot(tab, 'signin');

  // The right one opens the Overview.
  await tab.reload();
  await signIn(tab, { app: APP, sig: userSig(APP, KEY, 'administrator') });
  await tab.waitForSelector('main[data-loaded=overview]');
  assert.equal(await tab.locator('#sessions-total').textContent(), '1');
  assert.match(await tab.locator('#sessions-by-platform').textContent(), /Android\s*1/);
  assert.equal(await tab.locator('#pushes-today').textContent(), '0');

  // Compose: a tag condition, its count equal to the API's.
  await tab.click('nav a[href="#compose"]');
  await tab.waitForSelector('main[data-loaded=compose]');
  await tab.fill('#msg-text', 'Sale starts now');
  await tab.check('input[name=cond-kind][value=tags]');
  await tab.fill('#tags-or', 'vip, news');
  await tab.waitForSelector('#audience-count[data-count="2"]');
  // vip in both lists is refused (90022), in words, next to the condition.
  await tab.fill('#tags-and', 'vip');
  const conflict = tab.locator('#condition-error .status.error');
  await conflict.waitFor();
  assert.match(await conflict.textContent(), /both the AND and the OR list.*90022/);
  await tab.fill('#tags-or', 'news');
  await tab.waitForSelector('#audience-count[data-count="1"]');
  const counted = await call('crier/audience_count', { Condition: { TagsAnd: ['vip'], TagsOr: ['news'] } });
  assert.equal(await tab.locator('#audience-count').getAttribute('data-count'), String(counted.Count));
  await tab.fill('#opi-title', 'Big sale');
  await tab.fill('#lifetime', '600');
  assert.match(await tab.locator('#preview').textContent(), /Big sale.*Sale starts now/);
  await shot(tab, 'compose');

  // Send, through the confirmation that repeats the count.
  await tab.click('#send');
  assert.match(await tab.locator('#confirm-count').textContent(), /It goes to 1 accounts/);
  await tab.click('#confirm-send');
  const sent = tab.locator('#sent-task');
  await sent.waitFor();
  const taskId = await sent.textContent();
  const push = await until('alice to get the push', () => alice.pushes.find((p) => p.TaskId == taskId));
  assert.equal(push.MsgBody[0].MsgContent.Text, 'Sale starts now');

  // A second push inside the 1 s interval: refused, in words, next to Send.
  await tab.click('#send');
  await tab.click('#confirm-send');
  const tooSoon = tab.locator('#send-error .status.error');
  await tooSoon.waitFor();
  assert.match(await tooSoon.textContent(), /Too soon.*90024/);

  // The task page: delivered online, then acknowledged.
  await tab.click(`a[href="#tasks/${encodeURIComponent(taskId)}"]`);
  await tab.waitForSelector('main[data-loaded=task]');
  assert.equal(await tab.locator('#f-audience').textContent(), '1');
  await until('the delivery to show', async () => (await tab.locator('#f-online').textContent()) == '1');
  assert.equal(await tab.locator('#f-acked').textContent(), '0');
  alice.ack(taskId);
  await until('the acknowledgement to show', async () => (await tab.locator('#f-acked').textContent()) == '1');
  await until('the timeline to show it', async () => (await tab.locator('#task-detail figure.chart-box').count()) == 1);
  await shot(tab, 'task');
  await tab.goto(`${server.http}/console/#tasks`);
  await tab.waitForSelector('main[data-loaded=tasks]');
  assert.match(await tab.locator(`tr[data-task="${taskId}"]`).textContent(), /active/);
  await shot(tab, 'tasks');

  // An account lookup: alice's tags, attributes and session.
  await tab.click('nav a[href="#accounts"]');
  await tab.fill('#lookup-id', 'alice');
  await tab.press('#lookup-id', 'Enter');
  await tab.waitForSelector('main[data-loaded=account]');
  assert.deepEqual(await tab.locator('#account-tags li').allTextContents(), ['vip', 'news']);
  assert.deepEqual(await tab.locator('#account-sessions li').allTextContents(), ['Android']);
  assert.match(await tab.locator('#account-attrs').textContent(), /tier\s*gold/);
  await shot(tab, 'accounts');

  // Tags and attributes: member counts.
  await tab.click('nav a[href="#tags"]');
  await tab.waitForSelector('main[data-loaded=tags]');
  assert.match(await tab.locator('section[aria-labelledby=tags-title]').textContent(), /news\s*2/);
  assert.equal(await tab.locator('#slot-0').inputValue(), 'tier');
  await shot(tab, 'tags');

  // Back on the Overview: one push today, and the chart has the delivery.
  await tab.click('nav a[href="#overview"]');
  await tab.waitForSelector('main[data-loaded=overview]');
  assert.equal(await tab.locator('#pushes-today').textContent(), '1');
  await until('the chart to show the delivery', async () => /Delivered online: 1/.test(await tab.locator('.legend').first().textContent()));
  await shot(tab, 'overview');

  assert.deepEqual(foreign, [], 'the console loads nothing from outside the server');
  assert.deepEqual(problems, [], 'no script errors');
}
