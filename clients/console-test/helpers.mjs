// What the console's browser test and its timing run share: a real `crier serve` child
// process, UserSigs from `crier usersig`, signed REST calls, and a headless Debian chromium.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

export const repo = new URL('../..', import.meta.url).pathname;
export const CHROMIUM = process.env.CRIER_CHROMIUM || '/usr/bin/chromium';

const running = new Set();
process.on('exit', () => running.forEach((child) => child.kill('SIGKILL')));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + (signal == 'SIGINT' ? 2 : 15)));
}

export function crierBinary() {
  const binary = process.env.CRIER_TEST_BINARY || join(repo, 'target/debug/crier');
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`cargo build -p crier\` (scripts/test-console does)`);
  }
  return binary;
}

/** A UserSig made by the project's own CLI. */
export function userSig(app, key, identifier, expire = 86400) {
  return execFileSync(crierBinary(), ['usersig', '--sdkappid', String(app), '--key', key, '--identifier', identifier, '--expire', String(expire)])
    .toString()
    .trim();
}

/** A temporary directory with a config file for one app; `dataDir` may be given. */
export function workspace({ app, key, extra = '', dataDir }) {
  const dir = mkdtempSync(join(tmpdir(), 'crier-console-'));
  const config = join(dir, 'crier.toml');
  writeFileSync(config, `[[app]]\nsdkappid = ${app}\nsecret_key = "${key}"\nadmins = ["administrator"]\n${extra}\n`);
  return { dir, config, dataDir: dataDir || join(dir, 'data'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts `crier serve` on an ephemeral port; resolves once it listens. */
export function startServer({ config, dataDir }, { binary = crierBinary(), timeoutMs = 600_000 } = {}) {
  const child = spawn(binary,
    ['serve', '--listen', '127.0.0.1:0', '--log-format', 'json', '--config', config, '--data-dir', dataDir],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  exited.then(() => running.delete(child));
  const stop = async () => {
    if (child.exitCode == null && child.signalCode == null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const log = [];
    const timer = setTimeout(() => reject(new Error(`crier did not listen within ${timeoutMs} ms:\n${log.join('\n')}`)), timeoutMs);
    createInterface({ input: child.stderr }).on('line', (line) => {
      log.push(line);
      let event;
      try { event = JSON.parse(line); } catch { return; }
      if (event.message == 'listening') {
        clearTimeout(timer);
        resolve({ http: `http://${event.addr}`, ws: `ws://${event.addr}/v4/ws`, stop, log });
      }
    });
    exited.then((code) => { clearTimeout(timer); reject(new Error(`crier exited (${code}) before listening:\n${log.join('\n')}`)); });
  });
}

/** Signed admin calls: `call(path, body)` answers the envelope, whatever it says. */
export function admin(server, app, key, identifier = 'administrator') {
  const sig = userSig(app, key, identifier);
  return async (path, body = {}) => {
    const query = new URLSearchParams({ sdkappid: String(app), identifier, usersig: sig, random: '7', contenttype: 'json' });
    const response = await fetch(`${server.http}/v4/${path}?${query}`, { method: 'POST', body: JSON.stringify(body) });
    return response.json();
  };
}

/** Headless chromium with one tab; every request outside `origin` is recorded. */
export async function browser(origin) {
  const instance = await chromium.launch({
    executablePath: CHROMIUM,
    // Root (as in CI) cannot use Chromium's sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await instance.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  const tab = await context.newPage();
  const problems = [];
  const foreign = [];
  tab.on('pageerror', (e) => problems.push(e.message));
  tab.on('console', (m) => m.type() == 'error' && !/Failed to load resource/.test(m.text()) && problems.push(m.text()));
  tab.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
  return { instance, tab, problems, foreign };
}

/** Signs in through the form, with the keyboard only. */
export async function signIn(tab, { app, identifier = 'administrator', sig }) {
  await tab.locator('#sdkappid').focus();
  await tab.keyboard.type(String(app));
  await tab.keyboard.press('Tab');
  await tab.keyboard.press('ControlOrMeta+a');
  await tab.keyboard.type(identifier);
  await tab.keyboard.press('Tab');
  await tab.keyboard.insertText(sig);
  await tab.keyboard.press('Tab');
  const focused = await tab.evaluate(() => document.activeElement.textContent);
  if (focused != 'Sign in') throw new Error(`Tab from the UserSig reached "${focused}", not the Sign in button`);
  await tab.keyboard.press('Enter');
}
