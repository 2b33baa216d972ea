// What the tests share: a real `crier serve` child process, an admin for it, what the nodes of
// a cluster share, a WebSocket that records what the client sends, a TCP proxy that can cut or
// freeze connections, and waits.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

import { CrierAdmin } from '../dist/admin.js';
import { CrierClient } from '../dist/index.js';

export const APP = 1400000123;
export const KEY = 'a test key that is long enough to be a real one 0123456789';
export const ADMIN = 'administrator';

const repo = new URL('../../..', import.meta.url).pathname;

// Servers still running when this process ends (a test cancelled by its timeout skips its
// after-hooks) are killed rather than left behind.
const running = new Set();
process.on('exit', () => running.forEach((child) => child.kill('SIGKILL')));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + (signal == 'SIGINT' ? 2 : 15)));
}

export function crierBinary() {
  const binary = process.env.CRIER_TEST_BINARY || join(repo, 'target/debug/crier');
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`cargo build -p crier\` (scripts/test-js does)`);
  }
  return binary;
}

/**
 * A data directory and config file, removed after the test. `extraConfig` goes into the app's
 * table, `topConfig` before it (the keys of the server as a whole).
 */
export function workspace(t, extraConfig = '', topConfig = '') {
  const dir = mkdtempSync(join(tmpdir(), 'crier-js-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'crier.toml');
  writeFileSync(
    config,
    `${topConfig}\n[[app]]\nsdkappid = ${APP}\nsecret_key = "${KEY}"\nadmins = ["${ADMIN}"]\n` +
      `min_push_interval_ms = 0\ndaily_push_quota = 100000\n${extraConfig}\n`,
  );
  return { config, dataDir: join(dir, 'data') };
}

/**
 * Starts `crier serve` and resolves once it listens, with its address from the JSON log line
 * `"message":"listening"`. Pass `port` to bind a given port (a restart on the same address).
 */
export function startServer(t, { config, dataDir }, port = 0) {
  const child = spawn(
    crierBinary(),
    ['serve', '--listen', `127.0.0.1:${port}`, '--log-format', 'json', '--config', config, '--data-dir', dataDir],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  running.add(child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  exited.then(() => running.delete(child));
  const stop = async (signal = 'SIGKILL') => {
    if (child.exitCode == null && child.signalCode == null) child.kill(signal);
    await exited;
  };
  t.after(() => stop());
  return new Promise((resolve, reject) => {
    const log = [];
    // Reading every line keeps the child from blocking on a full pipe.
    createInterface({ input: child.stderr }).on('line', (line) => {
      log.push(line);
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        return;
      }
      if (event.message == 'listening') {
        const addr = event.addr;
        resolve({
          addr,
          port: Number(addr.split(':').pop()),
          http: `http://${addr}`,
          ws: `ws://${addr}/v4/ws`,
          stop,
          admin: new CrierAdmin({ url: `http://${addr}`, sdkAppId: APP, secretKey: KEY }),
        });
      }
    });
    exited.then((code) => reject(new Error(`crier exited (${code}) before listening:\n${log.join('\n')}`)));
  });
}

const POSTGRES = process.env.CRIER_TEST_POSTGRES || 'postgres://postgres@127.0.0.1:5432';
const NATS_HOST = '127.0.0.1';
const NATS_PORT = 4222;

function psql(sql) {
  execFileSync('psql', [`${POSTGRES}/postgres`, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 20_000,
  });
}

/** Null when a NATS server answers (it greets every connection with INFO), else what went wrong. */
function natsProblem() {
  return new Promise((resolve) => {
    const socket = connect(NATS_PORT, NATS_HOST);
    const done = (problem) => {
      socket.destroy();
      resolve(problem);
    };
    socket.setTimeout(3000, () => done('no greeting within 3 s'));
    socket.once('data', (data) => done(data.toString().startsWith('INFO') ? null : 'not a NATS server'));
    socket.once('error', (e) => done(e.message));
  });
}

/**
 * What the nodes of one cluster share: a PostgreSQL database and a NATS subject prefix of this
 * test's own; the database is dropped after the test. `workspace(nodeId)` makes a node's files.
 * Answers `{ skip: reason }` instead when PostgreSQL or NATS cannot be reached.
 */
export async function cluster(t) {
  const nats = await natsProblem();
  if (nats) return { skip: `NATS unreachable at ${NATS_HOST}:${NATS_PORT}: ${nats}` };
  const database = `crier_js_${randomBytes(8).toString('hex')}`;
  try {
    psql(`CREATE DATABASE ${database}`);
  } catch (e) {
    return { skip: `PostgreSQL unreachable at ${POSTGRES}: ${(e.stderr?.toString() || e.message).trim()}` };
  }
  // FORCE: nodes still connected (a killed one's connections linger) must not keep it alive.
  t.after(() => psql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
  const top =
    `store = "${POSTGRES}/${database}"\nbus = "nats://${NATS_HOST}:${NATS_PORT}"\n` +
    `bus_subject_prefix = "crier-js-${randomBytes(8).toString('hex')}"\n`;
  return { workspace: (nodeId) => workspace(t, '', `${top}node_id = "${nodeId}"\n`) };
}

/**
 * A `ws` WebSocket class that records the frames the client sends, and those it receives with
 * the URL of the connection they came on (`{ url, frame }`).
 */
export function recordingWebSocket() {
  const sent = [];
  const received = [];
  class Recording extends WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
    get onmessage() {
      return super.onmessage;
    }
    set onmessage(handler) {
      super.onmessage =
        handler &&
        ((event) => {
          received.push({ url: this.url, frame: JSON.parse(event.data) });
          handler(event);
        });
    }
  }
  return { WebSocket: Recording, sent, received };
}

let nextId = 0;
/** An identifier no other test uses. */
export function account(prefix = 'user') {
  return `${prefix}-${process.pid}-${++nextId}`;
}

/**
 * A client on the test server that is closed after the test; `sent` and `received` are its
 * frames (see {@link recordingWebSocket}), `sigs` its getUserSig calls.
 */
export function client(t, server, options = {}) {
  const identifier = options.identifier || account();
  const recording = recordingWebSocket();
  const sigs = [];
  const c = new CrierClient({
    url: server.ws,
    sdkAppId: APP,
    identifier,
    WebSocket: recording.WebSocket,
    getUserSig: () => {
      const sig = server.admin.genUserSig(identifier, 3600 + sigs.length);
      sigs.push(sig);
      return sig;
    },
    minReconnectDelay: 50,
    maxReconnectDelay: 400,
    ...options,
  });
  t.after(() => c.close());
  return Object.assign(c, { identifier, sent: recording.sent, received: recording.received, sigs });
}

/** The next `event` of `emitter` for which `accept` holds. */
export function next(emitter, event, accept = () => true) {
  return new Promise((resolve) => {
    const off = emitter.on(event, (value) => {
      if (accept(value)) {
        off();
        resolve(value);
      }
    });
  });
}

export function connected(c) {
  const done = next(c, 'connected');
  c.connect();
  return done;
}

/** Collects the pushes handed over, and resolves `waitFor(taskId)` when one arrives. */
export function pushLog(c) {
  const pushes = [];
  const waiting = new Map();
  c.on('push', (push) => {
    pushes.push(push);
    waiting.get(push.TaskId)?.(push);
  });
  return {
    pushes,
    ids: () => pushes.map((p) => p.TaskId),
    waitFor: (taskId) =>
      new Promise((resolve) => {
        const seen = pushes.find((p) => p.TaskId == taskId);
        if (seen) resolve(seen);
        else waiting.set(taskId, resolve);
      }),
  };
}

export function text(body, lifetime = 3600) {
  return { MsgLifeTime: lifetime, MsgBody: [{ MsgType: 'TIMTextElem', MsgContent: { Text: body } }] };
}

export function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A TCP proxy in front of the server: `cut()` resets every connection, `freeze()` stops
 * forwarding on the open ones without closing them (a dead network path).
 */
export async function proxy(t, upstreamPort) {
  const pairs = new Set();
  const server = createServer((inbound) => {
    const outbound = connect(upstreamPort, '127.0.0.1');
    const pair = { inbound, outbound };
    pairs.add(pair);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const end = () => {
      pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('close', end).on('error', end);
    outbound.on('close', end).on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    pairs.forEach((pair) => (pair.inbound.destroy(), pair.outbound.destroy()));
    server.close();
  });
  return {
    ws: `ws://127.0.0.1:${server.address().port}/v4/ws`,
    count: () => pairs.size,
    cut: () => pairs.forEach((pair) => pair.inbound.resetAndDestroy()),
    freeze: () =>
      pairs.forEach(({ inbound, outbound }) => {
        inbound.unpipe(outbound);
        outbound.unpipe(inbound);
        inbound.pause();
        outbound.pause();
      }),
  };
}
