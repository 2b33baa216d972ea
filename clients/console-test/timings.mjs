// The console's timings on a large directory (opt-in, not in CI): `scripts/test-console` with
// CRIER_CONSOLE_TIMINGS=1M builds the benchmark's dataset and runs this against a release
// `crier serve` started on a copy of it. Measures, in the browser, how long each page takes
// from navigation to its data shown, and how long the audience count takes from a change of
// the condition to the new count shown (60 ms of that is the console's debounce). Reports
// numbers; asserts nothing about them.

import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';

import { admin, browser, signIn, startServer, userSig, workspace } from './helpers.mjs';

// The benchmark's app (crates/crier-bench/src/crier_phase.rs).
const APP = 1400000001;
const KEY = 'crier-bench-secret-key-0123456789abcdef';
const REPS = 7;

const out = process.argv[2] || 'console-timings.md';
const dataset = process.env.CRIER_DATASET;
if (!dataset) throw new Error('CRIER_DATASET must name the benchmark data directory (bench-cache/crier-...)');

const space = workspace({ app: APP, key: KEY, extra: 'min_push_interval_ms = 1000\ndaily_push_quota = 100' });
cpSync(dataset, space.dataDir, { recursive: true });
const started = Date.now();
const server = await startServer(space);
const startupMs = Date.now() - started;
const call = admin(server, APP, KEY);
const live = (await call('crier/overview')).LiveAccounts;
const pushed = await call('all_member_push/im_push', { MsgRandom: 1, MsgLifeTime: 3600, MsgBody: [{ MsgType: 'TIMTextElem', MsgContent: { Text: 'to everyone' } }] });
if (pushed.ActionStatus != 'OK') throw new Error(`push failed: ${JSON.stringify(pushed)}`);

const { instance, tab, problems } = await browser(server.http);
await tab.goto(`${server.http}/console/`);
await signIn(tab, { app: APP, sig: userSig(APP, KEY, 'administrator') });
await tab.waitForSelector('main[data-loaded=overview]');

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const stats = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, median: at(0.5), p90: at(0.9), max: sorted[sorted.length - 1] };
};

// Page loads: a fresh document each time (credentials stay in the tab's sessionStorage).
const pages = [
  ['Overview', 'overview', 'overview'],
  ['Compose', 'compose', 'compose'],
  ['Tasks', 'tasks', 'tasks'],
  ['Task report', `tasks/${encodeURIComponent(pushed.TaskId)}`, 'task'],
  ['Accounts (lookup of user123456)', 'accounts/user123456', 'account'],
  ['Tags and attributes', 'tags', 'tags'],
];
const loads = [];
for (const [name, hash, marker] of pages) {
  const times = [];
  for (let rep = 0; rep < REPS; rep++) {
    await tab.goto('about:blank');
    await pause(250); // keeps the page's reads under v4/crier's 10 a second
    const t0 = Date.now();
    await tab.goto(`${server.http}/console/#${hash}`);
    await tab.waitForSelector(`main[data-loaded=${marker}]`, { timeout: 30_000 });
    times.push(Date.now() - t0);
  }
  loads.push([name, stats(times)]);
}

// The audience count: one change at a time, each waited for.
await tab.goto(`${server.http}/console/#compose`);
await tab.waitForSelector('main[data-loaded=compose]');
const countTimings = async () => tab.evaluate(() => window.__crierTimings.length);
async function change(kind, act) {
  const before = await countTimings();
  await act();
  try {
    await tab.waitForFunction((n) => window.__crierTimings.length > n, before, { timeout: 30_000 });
  } catch (error) {
    const shown = await tab.evaluate(() => `${document.querySelector('#audience-count').textContent} / ${document.querySelector('#condition-error').textContent}`);
    throw new Error(`no count after a change of ${kind} (page shows: ${shown})`, { cause: error });
  }
  const timing = await tab.evaluate(() => window.__crierTimings.at(-1));
  await pause(150);
  return { kind, ms: timing.ms };
}
const changes = [];
await tab.check('input[name=cond-kind][value=tags]');
await pause(300);
const tagLists = [
  ['tags-or', 'tag0001'], ['tags-or', 'tag0001, tag0002'], ['tags-or', 'tag0001, tag0002, tag0500'],
  ['tags-or', 'tag0003, tag0004, tag0005, tag0006, tag0007, tag0008, tag0009, tag0010, tag0011, tag0012'],
  // No tag in both lists at once (that is refused, 90022).
  ['tags-and', 'tag0020'], ['tags-and', 'tag0020, tag0021'], ['tags-and', 'tag0020, tag0021, tag0022'],
  ['tags-or', ''], ['tags-and', 'tag0030, tag0040'], ['tags-and', 'tag0100'],
];
for (let round = 0; round < 2; round++) {
  for (const [field, value] of tagLists) {
    changes.push(await change(field == 'tags-or' ? 'tags (TagsOr)' : 'tags (TagsAnd)', () => tab.fill(`#${field}`, value)));
  }
}
await tab.fill('#tags-and', '');
await tab.check('input[name=cond-kind][value=attrs]');
await pause(400);
const firstRow = tab.locator('#attrs-and li').first();
for (const [attr, value] of [['tier', 'v0'], ['country', 'v1'], ['city', 'v2'], ['gender', 'v1'], ['region', 'v7']]) {
  await firstRow.locator('select').selectOption(attr);
  await pause(150);
  changes.push(await change('attributes (AttrsAnd)', () => firstRow.locator('input').fill(value)));
}
changes.push(await change('all users', () => tab.check('input[name=cond-kind][value=all]')));

const byKind = {};
for (const { kind, ms } of changes) (byKind[kind] ||= []).push(ms);
const all = stats(changes.map((c) => c.ms));

const fmt = (ms) => `${ms.toFixed(0)}`;
const lines = [
  `Release \`crier serve\` on a copy of the benchmark dataset (${live.toLocaleString('en-US')} live accounts, 1,000 tags, 10 attributes), started in ${(startupMs / 1000).toFixed(1)} s; headless Debian chromium ${await instance.version()} through playwright-core on the same ${cpus().length}-core machine; one push to all kept for an hour. Times in ms.`,
  '',
  `| Page (fresh document to data shown) | runs | median | p90 | max |`,
  `| --- | ---: | ---: | ---: | ---: |`,
  ...loads.map(([name, s]) => `| ${name} | ${s.n} | ${fmt(s.median)} | ${fmt(s.p90)} | ${fmt(s.max)} |`),
  '',
  `| Audience count (change to count shown, incl. 60 ms debounce) | runs | median | p90 | max |`,
  `| --- | ---: | ---: | ---: | ---: |`,
  ...Object.entries(byKind).map(([kind, values]) => { const s = stats(values); return `| ${kind} | ${s.n} | ${fmt(s.median)} | ${fmt(s.p90)} | ${fmt(s.max)} |`; }),
  `| every change | ${all.n} | ${fmt(all.median)} | ${fmt(all.p90)} | ${fmt(all.max)} |`,
  '',
];
writeFileSync(out, lines.join('\n'));
console.log(lines.join('\n'));
if (problems.length) console.log(`page problems: ${problems.join('; ')}`);
await instance.close();
await server.stop();
space.remove();
