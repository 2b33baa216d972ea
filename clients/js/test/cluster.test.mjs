// Failover on a real cluster: two `crier serve` nodes on one PostgreSQL database and one NATS
// subject prefix, the client given both. Skipped, with the reason, when either service is
// unreachable.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, cluster, connected, deferred, next, proxy, pushLog, sleep, startServer, text } from './helpers.mjs';

const timeout = 90_000;

const until = async (condition) => {
  while (!condition()) await sleep(10);
};

test('a node killed while pushes are accepted on the other: the client logs in there and has every push once', { timeout }, async (t) => {
  const shared = await cluster(t);
  if (shared.skip) return t.skip(shared.skip);
  const nodes = [await startServer(t, shared.workspace('a')), await startServer(t, shared.workspace('b'))];
  // Through proxies, so that an Ack can be lost on its way to the node that dies.
  const paths = await Promise.all(nodes.map((node) => proxy(t, node.port)));
  const c = client(t, nodes[0], { url: paths.map((path) => path.ws) });
  const log = pushLog(c);
  const gates = new Map();
  c.on('push', (push) => gates.get(push.MsgBody[0].MsgContent.Text)?.promise);

  // The first node is chosen at random: A is the one the client logged in to.
  const first = await connected(c);
  const a = paths.findIndex((path) => path.ws == first.url);
  assert.ok(a >= 0, `connected to ${first.url}`);
  assert.equal(c.url, first.url);
  const [nodeA, pathA, nodeB, pathB] = [nodes[a], paths[a], nodes[1 - a], paths[1 - a]];

  // Every push node B answers with OK, from before the failover until after it.
  const accepted = [];
  let pushing = true;
  const pusher = (async () => {
    for (let i = 0; pushing; i++) {
      accepted.push(await nodeB.admin.push(text(`push ${i}`)));
      await sleep(10);
    }
  })();
  // Stopped with the test, whatever its end; a failure of its own still fails the `await` below.
  t.after(() => (pushing = false));
  pusher.catch(() => {});
  // Accepted on B, delivered through A.
  await until(() => log.pushes.length >= 3);

  // One push handled and acknowledged, but the Ack is lost with node A; one still being handled
  // when A dies. B hands both over again at the login: neither may reach the app twice.
  gates.set('lost ack', deferred());
  gates.set('unfinished', deferred());
  const lostAck = await nodeB.admin.push(text('lost ack'));
  const unfinished = await nodeB.admin.push(text('unfinished'));
  accepted.push(lostAck, unfinished);
  await log.waitFor(lostAck);
  await log.waitFor(unfinished);
  pathA.freeze();
  gates.get('lost ack').resolve();
  await until(() => c.sent.some((f) => f.Type == 'Ack' && f.TaskIds.includes(lostAck)));
  // Accepted while the path to A is frozen: only B's login can hand these over.
  const acceptedAtFreeze = accepted.length;
  await until(() => accepted.length >= acceptedAtFreeze + 2);

  const lost = next(c, 'disconnected');
  const back = next(c, 'connected');
  await nodeA.stop('SIGKILL');
  // The connection to the dead node breaks (the proxy had it frozen, so it says so itself).
  pathA.cut();
  assert.equal((await lost).willReconnect, true);
  const second = await back;
  assert.equal(second.url, pathB.ws);
  assert.equal(c.url, pathB.ws);
  const loginOnB = c.sent.findLastIndex((f) => f.Type == 'Login');

  const acceptedBeforeLogin = accepted.length;
  await until(() => accepted.length >= acceptedBeforeLogin + 5);
  pushing = false;
  await pusher;
  gates.get('unfinished').resolve();
  for (const taskId of accepted) await log.waitFor(taskId);
  // A Ping round trip on B: every Ack due has been sent.
  await c.registerDevice('fcm', 'sync');

  const ids = log.ids();
  assert.equal(new Set(ids).size, ids.length, 'no push handed over twice');
  assert.deepEqual([...ids].sort(), [...accepted].sort(), 'every push answered OK, and nothing else');
  // B did hand both over again at the login (Offline), with what was accepted during the freeze.
  const pushesFromB = c.received.filter((r) => r.url == pathB.ws && r.frame.Type == 'Push').map((r) => r.frame);
  for (const taskId of [lostAck, unfinished]) {
    assert.ok(pushesFromB.some((p) => p.TaskId == taskId && p.Offline), `${taskId} again from B`);
  }
  for (const taskId of accepted.slice(acceptedAtFreeze, acceptedAtFreeze + 2)) {
    assert.ok(pushesFromB.some((p) => p.TaskId == taskId && p.Offline), `${taskId} from B`);
  }
  const ackedOnB = c.sent.slice(loginOnB).filter((f) => f.Type == 'Ack').flatMap((f) => f.TaskIds);
  assert.ok(ackedOnB.includes(lostAck), 'the redelivered push acknowledged again, on B');
  assert.ok(ackedOnB.includes(unfinished));
  assert.equal(c.state, 'connected');
  c.close();

  // The cluster has every Ack: the account's next login (on B) gets nothing kept.
  const again = client(t, nodeB, { identifier: c.identifier });
  const log2 = pushLog(again);
  await connected(again);
  const marker = await nodeB.admin.push(text('marker', 0));
  await log2.waitFor(marker);
  assert.deepEqual(log2.ids(), [marker]);
});
