// What a real server cannot be made to do on cue: a Revoke ahead of its Push, a flood of
// TaskIds, a run of failed connections. The client talks to a scripted WebSocket here.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CrierClient } from '../dist/index.js';

/** A WebSocket class whose instances the test drives; `sockets` lists them in order. */
function scripted() {
  const sockets = [];
  class Socket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      sockets.push(this);
      queueMicrotask(() => this.onopen?.({}));
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code) {
      this.closedWith = code ?? 1005;
    }
    frame(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    end(code, reason = '') {
      this.onclose?.({ code, reason });
    }
  }
  return { Socket, sockets };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

async function loggedIn(options = {}) {
  const { Socket, sockets } = scripted();
  const c = new CrierClient({
    url: 'https://push.example.com',
    sdkAppId: 1,
    identifier: 'me',
    getUserSig: () => 'sig',
    WebSocket: Socket,
    ...options,
  });
  c.connect();
  await tick();
  sockets[0].frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 1 });
  return { c, socket: sockets[0], sockets };
}

const push = (taskId) => ({
  Type: 'Push',
  TaskId: taskId,
  From_Account: 'admin',
  MsgTimeStamp: 1,
  MsgRandom: 1,
  MsgBody: [],
  Offline: false,
});

/** Stands in for the timers: `timers` lists what the client armed, to be fired by hand. */
function fakeTimers() {
  const realSetTimeout = globalThis.setTimeout;
  const timers = [];
  globalThis.setTimeout = (fn, ms) => {
    timers.push({ fn, ms });
    return timers.length;
  };
  return { timers, restore: () => (globalThis.setTimeout = realSetTimeout) };
}

test('an http base URL becomes the ws URL of /v4/ws; Login is the first frame', async () => {
  const { c, socket } = await loggedIn();
  assert.equal(socket.url, 'wss://push.example.com/v4/ws');
  assert.deepEqual(socket.sent[0], { Type: 'Login', SdkAppId: 1, Identifier: 'me', UserSig: 'sig', Platform: 'Web' });
  c.close();
});

test('a push that arrives after its Revoke is dropped', async () => {
  const { c, socket } = await loggedIn();
  const pushes = [];
  const revokes = [];
  c.on('push', (p) => void pushes.push(p.TaskId));
  c.on('revoke', (r) => void revokes.push(r.TaskId));
  socket.frame({ Type: 'Revoke', TaskId: 'gone' });
  socket.frame(push('gone'));
  socket.frame(push('kept'));
  assert.deepEqual(revokes, ['gone']);
  assert.deepEqual(pushes, ['kept']);
  c.close();
});

test('TaskIds are remembered up to dedupCapacity, the oldest forgotten first', async () => {
  const { c, socket } = await loggedIn({ dedupCapacity: 3 });
  const pushes = [];
  c.on('push', (p) => void pushes.push(p.TaskId));
  for (const id of ['a', 'b', 'c', 'a', 'd', 'a', 'd']) socket.frame(push(id));
  // 'a' was forgotten when 'd' came, so its next repeat is handed over again.
  assert.deepEqual(pushes, ['a', 'b', 'c', 'd', 'a']);
  c.close();
});

test('a push handler that throws: an error event, and no Ack', async () => {
  const { c, socket } = await loggedIn();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.on('push', () => {
    throw new Error('handler bug');
  });
  socket.frame(push('t1'));
  await tick();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].cause.message, 'handler bug');
  assert.ok(!socket.sent.some((f) => f.Type == 'Ack'));
  c.close();
});

test('with no push handler a push is neither handed over nor acknowledged', async () => {
  const { c, socket } = await loggedIn();
  socket.frame(push('t1'));
  await tick();
  assert.ok(!socket.sent.some((f) => f.Type == 'Ack'));
  c.close();
});

test('acks are batched into frames of at most 500 TaskIds', async () => {
  const { c, socket, sockets } = await loggedIn({ ack: 'manual', minReconnectDelay: 1 });
  socket.end(1006);
  for (let i = 0; i < 1201; i++) c.ack(`t${i}`);
  // Kept while disconnected, and sent right after the next login.
  while (sockets.length < 2) await new Promise((resolve) => setTimeout(resolve, 1));
  await tick();
  assert.deepEqual(sockets[1].sent.map((f) => f.Type), ['Login']);
  sockets[1].frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 1 });
  const acks = sockets[1].sent.filter((f) => f.Type == 'Ack').map((f) => f.TaskIds.length);
  assert.deepEqual(acks, [500, 500, 201]);
  c.close();
});

test('reconnect delays double from minReconnectDelay to maxReconnectDelay, with jitter, and reset after a login', async () => {
  const { timers, restore } = fakeTimers();
  try {
    const { Socket, sockets } = scripted();
    const c = new CrierClient({
      url: 'ws://x/v4/ws',
      sdkAppId: 1,
      identifier: 'me',
      getUserSig: async () => 'sig',
      WebSocket: Socket,
      minReconnectDelay: 100,
      maxReconnectDelay: 1000,
      connectTimeout: 99999,
    });
    const delays = [];
    const failOnce = async () => {
      await tick();
      sockets.at(-1).end(1006);
      const timer = timers.at(-1);
      delays.push(timer.ms);
      timer.fn();
      await tick();
    };
    c.connect();
    for (let i = 0; i < 8; i++) await failOnce();
    const ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
    delays.forEach((ms, i) => assert.ok(ms >= ceilings[i] / 2 && ms <= ceilings[i], `attempt ${i}: ${ms} ms`));
    assert.ok(new Set(delays.slice(4)).size > 1, 'jitter spreads the delays');
    // A login resets the back-off.
    await tick();
    sockets.at(-1).frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 1 });
    delays.length = 0;
    await failOnce();
    assert.ok(delays[0] <= 100);
    c.close();
  } finally {
    restore();
  }
});

test('several servers: the first at random, then each in turn, backing off only once a whole round failed', async () => {
  const { timers, restore } = fakeTimers();
  const realRandom = Math.random;
  // 0.5 picks the second of three servers first, and puts each back-off at 3/4 of its step.
  Math.random = () => 0.5;
  try {
    const { Socket, sockets } = scripted();
    const c = new CrierClient({
      url: ['ws://a/v4/ws', 'https://b', 'ws://c/v4/ws'],
      sdkAppId: 1,
      identifier: 'me',
      getUserSig: () => 'sig',
      WebSocket: Socket,
      minReconnectDelay: 100,
      maxReconnectDelay: 1000,
      connectTimeout: 99999,
    });
    const attempts = [];
    const failOnce = async () => {
      await tick();
      const socket = sockets.at(-1);
      socket.end(1006);
      const timer = timers.at(-1);
      attempts.push([socket.url, timer.ms]);
      timer.fn();
      await tick();
    };
    c.connect();
    for (let i = 0; i < 6; i++) await failOnce();
    assert.deepEqual(attempts, [
      ['wss://b/v4/ws', 0],
      ['ws://c/v4/ws', 0],
      ['ws://a/v4/ws', 75],
      ['wss://b/v4/ws', 0],
      ['ws://c/v4/ws', 0],
      ['ws://a/v4/ws', 150],
    ]);

    // A login on b resets the back-off; when it ends, b comes last in the next round.
    await tick();
    const connected = [];
    const disconnected = [];
    c.on('connected', (e) => connected.push(e));
    c.on('disconnected', (e) => disconnected.push(e));
    assert.equal(c.url, 'wss://b/v4/ws');
    sockets.at(-1).frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 7 });
    assert.deepEqual(connected, [{ identifier: 'me', serverTime: 7, url: 'wss://b/v4/ws' }]);
    assert.equal(c.state, 'connected');
    attempts.length = 0;
    for (let i = 0; i < 3; i++) await failOnce();
    assert.deepEqual(attempts, [
      ['wss://b/v4/ws', 0],
      ['ws://c/v4/ws', 0],
      ['ws://a/v4/ws', 75],
    ]);
    assert.deepEqual(disconnected, [{ code: 1006, reason: '', willReconnect: true }]);
    assert.equal(c.url, 'wss://b/v4/ws');
    c.close();
    assert.equal(c.url, undefined);
  } finally {
    Math.random = realRandom;
    restore();
  }
});

test('repeats from another server after a failover: acknowledged again there if acknowledged, never handed over twice', async (t) => {
  const { c, socket, sockets } = await loggedIn({ url: ['ws://a', 'ws://b'], minReconnectDelay: 1 });
  // Even when an assertion fails: a client left running keeps the test file from ending.
  t.after(() => c.close());
  const pushes = [];
  let release;
  const unfinished = new Promise((resolve) => (release = resolve));
  c.on('push', (p) => {
    pushes.push(p.TaskId);
    return p.TaskId == 'unfinished' ? unfinished : undefined;
  });
  socket.frame(push('done'));
  socket.frame(push('unfinished'));
  await tick();
  assert.deepEqual(socket.sent.filter((f) => f.Type == 'Ack'), [{ Type: 'Ack', TaskIds: ['done'] }]);
  socket.end(1006);
  while (sockets.length < 2) await new Promise((resolve) => setTimeout(resolve, 1));
  const other = sockets[1];
  assert.notEqual(other.url, socket.url, 'the other server next');
  await tick();
  other.frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 1 });
  other.frame({ ...push('done'), Offline: true });
  other.frame({ ...push('unfinished'), Offline: true });
  await tick();
  assert.deepEqual(pushes, ['done', 'unfinished']);
  assert.deepEqual(other.sent.filter((f) => f.Type == 'Ack'), [{ Type: 'Ack', TaskIds: ['done'] }]);
  release();
  await tick();
  assert.deepEqual(other.sent.filter((f) => f.Type == 'Ack').flatMap((f) => f.TaskIds), ['done', 'unfinished']);
  c.close();
});

test('getUserSig failing or hanging, or an upgrade that never finishes: retried within connectTimeout', async () => {
  const { Socket, sockets } = scripted();
  let calls = 0;
  const c = new CrierClient({
    url: 'ws://x/v4/ws',
    sdkAppId: 1,
    identifier: 'me',
    WebSocket: Socket,
    connectTimeout: 200,
    minReconnectDelay: 1,
    getUserSig: () => {
      calls++;
      if (calls == 1) throw new Error('backend down');
      if (calls == 2) return new Promise(() => {});
      return `sig${calls}`;
    },
  });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const connected = new Promise((resolve) => c.on('connected', resolve));
  c.connect();
  // Third call: a socket that opens but never answers the Login. Fourth: logged in.
  while (sockets.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(sockets[0].sent.map((f) => f.UserSig), ['sig3']);
  await tick();
  sockets[1].frame({ Type: 'LoginOK', Identifier: 'me', ServerTime: 1 });
  await connected;
  assert.equal(calls, 4);
  assert.deepEqual(sockets[1].sent.map((f) => f.UserSig), ['sig4']);
  assert.equal(sockets[0].closedWith, 1005, 'the silent socket was closed');
  assert.deepEqual(
    errors.map((e) => [e.message, e.code, e.fatal, e.cause?.message]),
    [['getUserSig failed', 0, false, 'backend down']],
  );
  c.close();
});

test('without a WebSocket to use, the constructor says so', () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(
      () => new CrierClient({ url: 'ws://x', sdkAppId: 1, identifier: 'me', getUserSig: () => '' }),
      /pass one as the WebSocket option/,
    );
    assert.throws(() => new CrierClient({ url: [], sdkAppId: 1, identifier: 'me', getUserSig: () => '' }), /at least one server/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
